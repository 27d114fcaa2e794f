/**
 * The training loop behind `deno task train`: builds the model, optimizer, schedule and data,
 * trains with one submit per step and periodic readbacks, evaluates each epoch, writes
 * `metrics.jsonl`, `summary.json`, `curves.svg` and checkpoints, and resumes exactly.
 *
 * @module
 */
import { noGrad } from "../autograd.ts";
import { adapterDescription, getDevice } from "../gpu/device.ts";
import { flush } from "../gpu/dispatch.ts";
import { memoryStats } from "../gpu/buffer_pool.ts";
import { Linear } from "../nn/linear.ts";
import type { Module } from "../nn/module.ts";
import { resnet, ResNetBase } from "../nn/resnet.ts";
import { Sequential } from "../nn/sequential.ts";
import { mulScalar } from "../ops/elementwise.ts";
import { correctCount, crossEntropy } from "../ops/loss.ts";
import { Adam, AdamW } from "../optim/adam.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { CosineLR, MultiStepLR, OneCycleLR, type Schedule } from "../optim/schedules.ts";
import { SGD } from "../optim/sgd.ts";
import { type ImageDataset, loadCifar10Folder } from "../data/cifar10.ts";
import { CIFAR10_FOLDER, CIFAR10_URL, ensureCifar10 } from "../data/download.ts";
import { DataLoader, type DataLoaderState } from "../data/loader.ts";
import { syntheticCifar } from "../data/synthetic.ts";
import { tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { type EpochMetrics, renderCurves } from "./curves.ts";
import { formatDuration, ProgressReporter } from "./progress.ts";

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
  /** Training augmentation. */
  augment: { crop: boolean; flip: boolean };
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
  /** Whether the run stopped early on a signal (a checkpoint was saved). */
  interrupted: boolean;
}

/** Hooks for the CLI and tests. */
export interface TrainHooks {
  /** Where messages go (default: standard error, with a live bar on a terminal). */
  progress?: ProgressReporter;
  /** Aborting saves a checkpoint and ends the run cleanly (Ctrl-C in the CLI). */
  signal?: AbortSignal;
}

/** The seed's CIFAR-10 experiment: bottlenecks [8, 16, 16], blocks [6, 6, 6], channels 16/32/64. */
export function labmlModel(seed: number): Sequential {
  const base = new ResNetBase([6, 6, 6], [16, 32, 64], {
    bottlenecks: [8, 16, 16],
    firstKernelSize: 3,
    seed,
  });
  return new Sequential(base, new Linear(64, 10, { seed: seed + 1 }));
}

/**
 * Builds the named model: `resnet<6n+2>` (the paper's CIFAR network) or `labml`.
 *
 * @throws {RangeError} for other names.
 */
export function buildModel(name: string, seed: number, numClasses = 10): Sequential {
  if (name === "labml") return labmlModel(seed);
  const match = /^resnet(\d+)$/.exec(name);
  const depth = match ? Number(match[1]) : NaN;
  if (!match || depth < 8 || (depth - 2) % 6 !== 0) {
    throw new RangeError(
      `Unknown model "${name}": use resnet<6n+2> (resnet8, resnet20, resnet32, resnet44, ` +
        "resnet56, resnet110, …) or labml",
    );
  }
  return resnet(depth, { numClasses, seed });
}

