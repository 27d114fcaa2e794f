/**
 * One training step, the unit a training loop repeats: {@link trainStep}.
 *
 * @module
 */
import { noGrad } from "../autograd.ts";
import { flush } from "../gpu/dispatch.ts";
import type { Module } from "../nn/module.ts";
import { correctCount, crossEntropy } from "../ops/loss.ts";
import { clipGradNorm } from "../optim/clip_grad.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { tidy } from "../scope.ts";
import type { Tensor } from "../tensor.ts";

/** Options of {@link trainStep}. */
export interface TrainStepOptions {
  /**
   * The loss of the batch as a scalar tensor, from the model's output and the labels. Default:
   * {@link crossEntropy} with mean reduction.
   */
  loss?: (output: Tensor, labels: Int32Array) => Tensor;
  /**
   * Clips the gradients' total 2-norm to this between the backward pass and the update, with
   * {@link clipGradNorm} (on the GPU, no readback). Default: no clipping.
   */
  clipGradNorm?: number;
}

/** What {@link trainStep} hands back: two scalars on the GPU, not read back. */
export interface TrainStepResult {
  /** The batch's loss (the mean over the batch by default), computed before the update. */
  loss: Tensor;
  /** How many of the batch's images the model classified correctly, before the update. */
  correct: Tensor;
}

/**
 * One training step on `batch`: clears the gradients, runs the model forward, computes the loss,
 * back-propagates, and updates the parameters with `optimizer`; then submits the step's GPU work
 * without waiting for it. Nothing is read back, so a loop of steps keeps the GPU busy; read the
 * returned scalars (`await result.loss.item()`) only now and then, or add them into running sums
 * on the GPU. Every intermediate tensor is released; the two returned scalars belong to the caller
 * (dispose them, or call `trainStep` inside `tidy`). The batch's images stay the caller's too.
 * Schedules are stepped by the caller, as in PyTorch.
 *
 * @example
 * ```ts
 * import { initGPU, resnet, Tensor } from "@resnet/webgpu";
 * import { SGD } from "@resnet/webgpu/optim";
 * import { trainStep } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = resnet(8, { numClasses: 4, seed: 0 });
 * const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
 * const images = Tensor.randn([8, 3, 8, 8], { seed: 1 });
 * const labels = new Int32Array([0, 1, 2, 3, 0, 1, 2, 3]);
 * let result = trainStep(model, optimizer, { images, labels });
 * const first = await result.loss.item();
 * for (let i = 0; i < 5; i++) {
 *   result.loss.dispose();
 *   result.correct.dispose();
 *   result = trainStep(model, optimizer, { images, labels });
 * }
 * console.log(first, "->", await result.loss.item(), "correct", await result.correct.item());
 * ```
 */
export function trainStep(
  model: Module,
  optimizer: Optimizer,
  batch: { images: Tensor; labels: Int32Array },
  options: TrainStepOptions = {},
): TrainStepResult {
  const lossOf = options.loss ??
    ((output: Tensor, labels: Int32Array) => crossEntropy(output, labels));
  const result = tidy(() => {
    optimizer.zeroGrad();
    const output = model.call(batch.images);
    const loss = lossOf(output, batch.labels);
    loss.backward();
    if (options.clipGradNorm !== undefined) clipGradNorm(model.parameters(), options.clipGradNorm);
    optimizer.step();
    const correct = noGrad(() => correctCount(output, batch.labels));
    return { loss, correct };
  });
  flush();
  return result;
}
