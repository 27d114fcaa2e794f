/**
 * The training loop behind `deno task train`: builds the model, optimizer, schedule and data from
 * a {@link TrainConfig}, then repeats {@link trainStep} with readbacks every few seconds, times it
 * with a {@link ThroughputMeter}, and at each epoch's end runs {@link evaluate} and
 * {@link endEpoch} (`metrics.jsonl`, `curves.svg`, checkpoints); it writes `summary.json` at the
 * end and resumes exactly from a checkpoint. `onStepEnd` and `onEpochEnd` hooks can watch the run
 * and stop it.
 *
 * @module
 */
import { noGrad } from "../autograd.ts";
import { memoryStats, resetPeakMemory } from "../gpu/buffer_pool.ts";
import { adapterDescription, getDevice } from "../gpu/device.ts";
import type { Module } from "../nn/module.ts";
import { mulScalar } from "../ops/elementwise.ts";
import { crossEntropy } from "../ops/loss.ts";
import { Adam, AdamW } from "../optim/adam.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { CosineLR, MultiStepLR, OneCycleLR, type Schedule } from "../optim/schedules.ts";
import { SGD } from "../optim/sgd.ts";
import { CIFAR10_MEAN, CIFAR10_STD } from "../data/cifar10.ts";
import { DataLoader, type DataLoaderState } from "../data/loader.ts";
import { tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";
import { type CheckpointInfo, loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import type { EpochMetrics, StepPoint } from "./curves.ts";
import { endEpoch } from "./epoch_end.ts";
import { evaluate } from "./evaluate.ts";
import { buildModel } from "./models.ts";
import { ProgressReporter } from "./progress.ts";
import { trainStep } from "./step.ts";
import { ThroughputMeter } from "./throughput.ts";
import { resolveDataset } from "./_dataset.ts";
import { formatDuration } from "./_duration.ts";
import { readMetrics, writeTextAtomic } from "./_files.ts";

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
   * and metrics are restored, and the run goes on exactly where it stopped.
   */
  resumeFrom?: string;
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

/**
 * The configuration that resuming from a checkpoint of {@link train} continues: the flags saved
 * in it (`extra.flags`). Pass it to `train()` with `resumeFrom` set to the same path.
 *
 * @throws {Error} when the checkpoint holds no flags (a plain state dict).
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { configFromCheckpoint, saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const flags = { model: "resnet8", epochs: 3 };
 * await saveCheckpoint(path, new nn.Linear(2, 2), null, { epoch: 1, step: 5, extra: { flags } });
 * console.log((await configFromCheckpoint(path)).epochs); // 3
 * await Deno.remove(path);
 * ```
 */
export async function configFromCheckpoint(path: string): Promise<TrainConfig> {
  const checkpoint = await loadCheckpoint(path);
  checkpoint.dispose();
  const flags = checkpoint.extra?.flags as TrainConfig | undefined;
  if (!flags) {
    throw new Error(
      `Checkpoint "${path}" has no training state (no "extra.flags" metadata): it is a plain ` +
        "state dict; use it with --eval-only --checkpoint, or start a new run.",
    );
  }
  return flags;
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
  getDevice();
  // The epoch lines report the peak GPU memory of tensors from here on.
  resetPeakMemory();
  const started = performance.now();
  const progress = options.progress ?? new ProgressReporter();
  const { logDir } = config;
  await Deno.mkdir(logDir, { recursive: true });
  const lastPath = `${logDir}/last.safetensors`;

  const run = await setUp(config, progress, options.resumeFrom);
  const { data, model, optimizer, schedule, trainLoader, testLoader, totalSteps, history } = run;
  let step = run.step;
  const device = adapterDescription();
  progress.log(
    `adapter: ${device}\nmodel: ${config.model} (${countParameters(model).toLocaleString("en")} ` +
      `parameters)  data: ${data.name} (${data.train.count} train, ${data.test.count} test)\n` +
      `optimizer: ${config.optimizer} lr ${config.lr}  schedule: ${config.schedule}  batch ` +
      `${config.batchSize}  epochs ${config.epochs}  steps ${totalSteps}`,
  );

  const checkpointInfo = (): CheckpointInfo => ({
    epoch: trainLoader.epoch,
    step,
    optimizer: optimizer.stateDict().hyper,
    extra: {
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
    },
  });

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
  const stepOptions = {
    loss: config.labelSmoothing
      ? (output: Tensor, labels: Int32Array) =>
        crossEntropy(output, labels, { labelSmoothing: config.labelSmoothing })
      : undefined,
    clipGradNorm: config.clipGradNorm,
  };
  const lossSum = Tensor.zeros([]);
  const correct = Tensor.zeros([]);
  model.train();
  try {
    while (trainLoader.epoch < config.epochs && step < totalSteps && !interrupted) {
      const epoch = trainLoader.epoch + 1;
      const epochStart = performance.now();
      meter.restart(epochStart);
      lossSum.fill(0);
      correct.fill(0);
      let seen = 0;
      let lastRead = epochStart;
      let unread = { steps: 0, images: 0 };
      let batchIndex = trainLoader.position;
      // Batches of this epoch the run takes: fewer than the loader's when --max-steps ends it.
      const batches = Math.min(trainLoader.length, batchIndex + totalSteps - step);
      let previousRead = { loss: 0, correct: 0, seen: 0 };
      for (const batch of trainLoader.batches()) {
        const size = batch.labels.length;
        const result = trainStep(model, optimizer, batch, stepOptions);
        tidy(() =>
          noGrad(() => {
            lossSum.accumulate(mulScalar(result.loss, size));
            correct.accumulate(result.correct);
          })
        );
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
        await saveCheckpoint(lastPath, model, optimizer, checkpointInfo());
        progress.log(`interrupted: saved ${lastPath} (epoch ${epoch}, step ${step})`);
        break;
      }
      const [trainLoss, trainCorrect] = await Promise.all([lossSum.item(), correct.item()]);
      const trainSeconds = (performance.now() - epochStart) / 1000;
      const evalStart = performance.now();
      const test = await evaluate(model, testLoader);
      evalSeconds = (performance.now() - evalStart) / 1000;
      const metrics: EpochMetrics = {
        epoch,
        step,
        lr: optimizer.lr,
        train_loss: trainLoss / Math.max(seen, 1),
        train_acc: trainCorrect / Math.max(seen, 1),
        test_loss: test.loss,
        test_acc: test.accuracy,
        seconds: (performance.now() - epochStart) / 1000,
        images_per_sec: seen / trainSeconds,
      };
      const { isBest } = await endEpoch(metrics, {
        logDir,
        model,
        optimizer,
        checkpoint: checkpointInfo(),
        history,
        epochs: config.epochs,
        title: config.model,
        progress,
        steps: stepPoints,
      });
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
  const testLoader = new DataLoader(data.test, { batchSize: config.batchSize, shuffle: false });
  const totalSteps = Math.min(
    config.epochs * trainLoader.length,
    config.maxSteps ?? Infinity,
  );
  const schedule = makeSchedule(config, optimizer, Math.max(1, config.epochs * trainLoader.length));

  let step = 0;
  let history: EpochMetrics[] = [];
  if (resumeFrom) {
    const checkpoint = await loadCheckpoint(resumeFrom);
    try {
      model.loadStateDict(checkpoint.model);
      optimizer.loadStateDict({ state: checkpoint.optimizerState, hyper: checkpoint.optimizer! });
      const extra = checkpoint.extra ?? {};
      schedule.loadStateDict(extra.schedule as { iteration: number });
      trainLoader.loadStateDict(extra.loader as DataLoaderState);
      step = checkpoint.step;
    } finally {
      checkpoint.dispose();
    }
    history = (await readMetrics(`${config.logDir}/metrics.jsonl`)).filter((m) =>
      m.epoch <= trainLoader.epoch
    );
    progress.log(`resumed from ${resumeFrom}: epoch ${trainLoader.epoch}, step ${step}`);
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
