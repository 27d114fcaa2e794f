/**
 * The training loop behind `deno task train`: builds the model, optimizer, schedule and data from
 * a {@link TrainConfig}, then repeats a {@link CompiledTrainStep} (which records the step once and
 * replays it) with readbacks every few seconds, times it
 * with a {@link ThroughputMeter}, and at each epoch's end runs {@link evaluate} and
 * {@link endEpoch} (`metrics.jsonl`, `curves.svg`, checkpoints); it writes `summary.json` at the
 * end and resumes exactly from a checkpoint. `onStepEnd` and `onEpochEnd` hooks can watch the run
 * and stop it.
 *
 * @module
 */
import { memoryStats, resetPeakMemory } from "../gpu/buffer_pool.ts";
import { adapterDescription, getDevice, kernelFamily } from "../gpu/device.ts";
import type { Module } from "../nn/module.ts";
import { crossEntropy } from "../ops/loss.ts";
import { Adam, AdamW } from "../optim/adam.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { CosineLR, MultiStepLR, OneCycleLR, type Schedule } from "../optim/schedules.ts";
import { SGD } from "../optim/sgd.ts";
import { CIFAR10_MEAN, CIFAR10_STD } from "../data/cifar10.ts";
import { DataLoader, type DataLoaderState } from "../data/loader.ts";
import { Tensor } from "../tensor.ts";
import {
  type CheckpointInfo,
  loadCheckpoint,
  readCheckpointInfo,
  saveCheckpoint,
} from "./checkpoint.ts";
import type { EpochMetrics, StepPoint } from "./curves.ts";
import { endEpoch } from "./epoch_end.ts";
import { evaluate } from "./evaluate.ts";
import { buildModel, MAX_DEPTH } from "./models.ts";
import { ProgressReporter } from "./progress.ts";
import { CompiledTrainStep } from "./compiled_step.ts";
import { ThroughputMeter } from "./throughput.ts";
import { resolveDataset } from "./_dataset.ts";
import { formatDuration } from "./_duration.ts";
import { readMetrics, writeTextAtomic } from "./_files.ts";
import { claimLogDir } from "./_run_dir.ts";

/** Everything a training run is configured by (the CLI's flags). */
export interface TrainConfig {
  /** `resnet20` (any `resnet<6n+2>`) or `labml` (the seed's bottleneck experiment). */
  model: string;
  /** Epochs to train. */
  epochs: number;
  /** Images per step. */
  batchSize: number;
  /** Base learning rate. */
  lr: number;
  /** SGD momentum (ignored by Adam/AdamW). */
  momentum: number;
  /** Weight decay (L2 for SGD and Adam, decoupled for AdamW). */
  weightDecay: number;
  /** `sgd`, `adam` or `adamw`. */
  optimizer: "sgd" | "adam" | "adamw";
  /**
   * `multistep` (÷10 at 50% and 75% of the run: the paper's 32k/48k of 64k), `cosine`,
   * `onecycle`, or `constant` (the seed's Adam run).
   */
  schedule: "multistep" | "cosine" | "onecycle" | "constant";
  /** Linear warm-up epochs for the cosine schedule. */
  warmupEpochs: number;
  /** Training augmentation; `cutout` is the side of the cutout square in pixels (0 or absent: none). */
  augment: { crop: boolean; flip: boolean; cutout?: number };
  /** `auto`, `cifar10` or `synthetic`. */
  dataset: "auto" | "cifar10" | "synthetic";
  /** Folder holding (or receiving) `cifar-10-batches-bin/`. */
  dataDir: string;
  /** Seed for the model's initialisation and the data order and augmentation. */
  seed: number;
  /** Folder for metrics, curves and checkpoints. */
  logDir: string;
  /** Stop after this many steps in all (smoke runs). */
  maxSteps?: number;
  /** Images of the synthetic training set (default 5000) and test set (default 1000). */
  syntheticSizes?: { train: number; test: number };
  /** Label smoothing of the training loss, in [0, 1] (PyTorch's `label_smoothing`); default 0. */
  labelSmoothing?: number;
  /** Clip the gradients' total 2-norm to this before each update (`clipGradNorm` of optim). */
  clipGradNorm?: number;
  /**
   * Early stopping: end the run once the test accuracy has not improved on its best for this many
   * epochs in a row.
   */
  patience?: number;
}

/** What a run reports when it ends. */
export interface TrainSummary {
  /** Model name. */
  model: string;
  /** Dataset used: `cifar10` or `synthetic`. */
  dataset: string;
  /** The run's configuration. */
  flags: TrainConfig;
  /** Epochs completed. */
  epochs: number;
  /** Steps taken. */
  steps: number;
  /** Best test accuracy of any epoch, in [0, 1]. */
  best_test_accuracy: number;
  /** Test accuracy after the last epoch, in [0, 1]. */
  final_test_accuracy: number;
  /** Wall-clock seconds of this process's part of the run. */
  total_seconds: number;
  /** The WebGPU adapter. */
  adapter: string;
  /**
   * Whether the run stopped before its end, on the signal or a hook's `"stop"`
   * (`last.safetensors` then continues it).
   */
  interrupted: boolean;
  /**
   * Whether early stopping ({@link TrainConfig.patience}) ended the run before its last epoch:
   * the test accuracy had not improved for `patience` epochs.
   */
  stopped_early: boolean;
}

