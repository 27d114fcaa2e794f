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
  CONFIG_LIMITS,
  configFromCheckpoint,
  evaluate,
  loadCheckpoint,
  MAX_DEPTH,
  ProgressReporter,
  readCheckpointInfo,
  train,
  type TrainConfig,
  validateConfig,
} from "../src/train/mod.ts";
// The data-set choice behind --dataset (CIFAR-10 or the synthetic fallback); not part of the library.
import { resolveDataset } from "../src/train/_dataset.ts";

const HELP = `Train a ResNet on CIFAR-10 with WebGPU.

Usage: deno task train [flags]

Model and recipe (defaults: the paper's ResNet-20 recipe; labml: the seed's experiment)
  --model NAME          resnet20 (any resnet<6n+2> up to resnet${MAX_DEPTH}: resnet8, resnet56, …)
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
  --synthetic-size N,M  images of the synthetic training and test sets [5000,1000]

Run
  --log-dir DIR         metrics.jsonl, summary.json, curves.svg, last/best.safetensors
                        [runs/<date-time>]
  --resume FILE         continue a run from its checkpoint (last.safetensors)
  --overwrite           replace the run already in --log-dir (without it, such a folder is
                        refused)
  --eval-only           evaluate --checkpoint FILE on the test set and exit
  --checkpoint FILE     the weights for --eval-only
  --max-steps N         stop after N steps in all (smoke runs)
  --patience N          early stopping: stop once the test accuracy has not improved for N
                        epochs [off]
  --help                this text

Ctrl-C or SIGTERM saves a checkpoint (last.safetensors) and exits; --resume continues from it.`;

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

/** Decimal numbers only: no hex (`0x10`), no `Infinity`, no blanks. */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;

function parseNumber(
  name: string,
  value: string | undefined,
  integer: boolean,
  min: number,
  max = Number.MAX_VALUE,
) {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (
    !(integer ? INTEGER : DECIMAL).test(value) || !Number.isFinite(n) || n < min || n > max ||
    (integer && !Number.isSafeInteger(n))
  ) {
    const range = max === Number.MAX_VALUE ? `>= ${min}` : `from ${min} to ${max}`;
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
    throw new UsageError(
      `--${name} must be ${integer ? "an integer" : "a decimal number"} ${range}, got "${shown}"`,
    );
  }
  return n;
}

/**
 * `--lr -1` as `--lr=-1`: parseArgs reads a value that starts with "-" as a flag and calls it
 * ambiguous; the range check then says what is wrong with the number.
 */
function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1];
    if (
      /^--[a-z-]+$/.test(args[i]) && next !== undefined && /^-(\d|\.\d|Infinity)/.test(next)
    ) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