/** Loads the dataset the config names; `auto` falls back to synthetic data with a banner. */
export async function resolveDataset(
  config: TrainConfig,
  progress: ProgressReporter,
): Promise<{ train: ImageDataset; test: ImageDataset; name: string }> {
  const synthetic = () => {
    const sizes = config.syntheticSizes ?? { train: 5000, test: 1000 };
    const { train, test } = syntheticCifar({
      trainCount: sizes.train,
      testCount: sizes.test,
      seed: config.seed,
    });
    return { train, test, name: "synthetic" };
  };
  if (config.dataset === "synthetic") return synthetic();
  try {
    const folder = await ensureCifar10({
      dataDir: config.dataDir,
      onProgress: (p) => {
        progress.status(
          `downloading CIFAR-10: ${(p.receivedBytes / 1e6).toFixed(1)} / ` +
            `${(p.totalBytes / 1e6).toFixed(1)} MB  ${(p.bytesPerSecond / 1e6).toFixed(2)} MB/s  ` +
            `ETA ${formatDuration(p.etaSeconds)}`,
          p.receivedBytes >= p.totalBytes,
        );
      },
    });
    const { train, test } = await loadCifar10Folder(folder);
    return { train, test, name: "cifar10" };
  } catch (error) {
    if (config.dataset === "cifar10") throw error;
    progress.log(
      [
        "=".repeat(78),
        "CIFAR-10 is not available, so this run uses the SYNTHETIC data set (10 procedurally",
        "generated classes in CIFAR-10's layout) to show the whole pipeline working.",
        `Why: ${(error as Error).message.split("\n")[0].split(". ")[0]}.`,
        `To train on CIFAR-10: allow network access to ${CIFAR10_URL}, or download it`,
        `elsewhere and unpack it so that ${config.dataDir}/${CIFAR10_FOLDER}/ holds`,
        "data_batch_1.bin … data_batch_5.bin and test_batch.bin; then run with --dataset cifar10.",
        "=".repeat(78),
      ].join("\n"),
    );
    return synthetic();
  }
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
 * Mean loss and accuracy of `model` on a dataset, or on a loader built without shuffling or
 * augmentation (eval mode, one readback).
 */
export async function evaluate(
  model: Module,
  data: ImageDataset | DataLoader,
  batchSize: number,
): Promise<{ loss: number; accuracy: number }> {
  const dataset = data instanceof DataLoader ? data.dataset : data;
  if (dataset.count === 0) return { loss: NaN, accuracy: NaN };
  // A loader passed in keeps its uploaded images for the next evaluation.
  const loader = data instanceof DataLoader
    ? data
    : new DataLoader(dataset, { batchSize, shuffle: false });
  const lossSum = Tensor.zeros([]);
  const correct = Tensor.zeros([]);
  const wasTraining = model.training;
  model.eval();
  try {
    for (const batch of loader.batches()) {
      tidy(() =>
        noGrad(() => {
          const logits = model.forward(batch.images);
          const loss = crossEntropy(logits, batch.labels, { reduction: "sum" });
          lossSum.accumulate(loss);
          correct.accumulate(correctCount(logits, batch.labels));
        })
      );
      batch.images.dispose();
      flush();
    }
    const [l, c] = await Promise.all([lossSum.item(), correct.item()]);
    return { loss: l / dataset.count, accuracy: c / dataset.count };
  } finally {
    model.train(wasTraining);
    lossSum.dispose();
    correct.dispose();
    if (loader !== data) loader.dispose();
  }
}

async function writeTextAtomic(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

async function readMetrics(path: string): Promise<EpochMetrics[]> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as EpochMetrics);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The configuration that resuming from `checkpoint` continues: the flags saved in it. */
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
 * Trains per `config`. With `resumeFrom`, restores model, optimizer, schedule, data order and
 * metrics from that checkpoint and continues exactly where it stopped.
 */
export async function train(
  config: TrainConfig,
  options: TrainHooks & { resumeFrom?: string } = {},
): Promise<TrainSummary> {
  getDevice();
  const started = performance.now();
  const progress = options.progress ?? new ProgressReporter();
  await Deno.mkdir(config.logDir, { recursive: true });
  const paths = {
    metrics: `${config.logDir}/metrics.jsonl`,
    summary: `${config.logDir}/summary.json`,
    curves: `${config.logDir}/curves.svg`,
    last: `${config.logDir}/last.safetensors`,
    best: `${config.logDir}/best.safetensors`,
  };

  const data = await resolveDataset(config, progress);
  const model = buildModel(config.model, config.seed, data.train.classes.length);
  const parameterCount = model.parameters().reduce((s, p) => s + p.size, 0);
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
  if (options.resumeFrom) {
    const checkpoint = await loadCheckpoint(options.resumeFrom);
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
    history = (await readMetrics(paths.metrics)).filter((m) => m.epoch <= trainLoader.epoch);
    progress.log(`resumed from ${options.resumeFrom}: epoch ${trainLoader.epoch}, step ${step}`);
  }

  const device = adapterDescription();
  progress.log(
    `adapter: ${device}\nmodel: ${config.model} (${parameterCount.toLocaleString("en")} ` +
      `parameters)  data: ${data.name} (${data.train.count} train, ${data.test.count} test)\n` +
      `optimizer: ${config.optimizer} lr ${config.lr}  schedule: ${config.schedule}  batch ` +
      `${config.batchSize}  epochs ${config.epochs}  steps ${totalSteps}`,
  );

  const checkpointExtra = () => ({
    flags: config,
    schedule: schedule.stateDict(),
    loader: trainLoader.stateDict(),
    dataset: data.name,
  });
  const saveLast = () =>
    saveCheckpoint(paths.last, model, optimizer, {
      epoch: trainLoader.epoch,
      step,
      optimizer: optimizer.stateDict().hyper,
      extra: checkpointExtra(),
    });

  let best = history.reduce((b, m) => Math.max(b, m.test_acc), -Infinity);
  let interrupted = false;
  let estimated = step > 0;
  const lossSum = Tensor.zeros([]);
  const correct = Tensor.zeros([]);
  model.train();
  try {
    while (trainLoader.epoch < config.epochs && step < totalSteps && !interrupted) {
      const epoch = trainLoader.epoch + 1;
      const epochStart = performance.now();
      lossSum.fill(0);
      correct.fill(0);
      let seen = 0;
      let lastRead = performance.now();
      let readLoss = 0;
      let readAcc = 0;
      let imagesAtRead = 0;
      let timeAtRead = epochStart;
      let imagesPerSecond = 0;
      const firstBatch = trainLoader.position;
      let batchIndex = firstBatch;
      for (const batch of trainLoader.batches()) {
        const size = batch.labels.length;
        tidy(() => {
          optimizer.zeroGrad();
          const logits = model.forward(batch.images);
          const loss = crossEntropy(logits, batch.labels);
          loss.backward();
          optimizer.step();
          noGrad(() => {
            lossSum.accumulate(mulScalar(loss, size));
            correct.accumulate(correctCount(logits, batch.labels));
          });
        });
        batch.images.dispose();
        schedule.step();
        step++;
        batchIndex++;
        seen += size;
        flush();
        const now = performance.now();
        const last = batchIndex === trainLoader.length || step >= totalSteps;
        // Every wait costs ~11 ms on a software adapter: read back every few seconds only, but
        // at each of the first steps to time them for the estimate.
        if (last || now - lastRead > 2000 || !estimated || options.signal?.aborted) {
          const [l, c] = await Promise.all([lossSum.item(), correct.item()]);
          const readAt = performance.now();
          readLoss = l / seen;
          readAcc = c / seen;
          imagesPerSecond = (seen - imagesAtRead) / ((readAt - timeAtRead) / 1000);
          imagesAtRead = seen;
          timeAtRead = readAt;
          lastRead = readAt;
          if (!estimated && batchIndex - firstBatch >= 3) {
            estimated = true;
            const secondsPerStep = config.batchSize / imagesPerSecond;
            const total = secondsPerStep * totalSteps;
            progress.log(
              `estimate: ${secondsPerStep.toFixed(3)} s/step x ${totalSteps} steps = ` +
                `${formatDuration(total)} of training (plus evaluation)`,
            );
            if (total > 6 * 3600) {
              progress.log(
                `This run would take ${formatDuration(total)} on this adapter (${device}). ` +
                  "Shorten it with --epochs N or --max-steps N, a smaller model (--model " +
                  "resnet8), or --dataset synthetic; the full recipe needs a GPU.",
              );
            }
          }
          const remaining = trainLoader.length - batchIndex;
          progress.update({
            epoch,
            epochs: config.epochs,
            batch: batchIndex,
            batches: trainLoader.length,
            loss: readLoss,
            accuracy: readAcc,
            imagesPerSecond,
            etaSeconds: (remaining * config.batchSize) / Math.max(imagesPerSecond, 1e-9),
          });
        }
        if (options.signal?.aborted) {
          interrupted = true;
          break;
        }
        // At an epoch's last batch the loop ends by itself, which completes the loader's epoch.
        if (step >= totalSteps && batchIndex < trainLoader.length) break;
      }
      if (interrupted) {
        await saveLast();
        progress.log(`interrupted: saved ${paths.last} (epoch ${epoch}, step ${step})`);
        break;
      }
      const [trainLoss, trainCorrect] = await Promise.all([lossSum.item(), correct.item()]);
      const trainSeconds = (performance.now() - epochStart) / 1000;
      const test = await evaluate(model, testLoader, config.batchSize);
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
      history.push(metrics);
      await Deno.writeTextFile(paths.metrics, JSON.stringify(metrics) + "\n", { append: true });
      await writeTextAtomic(paths.curves, renderCurves(history, config.model));
      await saveLast();
      if (metrics.test_acc > best || !Number.isFinite(best)) {
        best = metrics.test_acc;
        await Deno.copyFile(paths.last, `${paths.best}.tmp`);
        await Deno.rename(`${paths.best}.tmp`, paths.best);
      }
      progress.log(
        `epoch ${epoch}/${config.epochs}  step ${step}  lr ${optimizer.lr.toPrecision(3)}  ` +
          `train loss ${metrics.train_loss.toFixed(4)} acc ${
            (metrics.train_acc * 100).toFixed(2)
          }%` +
          `  test loss ${metrics.test_loss.toFixed(4)} acc ${
            (metrics.test_acc * 100).toFixed(2)
          }%` +
          `  ${metrics.images_per_sec.toFixed(1)} img/s  ${formatDuration(metrics.seconds)}  ` +
          `GPU memory ${(memoryStats().inUseBytes / 2 ** 20).toFixed(1)} MiB`,
      );
    }
  } finally {
    lossSum.dispose();
    correct.dispose();
    trainLoader.dispose();
    testLoader.dispose();
  }
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
  };
  await writeTextAtomic(paths.summary, JSON.stringify(summary, null, 2) + "\n");
  model.dispose();
  return summary;
}