/** What {@link TrainOptions.onStepEnd} is told after each step. */
export interface StepEndContext {
  /** Epoch in progress, from 1. */
  epoch: number;
  /** Epochs of the run. */
  epochs: number;
  /** Batches of the epoch done, this one included, from 1. */
  batch: number;
  /** Batches in an epoch. */
  batches: number;
  /** Steps taken in all, this one included. */
  step: number;
  /** Steps the run takes in all. */
  totalSteps: number;
  /**
   * The step's mean loss, a scalar still on the GPU: `await loss.item()` waits for the GPU, so
   * read it only now and then. Released when the hook returns (or its promise settles).
   */
  loss: Tensor;
  /** The model being trained. */
  model: Module;
  /** Its optimizer. */
  optimizer: Optimizer;
}

/** What {@link TrainOptions.onEpochEnd} is told after each epoch's files are written. */
export interface EpochEndContext {
  /** The epoch's metrics, as appended to `metrics.jsonl`. */
  metrics: EpochMetrics;
  /** Every epoch's metrics so far, this one last. */
  history: readonly EpochMetrics[];
  /** Whether this epoch's test accuracy is the best so far (`best.safetensors` holds it). */
  isBest: boolean;
  /** The model being trained. */
  model: Module;
  /** Its optimizer. */
  optimizer: Optimizer;
}

/**
 * What a hook of {@link TrainOptions} returns: `"stop"` (or a promise of it) ends the run;
 * anything else lets it go on.
 */
export type HookResult = void | "stop" | Promise<void | "stop">;

/** How {@link train} reports, resumes and can be stopped. */
export interface TrainOptions {
  /** Where messages go (default: standard error, with a live bar on a terminal). */
  progress?: ProgressReporter;
  /**
   * Aborting ends the run after the current step and saves `last.safetensors` (Ctrl-C in the
   * CLI); the summary says `interrupted`.
   */
  signal?: AbortSignal;
  /**
   * A checkpoint (`last.safetensors`) to continue from: model, optimizer, schedule, data order
   * and metrics are restored, and the run goes on exactly where it stopped. The checkpoint is the
   * source of truth: `metrics.jsonl` is rewritten to the epochs it records.
   */
  resumeFrom?: string;
  /**
   * Replace the run files (`metrics.jsonl`, checkpoints, summary, curves) already in
   * `config.logDir`. Without it (or `resumeFrom` a checkpoint of that folder), a folder that
   * holds another run is refused.
   */
  overwrite?: boolean;
  /**
   * Called after every step, before the signal is checked. Returning `"stop"` ends the run there,
   * as aborting `signal` does: `last.safetensors` is saved mid-epoch, the epoch is not evaluated,
   * and the summary says `interrupted`; `resumeFrom` continues it exactly.
   */
  onStepEnd?: (context: StepEndContext) => HookResult;
  /**
   * Called after each epoch's metrics and checkpoints are written. Returning `"stop"` ends the run
   * there; the summary says `interrupted` unless that was the run's last epoch anyway, and
   * `resumeFrom` continues with the next epoch.
   */
  onEpochEnd?: (context: EpochEndContext) => HookResult;
}

function makeOptimizer(config: TrainConfig, params: Tensor[]): Optimizer {
  switch (config.optimizer) {
    case "sgd":
      return new SGD(params, {
        lr: config.lr,
        momentum: config.momentum,
        weightDecay: config.weightDecay,
      });
    case "adam":
      return new Adam(params, { lr: config.lr, weightDecay: config.weightDecay });
    case "adamw":
      return new AdamW(params, { lr: config.lr, weightDecay: config.weightDecay });
  }
}

function makeSchedule(config: TrainConfig, optimizer: Optimizer, totalSteps: number): Schedule {
  switch (config.schedule) {
    case "multistep":
      // The paper: ÷10 at 32k and 48k of 64k iterations, rescaled to the run's length.
      return new MultiStepLR(optimizer, {
        milestones: [Math.round(totalSteps * 0.5), Math.round(totalSteps * 0.75)],
        gamma: 0.1,
      });
    case "cosine": {
      const stepsPerEpoch = totalSteps / Math.max(1, config.epochs);
      const warmupSteps = Math.min(totalSteps - 1, Math.round(config.warmupEpochs * stepsPerEpoch));
      return new CosineLR(optimizer, { totalSteps, warmupSteps });
    }
    case "onecycle":
      return new OneCycleLR(optimizer, { maxLr: config.lr, totalSteps });
    case "constant":
      return new MultiStepLR(optimizer, { milestones: [] });
  }
}

