/**
 * `deno task train`: trains a ResNet on CIFAR-10 (or the offline synthetic set) with the paper's
 * recipe by default. `--help` lists the flags. A thin layer over `train()` from the library.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { initGPU } from "../mod.ts";
import { defaultDataDir } from "../src/data/mod.ts";
import {
  buildModel,
  configFromCheckpoint,
  evaluate,
  loadCheckpoint,
  ProgressReporter,
  train,
  type TrainConfig,
} from "../src/train/mod.ts";
// The data-set choice behind --dataset (CIFAR-10 or the synthetic fallback); not part of the library.
import { resolveDataset } from "../src/train/_dataset.ts";

const HELP = `Train a ResNet on CIFAR-10 with WebGPU.

Usage: deno task train [flags]

Model and recipe (defaults: the paper's ResNet-20 recipe; labml: the seed's experiment)
  --model NAME          resnet20 (any resnet<6n+2>: resnet8, resnet32, resnet56, resnet110, …)
                        or labml (bottlenecks [8,16,16], blocks [6,6,6], Adam 2.5e-4, batch 256)
                        [resnet20]
  --epochs N            epochs; the schedule rescales to them [164 ≈ 64k steps; labml 500]
  --batch-size N        images per step [128; labml 256]
  --lr X                base learning rate [0.1; labml 2.5e-4]
  --momentum X          SGD momentum [0.9]
  --weight-decay X      weight decay [1e-4; labml 0]
  --optimizer NAME      sgd | adam | adamw [sgd; labml adam]
  --schedule NAME       multistep (÷10 at 50% and 75%: the paper's 32k/48k of 64k) | cosine |
                        onecycle | constant [multistep; labml constant, as the seed]
  --warmup-epochs N     linear warm-up for the cosine schedule [0]
  --augment LIST        comma list of crop, flip, cutout (a 16x16 square; cutout=N: NxN); or
                        none [crop,flip]
  --label-smoothing X   label smoothing of the training loss, in [0, 1] [0]
  --clip-grad-norm X    clip the gradients' total 2-norm to X before each update [off]
  --seed N              seed of initialisation, data order and augmentation [0]

Data
  --dataset NAME        auto (CIFAR-10 when cached or downloadable, else synthetic) | cifar10 |
                        synthetic [auto]
  --data-dir DIR        holds cifar-10-batches-bin/ [${safeDefaultDataDir()}]

Run
  --log-dir DIR         metrics.jsonl, summary.json, curves.svg, last/best.safetensors
                        [runs/<date-time>]
  --resume FILE         continue a run from its checkpoint (last.safetensors)
  --eval-only           evaluate --checkpoint FILE on the test set and exit
  --checkpoint FILE     the weights for --eval-only
  --max-steps N         stop after N steps in all (smoke runs)
  --patience N          early stopping: stop once the test accuracy has not improved for N
                        epochs [off]
  --help                this text

Ctrl-C saves a checkpoint (last.safetensors) and exits; --resume continues from it.`;

function safeDefaultDataDir(): string {
  try {
    return defaultDataDir();
  } catch {
    return "./data";
  }
}

/**
 * A bad flag or value: the CLI prints it and exits with code 2.
 *
 * @example
 * ```ts
 * import { main, UsageError } from "@resnet/webgpu/train/cli";
 * try {
 *   await main(["--epochs", "zero"]);
 * } catch (error) {
 *   console.log(error instanceof UsageError, (error as Error).message);
 *   // true '--epochs must be an integer >= 1, got "zero"'
 * }
 * ```
 */
export class UsageError extends Error {}

function parseNumber(name: string, value: string | undefined, integer: boolean, min: number) {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
    throw new UsageError(
      `--${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got "${value}"`,
    );
  }
  return n;
}

function oneOf<T extends string>(name: string, value: string | undefined, choices: T[]) {
  if (value === undefined) return undefined;
  if (!choices.includes(value as T)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${value}"`);
  }
  return value as T;
}

function parseAugment(value: string | undefined) {
  if (value === undefined) return undefined;
  if (value === "none") return { crop: false, flip: false };
  const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
  let cutout = 0;
  for (const p of parts) {
    const size = /^cutout(?:=(\d+))?$/.exec(p);
    if (size) {
      cutout = Number(size[1] ?? 16);
      if (cutout < 1 || cutout > 32) {
        throw new UsageError(`--augment cutout=N takes a side N in [1, 32], got "${p}"`);
      }
    } else if (p !== "crop" && p !== "flip") {
      throw new UsageError(
        `--augment takes a comma list of crop, flip, cutout (or cutout=N), or none; got "${p}"`,
      );
    }
  }
  const augment = { crop: parts.includes("crop"), flip: parts.includes("flip") };
  return cutout ? { ...augment, cutout } : augment;
}

function timestamp(): string {
  return new Date().toISOString().slice(0, 19).replace(/:/g, "-");
}

