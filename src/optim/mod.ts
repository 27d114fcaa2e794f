/**
 * Optimizers and learning-rate schedules, like `torch.optim`: {@link SGD}, {@link Adam},
 * {@link AdamW}, and {@link MultiStepLR}, {@link CosineLR}, {@link OneCycleLR}. An optimizer moves
 * its parameters into one flat buffer, so each update is one WGSL kernel dispatch for all of them
 * (a multi-tensor step, like PyTorch's fused optimizers), encoded with the rest of the training
 * step.
 * {@link clipGradNorm} clips gradients as `torch.nn.utils.clip_grad_norm_`.
 *
 * @example
 * ```ts
 * import { crossEntropy, initGPU, optim, resnet, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet(8, { numClasses: 4, seed: 0 });
 * const opt = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
 * const schedule = new optim.MultiStepLR(opt, { milestones: [32000, 48000] });
 * const x = Tensor.randn([2, 3, 8, 8], { seed: 1 });
 * const loss = tidy(() => {
 *   const loss = crossEntropy(model.forward(x), new Int32Array([1, 3]));
 *   loss.backward();
 *   opt.step();
 *   opt.zeroGrad();
 *   return loss;
 * });
 * schedule.step();
 * console.log(await loss.item());
 * ```
 *
 * @module
 */
export { type HyperValue, Optimizer, type OptimizerStateDict } from "./optimizer.ts";
export { SGD, type SGDOptions } from "./sgd.ts";
export { clipGradNorm, type ClipGradNormOptions } from "./clip_grad.ts";
export { Adam, type AdamOptions, AdamW } from "./adam.ts";
export {
  CosineLR,
  type CosineLROptions,
  type LrTarget,
  MultiStepLR,
  type MultiStepLROptions,
  OneCycleLR,
  type OneCycleLROptions,
  Schedule,
  type ScheduleState,
} from "./schedules.ts";