/** Upper bounds on the sizes a configuration may ask for, checked before anything is built. */
export const CONFIG_LIMITS: Readonly<{
  /** Epochs of a run. */
  epochs: number;
  /** Images per step. */
  batchSize: number;
  /** Steps of a run (`maxSteps`). */
  maxSteps: number;
  /** Images of each synthetic set. */
  syntheticImages: number;
}> = Object.freeze({
  epochs: 100_000,
  batchSize: 65_536,
  maxSteps: 1_000_000_000,
  syntheticImages: 1_000_000,
});

/**
 * Checks a {@link TrainConfig} from any source (flags, a checkpoint's metadata, a caller) before
 * anything is allocated: every field's type, range and bound (a model's depth at most
 * {@link MAX_DEPTH}, the sizes in {@link CONFIG_LIMITS}). Fields it does not know are kept.
 *
 * @param config the configuration to check.
 * @param source how messages name it, e.g. `checkpoint "runs/x/last.safetensors"`.
 * @returns `config`, typed.
 * @throws {Error} naming the source, the field, what was expected and what was given.
 * @example
 * ```ts
 * import { validateConfig } from "@resnet/webgpu/train";
 * try {
 *   validateConfig({ model: "resnet99999999999998" }, "my config");
 * } catch (error) {
 *   console.log((error as Error).message.split(":")[0]); // my config
 * }
 * ```
 */
export function validateConfig(config: unknown, source = "the training config"): TrainConfig {
  const fail = (field: string, expected: string, value: unknown): never => {
    let given: string;
    try {
      given = JSON.stringify(value) ?? String(value);
    } catch {
      given = String(value);
    }
    if (given.length > 60) given = `${given.slice(0, 60)}…`;
    throw new Error(`${source}: "${field}" must be ${expected}, got ${given}`);
  };
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    fail("(config)", "an object of training settings", config);
  }
  const c = config as Record<string, unknown>;
  const int = (field: string, min: number, max: number, optional = false) => {
    const v = c[field];
    if (optional && v === undefined) return;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
      fail(field, `an integer from ${min} to ${max}`, v);
    }
  };
  const num = (field: string, min: number, max: number, below = false) => {
    const v = c[field];
    if (
      typeof v !== "number" || !Number.isFinite(v) || v < min || (below ? v >= max : v > max)
    ) {
      fail(field, `a number from ${min} to ${below ? "below " : ""}${max}`, v);
    }
  };
  const oneOf = (field: string, choices: string[]) => {
    if (typeof c[field] !== "string" || !choices.includes(c[field] as string)) {
      fail(field, `one of ${choices.join(", ")}`, c[field]);
    }
  };
  const text = (field: string) => {
    if (typeof c[field] !== "string" || c[field] === "" || (c[field] as string).length > 4096) {
      fail(field, "a path (a non-empty string)", c[field]);
    }
  };
  const model = c.model;
  const depth = typeof model === "string" ? /^resnet(\d{1,6})$/.exec(model)?.[1] : undefined;
  if (
    model !== "labml" &&
    (depth === undefined || Number(depth) < 8 || Number(depth) > MAX_DEPTH ||
      (Number(depth) - 2) % 6 !== 0)
  ) {
    fail("model", `resnet<6n+2> from resnet8 to resnet${MAX_DEPTH}, or labml`, model);
  }
  int("epochs", 1, CONFIG_LIMITS.epochs);
  int("batchSize", 1, CONFIG_LIMITS.batchSize);
  num("lr", 0, Number.MAX_VALUE);
  num("momentum", 0, 1, true);
  num("weightDecay", 0, Number.MAX_VALUE);
  oneOf("optimizer", ["sgd", "adam", "adamw"]);
  oneOf("schedule", ["multistep", "cosine", "onecycle", "constant"]);
  num("warmupEpochs", 0, c.epochs as number);
  const augment = c.augment as Record<string, unknown> | null;
  if (
    augment === null || typeof augment !== "object" || typeof augment.crop !== "boolean" ||
    typeof augment.flip !== "boolean"
  ) {
    fail("augment", "{ crop: boolean, flip: boolean }", augment);
  }
  oneOf("dataset", ["auto", "cifar10", "synthetic"]);
  text("dataDir");
  int("seed", 0, Number.MAX_SAFE_INTEGER);
  text("logDir");
  int("maxSteps", 1, CONFIG_LIMITS.maxSteps, true);
  if (c.syntheticSizes !== undefined) {
    const sizes = c.syntheticSizes as Record<string, unknown> | null;
    const ok = (v: unknown) =>
      typeof v === "number" && Number.isSafeInteger(v) && v >= 1 &&
      v <= CONFIG_LIMITS.syntheticImages;
    if (sizes === null || typeof sizes !== "object" || !ok(sizes.train) || !ok(sizes.test)) {
      fail(
        "syntheticSizes",
        `{ train, test } of integers from 1 to ${CONFIG_LIMITS.syntheticImages}`,
        sizes,
      );
    }
  }
  if (augment!.cutout !== undefined) {
    const cutout = augment!.cutout;
    if (typeof cutout !== "number" || !Number.isSafeInteger(cutout) || cutout < 0 || cutout > 32) {
      fail("augment", "{ crop, flip, cutout } with cutout an integer from 0 to 32", augment);
    }
  }
  int("patience", 1, CONFIG_LIMITS.epochs, true);
  if (c.labelSmoothing !== undefined) num("labelSmoothing", 0, 1);
  if (c.clipGradNorm !== undefined) num("clipGradNorm", 0, Number.MAX_VALUE);
  return config as TrainConfig;
}