/**
 * Runs the CLI with `args`; returns the exit code. Throws {@link UsageError} for bad flags.
 *
 * @example
 * ```ts
 * import { main } from "@resnet/webgpu/train/cli";
 * console.log(await main(["--help"])); // the flags, then 0
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        model: { type: "string" },
        epochs: { type: "string" },
        "batch-size": { type: "string" },
        lr: { type: "string" },
        momentum: { type: "string" },
        "weight-decay": { type: "string" },
        optimizer: { type: "string" },
        schedule: { type: "string" },
        "warmup-epochs": { type: "string" },
        augment: { type: "string" },
        "data-dir": { type: "string" },
        dataset: { type: "string" },
        seed: { type: "string" },
        "log-dir": { type: "string" },
        resume: { type: "string" },
        "eval-only": { type: "boolean" },
        checkpoint: { type: "string" },
        "max-steps": { type: "string" },
        patience: { type: "string" },
        "label-smoothing": { type: "string" },
        "clip-grad-norm": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const f = parsed.values;
  if (f.help) {
    console.log(HELP);
    return 0;
  }
  const model = f.model ?? "resnet20";
  try {
    if (model !== "labml" && !/^resnet\d+$/.test(model)) throw new Error();
    const depth = model === "labml" ? 20 : Number(model.slice(6));
    if (depth < 8 || (depth - 2) % 6 !== 0) throw new Error();
  } catch {
    throw new UsageError(
      `--model must be resnet<6n+2> (resnet8, resnet20, …) or labml, got "${model}"`,
    );
  }
  const labml = model === "labml";
  const explicit: Partial<TrainConfig> = {
    epochs: parseNumber("epochs", f.epochs, true, 1),
    batchSize: parseNumber("batch-size", f["batch-size"], true, 1),
    lr: parseNumber("lr", f.lr, false, 0),
    momentum: parseNumber("momentum", f.momentum, false, 0),
    weightDecay: parseNumber("weight-decay", f["weight-decay"], false, 0),
    optimizer: oneOf("optimizer", f.optimizer, ["sgd", "adam", "adamw"]),
    schedule: oneOf("schedule", f.schedule, ["multistep", "cosine", "onecycle", "constant"]),
    warmupEpochs: parseNumber("warmup-epochs", f["warmup-epochs"], false, 0),
    augment: parseAugment(f.augment),
    dataset: oneOf("dataset", f.dataset, ["auto", "cifar10", "synthetic"]),
    dataDir: f["data-dir"],
    seed: parseNumber("seed", f.seed, true, 0),
    logDir: f["log-dir"],
    maxSteps: parseNumber("max-steps", f["max-steps"], true, 1),
    patience: parseNumber("patience", f.patience, true, 1),
    labelSmoothing: parseNumber("label-smoothing", f["label-smoothing"], false, 0),
    clipGradNorm: parseNumber("clip-grad-norm", f["clip-grad-norm"], false, 0),
  };
  for (const key of Object.keys(explicit) as (keyof TrainConfig)[]) {
    if (explicit[key] === undefined) delete explicit[key];
  }
  if (f["eval-only"] && !f.checkpoint) {
    throw new UsageError("--eval-only needs --checkpoint FILE (e.g. runs/<date>/best.safetensors)");
  }
  if (f.checkpoint && !f["eval-only"]) {
    throw new UsageError("--checkpoint is for --eval-only; use --resume FILE to continue training");
  }
  if ((explicit.labelSmoothing ?? 0) > 1) {
    throw new UsageError(`--label-smoothing must be in [0, 1], got "${f["label-smoothing"]}"`);
  }
  if (f.momentum !== undefined && (explicit.momentum ?? 0) >= 1) {
    throw new UsageError(`--momentum must be below 1, got "${f.momentum}"`);
  }

  const defaults: TrainConfig = {
    model,
    epochs: labml ? 500 : 164,
    batchSize: labml ? 256 : 128,
    lr: labml ? 2.5e-4 : 0.1,
    momentum: 0.9,
    weightDecay: labml ? 0 : 1e-4,
    optimizer: labml ? "adam" : "sgd",
    schedule: labml ? "constant" : "multistep",
    warmupEpochs: 0,
    augment: { crop: true, flip: true },
    dataset: "auto",
    dataDir: safeDefaultDataDir(),
    seed: 0,
    logDir: join("runs", timestamp()),
  };

  await initGPU();
  const progress = new ProgressReporter();

  if (f["eval-only"]) {
    const config = { ...defaults, ...explicit };
    const checkpoint = await loadCheckpoint(f.checkpoint!);
    const saved = checkpoint.extra?.flags as TrainConfig | undefined;
    const net = buildModel(saved?.model ?? config.model, config.seed);
    net.loadStateDict(checkpoint.model);
    checkpoint.dispose();
    const { test, name } = await resolveDataset(
      { ...config, dataset: explicit.dataset ?? saved?.dataset ?? config.dataset },
      progress,
    );
    const result = await evaluate(net, test, { batchSize: config.batchSize });
    console.log(
      `${f.checkpoint} on ${name} test set (${test.count} images): loss ` +
        `${result.loss.toFixed(4)}, accuracy ${(result.accuracy * 100).toFixed(2)}%`,
    );
    return 0;
  }

  let config: TrainConfig;
  if (f.resume) {
    const saved = await configFromCheckpoint(f.resume);
    config = { ...saved, ...explicit, logDir: explicit.logDir ?? dirname(f.resume) };
    if (!f["max-steps"]) delete config.maxSteps;
  } else {
    config = { ...defaults, ...explicit };
  }

  const controller = new AbortController();
  let interrupts = 0;
  const onInterrupt = () => {
    if (++interrupts > 1) Deno.exit(130);
    progress.log("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to quit now)");
    controller.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    const summary = await train(config, {
      progress,
      signal: controller.signal,
      resumeFrom: f.resume,
    });
    progress.log(
      `done: ${summary.epochs} epochs, ${summary.steps} steps, best test accuracy ` +
        `${(summary.best_test_accuracy * 100).toFixed(2)}%, final ` +
        `${(summary.final_test_accuracy * 100).toFixed(2)}%` +
        `${summary.stopped_early ? " (stopped early: no improvement for --patience epochs)" : ""}` +
        `; logs in ${config.logDir}`,
    );
    return summary.interrupted ? 130 : 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\nRun with --help for the flags and their defaults.`);
      Deno.exit(2);
    }
    console.error(`error: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
