/**
 * Test loss and accuracy of a model over a whole dataset: {@link evaluate}.
 *
 * @module
 */
import { noGrad } from "../autograd.ts";
import { flush } from "../gpu/dispatch.ts";
import type { Module } from "../nn/module.ts";
import { correctCount, crossEntropy } from "../ops/loss.ts";
import type { ImageDataset } from "../data/cifar10.ts";
import { DataLoader } from "../data/loader.ts";
import { tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** Images per batch when `data` is a dataset (a loader keeps its own). Default 128. */
  batchSize?: number;
}

/** What {@link evaluate} measures. */
export interface EvaluateResult {
  /** Mean cross-entropy loss per image; `NaN` for an empty dataset. */
  loss: number;
  /** Fraction of images classified correctly, in [0, 1]; `NaN` for an empty dataset. */
  accuracy: number;
}

/**
 * Mean cross-entropy loss and accuracy of `model` on a dataset, or on a loader built without
 * shuffling or augmentation. Runs in eval mode (batch norm uses its running statistics) without
 * gradients, sums loss and correct predictions on the GPU and reads them back once at the end;
 * the model's training mode is restored afterwards. A loader passed in keeps its uploaded images
 * for the next evaluation; a dataset is uploaded for this call and released.
 *
 * @example
 * ```ts
 * import { initGPU, resnet } from "@resnet/webgpu";
 * import { syntheticCifar } from "@resnet/webgpu/data";
 * import { evaluate } from "@resnet/webgpu/train";
 * await initGPU();
 * const { test } = syntheticCifar({ trainCount: 0, testCount: 20, seed: 0 });
 * const model = resnet(8, { numClasses: 10, seed: 0 });
 * const { loss, accuracy } = await evaluate(model, test, { batchSize: 10 });
 * console.log(loss.toFixed(1), accuracy); // "2.3" (ln 10: untrained) and a fraction in [0, 1]
 * ```
 */
export async function evaluate(
  model: Module,
  data: ImageDataset | DataLoader,
  options: EvaluateOptions = {},
): Promise<EvaluateResult> {
  const dataset = data instanceof DataLoader ? data.dataset : data;
  if (dataset.count === 0) return { loss: NaN, accuracy: NaN };
  const loader = data instanceof DataLoader
    ? data
    : new DataLoader(dataset, { batchSize: options.batchSize ?? 128, shuffle: false });
  const lossSum = Tensor.zeros([]);
  const correct = Tensor.zeros([]);
  const wasTraining = model.training;
  model.eval();
  try {
    for (const batch of loader.batches()) {
      tidy(() =>
        noGrad(() => {
          const logits = model.call(batch.images);
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