/**
 * The configuration that resuming from a checkpoint of {@link train} continues: the flags saved
 * in it (`extra.flags`), read from the file's header only (no tensor is read) and checked by
 * {@link validateConfig}. Pass it to `train()` with `resumeFrom` set to the same path.
 *
 * @throws {Error} when the checkpoint holds no flags (a plain state dict), or they are invalid.
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { configFromCheckpoint, saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const flags = {
 *   model: "resnet8", epochs: 3, batchSize: 16, lr: 0.05, momentum: 0.9, weightDecay: 1e-4,
 *   optimizer: "sgd", schedule: "multistep", warmupEpochs: 0, augment: { crop: true, flip: true },
 *   dataset: "synthetic", dataDir: "data", seed: 0, logDir: "runs/a",
 * };
 * await saveCheckpoint(path, new nn.Linear(2, 2), null, { epoch: 1, step: 5, extra: { flags } });
 * console.log((await configFromCheckpoint(path)).epochs); // 3
 * await Deno.remove(path);
 * ```
 */
export async function configFromCheckpoint(path: string): Promise<TrainConfig> {
  const info = await readCheckpointInfo(path);
  const flags = info.extra?.flags;
  if (flags === undefined) {
    throw new Error(
      `Checkpoint "${path}" has no training state (no "extra.flags" metadata): it is a plain ` +
        "state dict; use it with --eval-only --checkpoint, or start a new run.",
    );
  }
  return validateConfig(flags, `Checkpoint "${path}" metadata extra.flags`);
}

/**
 * Trains per `config` and writes the run's files to `config.logDir`. With `resumeFrom`, restores
 * model, optimizer, schedule, data order and metrics from that checkpoint and continues exactly
 * where it stopped. The parts are public for loops of one's own: {@link trainStep},
 * {@link evaluate}, {@link ThroughputMeter}, {@link endEpoch}.
 *
 * @example
 * ```ts
 * import { initGPU } from "@resnet/webgpu";
 * import { ProgressReporter, train } from "@resnet/webgpu/train";
 * await initGPU();
 * const logDir = await Deno.makeTempDir();
 * const summary = await train({
 *   model: "resnet8", epochs: 2, batchSize: 16, lr: 0.05, momentum: 0.9, weightDecay: 1e-4,
 *   optimizer: "sgd", schedule: "multistep", warmupEpochs: 0, augment: { crop: true, flip: true },
 *   dataset: "synthetic", syntheticSizes: { train: 32, test: 16 }, dataDir: logDir, seed: 0, logDir,
 * }, {
 *   progress: new ProgressReporter({ write: () => {} }),
 *   onEpochEnd: ({ metrics }) => metrics.train_loss < 10 ? "stop" : undefined,
 * });
 * console.log(summary.epochs, summary.steps, summary.interrupted); // 1 2 true
 * await Deno.remove(logDir, { recursive: true });
 * ```
 */
export async function train(
  config: TrainConfig,
  options: TrainOptions = {},
): Promise<TrainSummary> {
  validateConfig(config);
  getDevice();
  // The epoch lines report the peak GPU memory of tensors from here on.
  resetPeakMemory();
  const progress = options.progress ?? new ProgressReporter();
  const runDir = await claimLogDir(config.logDir, {
    resumeFrom: options.resumeFrom,
    overwrite: options.overwrite,
    log: (line) => progress.log(line),
  });
  try {
    return await trainInFolder(config, options, progress);
  } finally {
    runDir.release();
  }
}

/** The running sums of an epoch interrupted before its end, saved in the checkpoint. */
interface PartialEpoch {
  /** Sum of the steps' losses, each times its batch size. */
  loss_sum: number;
  /** Images classified correctly. */
  correct: number;
  /** Images trained on. */
  seen: number;
  /** Seconds of training so far. */
  seconds: number;
}

