/**
 * The training loop behind `deno task train`, checkpoints, progress output and learning curves.
 *
 * @module
 */
export {
  type CheckpointInfo,
  loadCheckpoint,
  type LoadedCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
export { type EpochMetrics, renderCurves } from "./curves.ts";
export { formatDuration, ProgressReporter, type ProgressState } from "./progress.ts";
export {
  buildModel,
  configFromCheckpoint,
  evaluate,
  labmlModel,
  resolveDataset,
  train,
  type TrainConfig,
  type TrainHooks,
  type TrainSummary,
} from "./trainer.ts";
