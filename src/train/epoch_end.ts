/**
 * What a run does when an epoch ends: {@link endEpoch} records the epoch's metrics, redraws the
 * curves, saves the checkpoints and prints the epoch's line.
 *
 * @module
 */
import { memoryStats } from "../gpu/buffer_pool.ts";
import type { Module } from "../nn/module.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { type CheckpointInfo, saveCheckpoint } from "./checkpoint.ts";
import { type EpochMetrics, renderCurves, type StepPoint } from "./curves.ts";
import { formatDuration } from "./_duration.ts";
import { metricsCsv, writeTextAtomic } from "./_files.ts";
import type { ProgressReporter } from "./progress.ts";

/** Options of {@link endEpoch}. */
export interface EpochEndOptions {
  /** The run's folder (created when missing). */
  logDir: string;
  /** The model, saved in `last.safetensors`. */
  model: Module;
  /** The optimizer, whose state is saved beside the model; `null` saves the model only. */
  optimizer: Optimizer | null;
  /** What the checkpoint records beside the tensors: epoch, step and any state to resume. */
  checkpoint: CheckpointInfo;
  /** The earlier epochs' metrics (as `metrics.jsonl` holds them), for the curves and the best. */
  history?: readonly EpochMetrics[];
  /** Epochs of the run, shown as `epoch 3/164` (default: just the epoch). */
  epochs?: number;
  /** Title of the curves (the model's name). Default `"training"`. */
  title?: string;
  /** Where the epoch's line goes; none when not given. */
  progress?: ProgressReporter;
  /** The run's per-step training figures so far, for the per-step lines of the curves. */
  steps?: readonly StepPoint[];
}

/** What {@link endEpoch} did. */
export interface EpochEndResult {
  /**
   * Whether this epoch's test accuracy beat every earlier one (or no earlier one was a number),
   * so `best.safetensors` now holds it.
   */
  isBest: boolean;
}

/**
 * Ends an epoch in the run folder `logDir`: saves `last.safetensors` (model, optimizer state,
 * `checkpoint`), copies it to `best.safetensors` when the test accuracy is the best so far,
 * appends `metrics` as one line of `metrics.jsonl`, rewrites `metrics.csv` (a header, then
 * `history` and `metrics`, one line per epoch), redraws `curves.svg` from `history`, `metrics` and
 * `steps`, and prints the epoch's line (losses, accuracies, speed, and the peak GPU memory of
 * tensors since the last `resetPeakMemory()`) to `progress`. The checkpoints, `metrics.csv` and
 * the curves are replaced atomically; the checkpoint is written before the metrics line, so a kill
 * in between leaves a checkpoint ahead of `metrics.jsonl`, never behind (`train()` records the
 * metrics in the checkpoint too and rewrites the file on resume).
 *
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { SGD } from "@resnet/webgpu/optim";
 * import { endEpoch } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = new nn.Linear(4, 2);
 * const optimizer = new SGD(model.parameters(), { lr: 0.1 });
 * const logDir = await Deno.makeTempDir();
 * const { isBest } = await endEpoch(
 *   { epoch: 1, step: 10, lr: 0.1, train_loss: 0.7, train_acc: 0.5, test_loss: 0.69,
 *     test_acc: 0.55, seconds: 2, images_per_sec: 640 },
 *   { logDir, model, optimizer, checkpoint: { epoch: 1, step: 10 } },
 * );
 * const names = (await Array.fromAsync(Deno.readDir(logDir))).map((e) => e.name).sort();
 * console.log(isBest, names);
 * // true [
 * //   "best.safetensors",
 * //   "curves.svg",
 * //   "last.safetensors",
 * //   "metrics.csv",
 * //   "metrics.jsonl"
 * // ]
 * await Deno.remove(logDir, { recursive: true });
 * ```
 */
export async function endEpoch(
  metrics: EpochMetrics,
  options: EpochEndOptions,
): Promise<EpochEndResult> {
  const { logDir, history = [] } = options;
  await Deno.mkdir(logDir, { recursive: true });
  const last = `${logDir}/last.safetensors`;
  const best = `${logDir}/best.safetensors`;
  // The checkpoint first: a run killed between these writes resumes from it, and resuming
  // rewrites metrics.jsonl to the epochs the checkpoint records.
  await saveCheckpoint(last, options.model, options.optimizer, options.checkpoint);
  const bestBefore = history.reduce((b, m) => Math.max(b, m.test_acc), -Infinity);
  const isBest = metrics.test_acc > bestBefore || !Number.isFinite(bestBefore);
  if (isBest) {
    const temporary = `${best}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.copyFile(last, temporary);
    await Deno.rename(temporary, best);
  }
  await Deno.writeTextFile(`${logDir}/metrics.jsonl`, JSON.stringify(metrics) + "\n", {
    append: true,
  });
  await writeTextAtomic(`${logDir}/metrics.csv`, metricsCsv([...history, metrics]));
  await writeTextAtomic(
    `${logDir}/curves.svg`,
    renderCurves([...history, metrics], options.title ?? "training", options.steps),
  );
  const of = options.epochs === undefined ? "" : `/${options.epochs}`;
  options.progress?.log(
    `epoch ${metrics.epoch}${of}  step ${metrics.step}  lr ${metrics.lr.toPrecision(3)}  ` +
      `train loss ${metrics.train_loss.toFixed(4)} acc ${(metrics.train_acc * 100).toFixed(2)}%` +
      `  test loss ${metrics.test_loss.toFixed(4)} acc ${(metrics.test_acc * 100).toFixed(2)}%` +
      `  ${metrics.images_per_sec.toFixed(1)} img/s  ${formatDuration(metrics.seconds)}  ` +
      `peak GPU memory ${(memoryStats().peakInUseBytes / 2 ** 20).toFixed(1)} MiB`,
  );
  return { isBest };
}