/** The body of {@link train}, once the log folder is claimed. */
async function trainInFolder(
  config: TrainConfig,
  options: TrainOptions,
  progress: ProgressReporter,
): Promise<TrainSummary> {
  const started = performance.now();
  const { logDir } = config;
  const lastPath = `${logDir}/last.safetensors`;

  const run = await setUp(config, progress, options.resumeFrom);
  const { data, model, optimizer, schedule, trainLoader, testLoader, totalSteps, history } = run;
  let step = run.step;
  let partial = run.partial;
  // What the last checkpoint on disk holds, for the message when the run cannot save another.
  let lastSaved = options.resumeFrom ? where(trainLoader, step, config.epochs) : null;
  const device = adapterDescription();
  progress.log(
    `adapter: ${device}  kernels: ${kernelFamily()}\nmodel: ${config.model} (${
      countParameters(model).toLocaleString("en")
    } ` +
      `parameters)  data: ${data.name} (${data.train.count} train, ${data.test.count} test)\n` +
      `optimizer: ${config.optimizer} lr ${config.lr}  schedule: ${config.schedule}  batch ` +
      `${config.batchSize}  epochs ${config.epochs}  steps ${totalSteps}`,
  );

  const lossSum = Tensor.zeros([]);
  const correct = Tensor.zeros([]);
  const diverged = (loss: number, epoch: number) =>
    new Error(
      `The training loss is ${loss} at step ${step} (epoch ${epoch}): the run diverged, so it ` +
        `stops without saving. ${
          lastSaved === null
            ? "No checkpoint was saved before."
            : `${lastPath} still holds the last good checkpoint (${lastSaved}).`
        } Lower --lr (it is ${config.lr}) or add warm-up (--schedule cosine --warmup-epochs 1).`,
    );
  /** The checkpoint's metadata; mid-epoch, with the epoch's running sums (checked finite). */
  const checkpointInfo = async (
    recorded: readonly EpochMetrics[],
    seen: number,
    seconds: number,
  ): Promise<CheckpointInfo> => {
    const extra: Record<string, unknown> = {
      flags: config,
      schedule: schedule.stateDict(),
      loader: trainLoader.stateDict(),
      dataset: data.name,
      // How images become inputs (the loaders' default normalization), for predict().
      input: {
        size: 32,
        mean: [...CIFAR10_MEAN],
        std: [...CIFAR10_STD],
        classes: data.test.classes,
      },
      history: recorded,
    };
    if (trainLoader.position > 0) {
      const [l, c] = await Promise.all([lossSum.item(), correct.item()]);
      if (!Number.isFinite(l)) throw diverged(l, trainLoader.epoch + 1);
      extra.partial = { loss_sum: l, correct: c, seen, seconds } satisfies PartialEpoch;
    }
    return { epoch: trainLoader.epoch, step, optimizer: optimizer.stateDict().hyper, extra };
  };

  const meter = new ThroughputMeter({ totalSteps, completedSteps: step });
  // A resumed run was estimated when it started.
  let estimated = step > 0;
  let interrupted = false;
  let stoppedEarly = false;
  // Per-step training figures at each readback (this process's part of the run), for the curves.
  const stepPoints: StepPoint[] = [];
  // Seconds of the last evaluation, for the run's ETA; unknown before the first.
  let evalSeconds = NaN;
  const runEpochs = Math.ceil(totalSteps / trainLoader.length);
  // Each step after the first three replays the commands the third recorded (see
  // CompiledTrainStep): the host's cost per step is then little more than WebGPU's own.
  const compiledStep = new CompiledTrainStep(model, optimizer, {
    loss: config.labelSmoothing
      ? (output: Tensor, labels: Tensor) =>
        crossEntropy(output, labels, { labelSmoothing: config.labelSmoothing })
      : undefined,
    clipGradNorm: config.clipGradNorm,
    // The epoch's running sums are added within the recorded step: no op of ours per step.
    sums: { loss: lossSum, correct },
  });
  // A resumed epoch in progress is finished and evaluated first, even one whose every batch was
  // trained before the interruption.
  let pending = trainLoader.position > 0;
  model.train();
  try {
    while (!interrupted && (pending || (trainLoader.epoch < config.epochs && step < totalSteps))) {
      pending = false;
      const epoch = trainLoader.epoch + 1;
      const resumed: PartialEpoch | null = partial;
      partial = null;
      const epochStart = performance.now() - (resumed?.seconds ?? 0) * 1000;
      meter.restart(performance.now());
      lossSum.fill(resumed?.loss_sum ?? 0);
      correct.fill(resumed?.correct ?? 0);
      let seen = resumed?.seen ?? 0;
      let lastRead = performance.now();
      let unread = { steps: 0, images: 0 };
      let batchIndex = trainLoader.position;
      // Batches of this epoch the run takes: fewer than the loader's when --max-steps ends it.
      const batches = Math.min(trainLoader.length, batchIndex + totalSteps - step);
      let previousRead = { loss: resumed?.loss_sum ?? 0, correct: resumed?.correct ?? 0, seen };
      // An epoch whose batches are all done still runs the loader to its end, which counts it.
      const epochBatches = step < totalSteps || trainLoader.position === trainLoader.length
        ? trainLoader.batches()
        : [];
      for (const batch of epochBatches) {
        const size = batch.labels.length;
        const result = compiledStep.run(batch);
        batch.images.dispose();
        schedule.step();
        step++;
        batchIndex++;
        seen += size;
        unread = { steps: unread.steps + 1, images: unread.images + size };
        const last = batchIndex === trainLoader.length || step >= totalSteps;
        // Every wait costs ~11 ms on a software adapter: read back every few seconds only, but
        // at each of the first steps until the meter has timed one, for the estimate.
        if (
          last || performance.now() - lastRead > 2000 || !estimated || options.signal?.aborted
        ) {
          const [l, c] = await Promise.all([lossSum.item(), correct.item()]);
          if (!Number.isFinite(l)) {
            result.loss.dispose();
            result.correct.dispose();
            throw diverged(l, epoch);
          }
          lastRead = performance.now();
          stepPoints.push({
            step,
            epoch: epoch - 1 + batchIndex / trainLoader.length,
            train_loss: (l - previousRead.loss) / (seen - previousRead.seen),
            train_acc: (c - previousRead.correct) / (seen - previousRead.seen),
            lr: optimizer.lr,
          });
          previousRead = { loss: l, correct: c, seen };
          meter.update(unread.steps, unread.images, lastRead);
          unread = { steps: 0, images: 0 };
          if (!estimated && meter.measured) {
            estimated = true;
            logEstimate(progress, meter, device, data.name === "synthetic" || !!config.maxSteps);
          }
          const evaluationsLeft = runEpochs - epoch + 1;
          progress.update({
            epoch,
            epochs: runEpochs,
            batch: batchIndex,
            batches,
            loss: l / seen,
            accuracy: c / seen,
            imagesPerSecond: meter.imagesPerSecond,
            etaSeconds: meter.secondsFor(batches - batchIndex),
            step,
            totalSteps,
            runEtaSeconds: meter.etaSeconds +
              (Number.isNaN(evalSeconds) ? 0 : evaluationsLeft * evalSeconds),
            lr: optimizer.lr,
            peakMemoryBytes: memoryStats().peakInUseBytes,
          });
        }
        let stop = false;
        try {
          stop = options.onStepEnd !== undefined && await options.onStepEnd({
                epoch,
                epochs: config.epochs,
                batch: batchIndex,
                batches: trainLoader.length,
                step,
                totalSteps,
                loss: result.loss,
                model,
                optimizer,
              }) === "stop";
        } finally {
          result.loss.dispose();
          result.correct.dispose();
        }
        if (stop || options.signal?.aborted) {
          interrupted = true;
          break;
        }
        // At an epoch's last batch the loop ends by itself, which completes the loader's epoch.
        if (step >= totalSteps && batchIndex < trainLoader.length) break;
      }
      if (interrupted) {
        const seconds = (performance.now() - epochStart) / 1000;
        await saveCheckpoint(
          lastPath,
          model,
          optimizer,
          await checkpointInfo(history, seen, seconds),
        );
        lastSaved = where(trainLoader, step, config.epochs);
        progress.log(`interrupted: saved ${lastPath} at ${lastSaved}`);
        break;
      }
      const [trainLoss, trainCorrect] = await Promise.all([lossSum.item(), correct.item()]);
      if (!Number.isFinite(trainLoss)) throw diverged(trainLoss, epoch);
      const trainSeconds = (performance.now() - epochStart) / 1000;
      const evalStart = performance.now();
      const test = await evaluate(model, testLoader);
      evalSeconds = (performance.now() - evalStart) / 1000;
      // With no image trained on (only a checkpoint of an older version, without its epoch's
      // sums, resumes so), the train metrics are unknown: NaN, written as null.
      const metrics: EpochMetrics = {
        epoch,
        step,
        lr: optimizer.lr,
        train_loss: seen > 0 ? trainLoss / seen : NaN,
        train_acc: seen > 0 ? trainCorrect / seen : NaN,
        test_loss: test.loss,
        test_acc: test.accuracy,
        seconds: (performance.now() - epochStart) / 1000,
        images_per_sec: seen > 0 ? seen / trainSeconds : NaN,
      };
      const { isBest } = await endEpoch(metrics, {
        logDir,
        model,
        optimizer,
        checkpoint: await checkpointInfo([...history, metrics], seen, trainSeconds),
        history,
        // This run's last epoch, as the progress line counts them (fewer than the recipe's when
        // --max-steps ends the run early).
        epochs: runEpochs,
        title: config.model,
        progress,
        steps: stepPoints,
      });
      lastSaved = where(trainLoader, step, config.epochs);
      history.push(metrics);
      const hook = options.onEpochEnd?.({ metrics, history, isBest, model, optimizer });
      if (await hook === "stop") {
        interrupted = trainLoader.epoch < config.epochs && step < totalSteps;
        break;
      }
      const stale = epochsWithoutImprovement(history);
      if (config.patience !== undefined && stale >= config.patience) {
        stoppedEarly = trainLoader.epoch < config.epochs && step < totalSteps;
        if (stoppedEarly) {
          progress.log(
            `early stopping: test accuracy has not improved for ${stale} epochs (patience ` +
              `${config.patience}); best ${(bestOf(history) * 100).toFixed(2)}% at epoch ` +
              `${history.length - stale}`,
          );
        }
        break;
      }
    }
  } finally {
    compiledStep.dispose();
    lossSum.dispose();
    correct.dispose();
    trainLoader.dispose();
    testLoader.dispose();
  }
  const best = bestOf(history);
  const summary: TrainSummary = {
    model: config.model,
    dataset: data.name,
    flags: config,
    epochs: history.length,
    steps: step,
    best_test_accuracy: Number.isFinite(best) ? best : NaN,
    final_test_accuracy: history.at(-1)?.test_acc ?? NaN,
    total_seconds: (performance.now() - started) / 1000,
    adapter: device,
    interrupted,
    stopped_early: stoppedEarly,
  };
  await writeTextAtomic(`${logDir}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
  model.dispose();
  return summary;
}

/**
 * Where a run stands, worded the same in the interrupt message, the resume message and errors:
 * `step 6, after epoch 1/2` or `step 7, epoch 2/2 in progress (batch 3/4)`.
 */
function where(loader: DataLoader, step: number, epochs: number): string {
  return loader.position > 0
    ? `step ${step}, epoch ${loader.epoch + 1}/${epochs} in progress (batch ` +
      `${loader.position}/${loader.length})`
    : `step ${step}, after epoch ${loader.epoch}/${epochs}`;
}

/** A run's model, optimizer, schedule, data and loaders, restored from `resumeFrom` if given. */
async function setUp(config: TrainConfig, progress: ProgressReporter, resumeFrom?: string) {
  const data = await resolveDataset(config, progress);
  const model = buildModel(config.model, config.seed, data.train.classes.length);
  const optimizer = makeOptimizer(config, model.parameters());
  const trainLoader = new DataLoader(data.train, {
    batchSize: config.batchSize,
    shuffle: true,
    seed: config.seed,
    augment: config.augment,
    dropLast: true,
  });
  if (trainLoader.length === 0) {
    throw new RangeError(
      `The training set has ${data.train.count} images, fewer than one batch of ` +
        `${config.batchSize}; use a smaller --batch-size`,
    );
  }
  if (data.test.count === 0) {
    throw new RangeError(
      `The test set (${data.test.name}) has no images, so no epoch could be evaluated; give it ` +
        "at least one image",
    );
  }
  const testLoader = new DataLoader(data.test, { batchSize: config.batchSize, shuffle: false });
  const totalSteps = Math.min(
    config.epochs * trainLoader.length,
    config.maxSteps ?? Infinity,
  );
  const schedule = makeSchedule(config, optimizer, Math.max(1, config.epochs * trainLoader.length));

  let step = 0;
  let history: EpochMetrics[] = [];
  let partial: PartialEpoch | null = null;
  if (resumeFrom) {
    const source = `Checkpoint "${resumeFrom}"`;
    // The run state comes from the header alone; tensors are read once it has been checked.
    const info = await readCheckpointInfo(resumeFrom);
    const extra = info.extra ?? {};
    const saved = extra.flags as Record<string, unknown> | undefined;
    if (saved === undefined) {
      throw new Error(
        `${source} has no training state (no "extra.flags" metadata): it is a plain state ` +
          "dict; use it with --eval-only --checkpoint, or start a new run.",
      );
    }
    validateConfig(saved, `${source} metadata extra.flags`);
    if (saved.model !== config.model) {
      throw new Error(
        `${source} holds a ${String(saved.model).slice(0, 40)} model, but this run trains ` +
          `${config.model}; resume with --model ${String(saved.model).slice(0, 40)} (or leave ` +
          "--model out).",
      );
    }
    if (typeof extra.dataset === "string" && extra.dataset !== data.name) {
      throw new Error(
        `${source} was trained on ${extra.dataset.slice(0, 40)}, but this run loaded ` +
          `${data.name}; resume with --dataset ${extra.dataset.slice(0, 40)}.`,
      );
    }
    if (info.optimizer === undefined) {
      throw new Error(`${source} holds no optimizer state (no "optimizer" metadata)`);
    }
    const scheduleState = extra.schedule as { iteration?: unknown } | undefined;
    if (
      scheduleState === null || typeof scheduleState !== "object" ||
      !Number.isSafeInteger(scheduleState.iteration) || (scheduleState.iteration as number) < 0
    ) {
      throw new Error(
        `${source}: metadata "extra.schedule" must be { iteration: a count }, got ` +
          JSON.stringify(scheduleState)?.slice(0, 60),
      );
    }
    const checkpoint = await loadCheckpoint(resumeFrom, { model, optimizer });
    try {
      model.loadStateDict(checkpoint.model);
      optimizer.loadStateDict({ state: checkpoint.optimizerState, hyper: checkpoint.optimizer! });
      schedule.loadStateDict(scheduleState as { iteration: number });
      trainLoader.loadStateDict(extra.loader as DataLoaderState);
    } catch (cause) {
      throw new Error(`${source}: ${(cause as Error).message.slice(0, 500)}`, { cause });
    } finally {
      checkpoint.dispose();
    }
    step = info.step;
    if (trainLoader.position > 0) partial = checkPartial(extra.partial, source);
    history = await reconcileMetrics(
      config.logDir,
      extra.history,
      trainLoader.epoch,
      source,
      progress,
    );
    progress.log(`resumed from ${resumeFrom} at ${where(trainLoader, step, config.epochs)}`);
  }

  return {
    data,
    model,
    optimizer,
    schedule,
    trainLoader,
    testLoader,
    totalSteps,
    step,
    history,
    partial,
  };
}

function bestOf(history: readonly EpochMetrics[]): number {
  return history.reduce((b, m) => Math.max(b, m.test_acc), -Infinity);
}

/**
 * Epochs since the test accuracy last improved on every earlier epoch (0 when the last epoch is
 * the best; equal accuracy is no improvement, as in Keras' and Lightning's early stopping).
 */
function epochsWithoutImprovement(history: readonly EpochMetrics[]): number {
  let best = -Infinity;
  let bestIndex = -1;
  history.forEach((m, i) => {
    if (m.test_acc > best) {
      best = m.test_acc;
      bestIndex = i;
    }
  });
  return history.length - 1 - bestIndex;
}

/** The running sums of an interrupted epoch, checked; null for a checkpoint without them. */
function checkPartial(value: unknown, source: string): PartialEpoch | null {
  if (value === undefined) return null;
  const p = value as Record<string, unknown>;
  const finite = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0;
  if (
    p === null || typeof p !== "object" || !finite(p.loss_sum) || !finite(p.correct) ||
    !Number.isSafeInteger(p.seen) || (p.seen as number) < 0 || !finite(p.seconds)
  ) {
    throw new Error(
      `${source}: metadata "extra.partial" must be { loss_sum, correct, seen, seconds } of ` +
        `non-negative numbers, got ${JSON.stringify(value)?.slice(0, 80)}`,
    );
  }
  return p as unknown as PartialEpoch;
}

/**
 * The epochs the checkpoint records (`extra.history`; for a checkpoint without it, the lines of
 * `metrics.jsonl` up to the checkpoint's epoch, one per epoch), written back to `metrics.jsonl`
 * when the file says anything else: lines past the checkpoint, duplicates, torn lines.
 */
async function reconcileMetrics(
  logDir: string,
  recorded: unknown,
  completed: number,
  source: string,
  progress: ProgressReporter,
): Promise<EpochMetrics[]> {
  const path = `${logDir}/metrics.jsonl`;
  let history: EpochMetrics[];
  if (recorded === undefined) {
    const byEpoch = new Map<number, EpochMetrics>();
    for (const m of await readMetrics(path)) if (m.epoch <= completed) byEpoch.set(m.epoch, m);
    history = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  } else {
    if (!Array.isArray(recorded) || recorded.length > 10 * completed + 10) {
      throw new Error(`${source}: metadata "extra.history" must be a list of epochs' metrics`);
    }
    history = [];
    for (const m of recorded as unknown[]) {
      const e = m as Record<string, unknown> | null;
      const numbers = e !== null && typeof e === "object" &&
        Object.values(e).every((v) => v === null || typeof v === "number");
      if (!numbers || e.epoch !== history.length + 1) {
        throw new Error(
          `${source}: metadata "extra.history" entry ${history.length + 1} must be the metrics ` +
            `of epoch ${history.length + 1}, got ${JSON.stringify(m)?.slice(0, 80)}`,
        );
      }
      // JSON writes NaN as null: read it back as NaN.
      const metrics = Object.fromEntries(
        Object.entries(e).map(([k, v]) => [k, v === null ? NaN : v]),
      ) as unknown as EpochMetrics;
      if (metrics.epoch <= completed) history.push(metrics);
    }
  }
  const text = history.map((m) => JSON.stringify(m) + "\n").join("");
  let before: string | null = null;
  try {
    before = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if ((before ?? "") !== text) {
    await writeTextAtomic(path, text);
    const lines = before === null ? 0 : before.split("\n").filter((l) => l.trim()).length;
    progress.log(
      `${path} held ${lines} line(s); rewritten to the ${history.length} epoch(s) the ` +
        "checkpoint records",
    );
  }
  return history;
}

function countParameters(model: Module): number {
  return model.parameters().reduce((s, p) => s + p.size, 0);
}

/**
 * Prints how long the run's steps take at the meter's first rate, and past 6 hours a warning with
 * ways to shorten the run, unless it is `alreadyShortened` (synthetic data, or --max-steps given).
 */
function logEstimate(
  progress: ProgressReporter,
  meter: ThroughputMeter,
  device: string,
  alreadyShortened: boolean,
): void {
  const total = meter.secondsPerStep * meter.totalSteps;
  progress.log(
    `estimate: ${meter.secondsPerStep.toFixed(3)} s/step x ${meter.totalSteps} steps = ` +
      `${formatDuration(total)} of training (plus evaluation)`,
  );
  if (total > 6 * 3600 && !alreadyShortened) {
    progress.log(
      `This run would take ${formatDuration(total)} on this adapter (${device}). ` +
        "Shorten it with --epochs N or --max-steps N, a smaller model (--model " +
        "resnet8), or --dataset synthetic; the full recipe needs a GPU.",
    );
  }
}
