/**
 * Training: {@link train} (the loop behind `deno task train`) and the parts it is made of, for
 * loops of one's own: {@link trainStep}, {@link evaluate}, {@link ThroughputMeter},
 * {@link endEpoch}; checkpoints, progress output and learning curves.
 *
 * @example
 * ```ts
 * import { initGPU, resnet } from "@resnet/webgpu";
 * import { DataLoader, syntheticCifar } from "@resnet/webgpu/data";
 * import { SGD } from "@resnet/webgpu/optim";
 * import { evaluate, trainStep } from "@resnet/webgpu/train";
 * await initGPU();
 * const { train, test } = syntheticCifar({ trainCount: 64, testCount: 32, seed: 0 });
 * const model = resnet(8, { numClasses: 10, seed: 0 });
 * const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
 * const loader = new DataLoader(train, { batchSize: 16, seed: 0 });
 * for (let epoch = 1; epoch <= 2; epoch++) {
 *   for (const batch of loader.batches()) {
 *     const { loss, correct } = trainStep(model, optimizer, batch);
 *     batch.images.dispose();
 *     loss.dispose();
 *     correct.dispose();
 *   }
 *   const { loss, accuracy } = await evaluate(model, test, { batchSize: 16 });
 *   console.log(`epoch ${epoch}: test loss ${loss.toFixed(3)}, accuracy ${accuracy}`);
 * }
 * loader.dispose();
 * ```
 *
 * @module
 */
export {
  type CheckpointHeader,
  type CheckpointInfo,
  loadCheckpoint,
  type LoadCheckpointOptions,
  type LoadedCheckpoint,
  readCheckpointInfo,
  saveCheckpoint,
} from "./checkpoint.ts";
export { type EpochMetrics, renderCurves, type StepPoint } from "./curves.ts";
export { ProgressReporter, type ProgressState } from "./progress.ts";
export { trainStep, type TrainStepOptions, type TrainStepResult } from "./step.ts";
export {
  type CompiledStepMode,
  CompiledTrainStep,
  type CompiledTrainStepOptions,
} from "./compiled_step.ts";
export { evaluate, type EvaluateOptions, type EvaluateResult } from "./evaluate.ts";
export { ThroughputMeter, type ThroughputMeterOptions } from "./throughput.ts";
export { endEpoch, type EpochEndOptions, type EpochEndResult } from "./epoch_end.ts";
export { buildModel, MAX_DEPTH } from "./models.ts";
export {
  CONFIG_LIMITS,
  configFromCheckpoint,
  type EpochEndContext,
  type HookResult,
  type StepEndContext,
  train,
  type TrainConfig,
  type TrainOptions,
  type TrainSummary,
  validateConfig,
} from "./trainer.ts";