function parseSizes(value: string | undefined) {
  if (value === undefined) return undefined;
  const parts = value.split(",");
  const max = CONFIG_LIMITS.syntheticImages;
  if (parts.length !== 2) {
    throw new UsageError(`--synthetic-size takes TRAIN,TEST image counts, got "${value}"`);
  }
  return {
    train: parseNumber("synthetic-size", parts[0], true, 1, max)!,
    test: parseNumber("synthetic-size", parts[1], true, 1, max)!,
  };
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

/** The flags as given on the command line, by name: strings, and true for the switches. */
export interface TrainFlags {
  /** `--model`. */
  model?: string;
  /** `--epochs`. */
  epochs?: string;
  /** `--batch-size`. */
  "batch-size"?: string;
  /** `--lr`. */
  lr?: string;
  /** `--momentum`. */
  momentum?: string;
  /** `--weight-decay`. */
  "weight-decay"?: string;
  /** `--optimizer`. */
  optimizer?: string;
  /** `--schedule`. */
  schedule?: string;
  /** `--warmup-epochs`. */
  "warmup-epochs"?: string;
  /** `--augment`. */
  augment?: string;
  /** `--data-dir`. */
  "data-dir"?: string;
  /** `--dataset`. */
  dataset?: string;
  /** `--seed`. */
  seed?: string;
  /** `--log-dir`. */
  "log-dir"?: string;
  /** `--resume`. */
  resume?: string;
  /** `--overwrite`. */
  overwrite?: boolean;
  /** `--synthetic-size`. */
  "synthetic-size"?: string;
  /** `--eval-only`. */
  "eval-only"?: boolean;
  /** `--checkpoint`. */
  checkpoint?: string;
  /** `--max-steps`. */
  "max-steps"?: string;
  /** `--patience`. */
  patience?: string;
  /** `--label-smoothing`. */
  "label-smoothing"?: string;
  /** `--clip-grad-norm`. */
  "clip-grad-norm"?: string;
  /** `--help`, `-h`. */
  help?: boolean;
}

/** What {@link parseFlags} read. */
export interface ParsedFlags {
  /** The flags as given. */
  f: TrainFlags;
  /** The settings the flags give explicitly (checked). */
  explicit: Partial<TrainConfig>;
  /** The model's defaults for everything else. */
  defaults: TrainConfig;
}

/**
 * Reads and checks the flags without touching the GPU, the disk or the network: the flags as
 * given, the values set explicitly, and the defaults of the model. `null` after printing --help.
 * Throws {@link UsageError} for bad flags.
 *
 * @example
 * ```ts
 * import { parseFlags } from "@resnet/webgpu/train/cli";
 * console.log(parseFlags(["--model", "resnet8", "--epochs", "2"])?.explicit.epochs); // 2
 * ```
 */
export function parseFlags(args: string[]): ParsedFlags | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinNegativeValues(args),
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
        overwrite: { type: "boolean" },
        "synthetic-size": { type: "string" },
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
  const f: TrainFlags = parsed.values;
  if (f.help) {
    console.log(HELP);
    return null;
  }
  const model = f.model ?? "resnet20";
  const depth = /^resnet(\d{1,6})$/.exec(model)?.[1];
  if (
    model !== "labml" &&
    (depth === undefined || Number(depth) < 8 || Number(depth) > MAX_DEPTH ||
      (Number(depth) - 2) % 6 !== 0)
  ) {
    const shown = model.length > 40 ? `${model.slice(0, 40)}…` : model;
    throw new UsageError(
      `--model must be resnet<6n+2> from resnet8 to resnet${MAX_DEPTH} (resnet8, resnet20, …) or ` +
        `labml, got "${shown}"`,
    );
  }
  const labml = model === "labml";
  const explicit: Partial<TrainConfig> = {
    epochs: parseNumber("epochs", f.epochs, true, 1, CONFIG_LIMITS.epochs),
    batchSize: parseNumber("batch-size", f["batch-size"], true, 1, CONFIG_LIMITS.batchSize),
    lr: parseNumber("lr", f.lr, false, 0),
    momentum: parseNumber("momentum", f.momentum, false, 0),
    weightDecay: parseNumber("weight-decay", f["weight-decay"], false, 0),
    optimizer: oneOf("optimizer", f.optimizer, ["sgd", "adam", "adamw"]),
    schedule: oneOf("schedule", f.schedule, ["multistep", "cosine", "onecycle", "constant"]),
    warmupEpochs: parseNumber("warmup-epochs", f["warmup-epochs"], false, 0),
    augment: parseAugment(f.augment),
    dataset: oneOf("dataset", f.dataset, ["auto", "cifar10", "synthetic"]),
    dataDir: f["data-dir"],
    seed: parseNumber("seed", f.seed, true, 0, Number.MAX_SAFE_INTEGER),
    logDir: f["log-dir"],
    maxSteps: parseNumber("max-steps", f["max-steps"], true, 1, CONFIG_LIMITS.maxSteps),
    syntheticSizes: parseSizes(f["synthetic-size"]),
    patience: parseNumber("patience", f.patience, true, 1, CONFIG_LIMITS.epochs),
    labelSmoothing: parseNumber("label-smoothing", f["label-smoothing"], false, 0, 1),
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
  if (f.overwrite && (f.resume || f["eval-only"])) {
    throw new UsageError(
      "--overwrite starts a new run; it does not go with --resume or --eval-only",
    );
  }
  for (const [flag, value] of [["--data-dir", f["data-dir"]], ["--log-dir", f["log-dir"]]]) {
    if (value === "") throw new UsageError(`${flag} must be a folder path, got ""`);
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
  return { f, explicit, defaults };
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
  const parsed = parseFlags(args);
  if (parsed === null) return 0;
  const { f, explicit, defaults } = parsed;

  await initGPU();
  const progress = new ProgressReporter();

  if (f["eval-only"]) {
    const config = { ...defaults, ...explicit };
    // The header first: the model is checked against it before any tensor is read.
    const info = await readCheckpointInfo(f.checkpoint!);
    const saved = info.extra?.flags === undefined ? undefined : validateConfig(
      info.extra.flags,
      `Checkpoint "${f.checkpoint}" metadata extra.flags`,
    );
    checkModelFlag(f.model, saved?.model, f.checkpoint!);
    const net = buildModel(saved?.model ?? config.model, config.seed);
    const checkpoint = await loadCheckpoint(f.checkpoint!, { model: net });
    net.loadStateDict(checkpoint.model);
    checkpoint.dispose();
    const trainedOn = info.extra?.dataset;
    const { test, name } = await resolveDataset(
      {
        ...config,
        dataset: explicit.dataset ??
          (trainedOn === "cifar10" || trainedOn === "synthetic" ? trainedOn : undefined) ??
          saved?.dataset ?? config.dataset,
        seed: saved?.seed ?? config.seed,
        syntheticSizes: explicit.syntheticSizes ?? saved?.syntheticSizes,
      },
      progress,
      { download: false },
    );
    if (test.count === 0) throw new Error(`The ${name} test set has no images to evaluate`);
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
    checkModelFlag(f.model, saved.model, f.resume);
    // The data set the run was trained on, not what "auto" finds today; the data folder of this
    // command (its --data-dir or the default), not the one saved in the checkpoint.
    const trainedOn = (await readCheckpointInfo(f.resume)).extra?.dataset;
    config = {
      ...saved,
      ...explicit,
      logDir: explicit.logDir ?? dirname(f.resume),
      dataDir: explicit.dataDir ?? defaults.dataDir,
      dataset: explicit.dataset ??
        (trainedOn === "cifar10" || trainedOn === "synthetic" ? trainedOn : saved.dataset),
    };
    if (!f["max-steps"]) delete config.maxSteps;
  } else {
    config = { ...defaults, ...explicit };
  }

  const controller = new AbortController();
  let stopSignal: "SIGINT" | "SIGTERM" | null = null;
  const onSignal = (signal: "SIGINT" | "SIGTERM") => () => {
    if (stopSignal !== null) Deno.exit(signal === "SIGINT" ? 130 : 143);
    stopSignal = signal;
    progress.log(
      `${
        signal === "SIGINT" ? "Ctrl-C" : "SIGTERM"
      }: finishing this step and saving a checkpoint ` +
        `(${signal === "SIGINT" ? "Ctrl-C" : "SIGTERM"} again to quit now)`,
    );
    controller.abort();
  };
  const listeners = { SIGINT: onSignal("SIGINT"), SIGTERM: onSignal("SIGTERM") };
  for (const [signal, listener] of Object.entries(listeners)) {
    try {
      Deno.addSignalListener(signal as Deno.Signal, listener);
    } catch {
      // Windows has no SIGTERM to listen to.
    }
  }
  try {
    const summary = await train(config, {
      progress,
      signal: controller.signal,
      resumeFrom: f.resume,
      overwrite: f.overwrite,
    });
    const percent = (x: number) => `${(x * 100).toFixed(2)}%`;
    const scores = summary.epochs > 0
      ? `best test accuracy ${percent(summary.best_test_accuracy)}, final ` +
        percent(summary.final_test_accuracy)
      : "no epoch evaluated yet";
    progress.log(
      `${summary.interrupted ? "stopped" : "done"}: ${summary.epochs} epochs, ${summary.steps} ` +
        `steps, ${scores}` +
        `${summary.stopped_early ? " (stopped early: no improvement for --patience epochs)" : ""}` +
        `; logs in ${config.logDir}` +
        (summary.interrupted ? `; --resume ${config.logDir}/last.safetensors continues it` : ""),
    );
    if (!summary.interrupted) return 0;
    return stopSignal === "SIGTERM" ? 143 : 130;
  } finally {
    for (const [signal, listener] of Object.entries(listeners)) {
      try {
        Deno.removeSignalListener(signal as Deno.Signal, listener);
      } catch {
        // Never added.
      }
    }
  }
}

/** Refuses a --model that differs from the model a checkpoint holds. */
function checkModelFlag(flag: string | undefined, saved: string | undefined, path: string): void {
  if (flag !== undefined && saved !== undefined && flag !== saved) {
    throw new UsageError(
      `--model ${flag} does not match the checkpoint ${path}, which holds a ${saved} model; ` +
        "leave --model out (the checkpoint's model is used)",
    );
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
