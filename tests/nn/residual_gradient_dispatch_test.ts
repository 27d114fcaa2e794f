// A ResNet block's input gets two gradients, through its first convolution and through the
// shortcut; the convolution's input-gradient kernel adds the one autograd already holds (see
// PendingGradients in src/autograd.ts), so a training step dispatches no add_inplace.
import assert from "node:assert/strict";
import { profileKernels } from "../../src/gpu/dispatch.ts";
import { Linear } from "../../src/nn/linear.ts";
import type { Module } from "../../src/nn/module.ts";
import { resnet, ResNetBase } from "../../src/nn/resnet.ts";
import { Sequential } from "../../src/nn/sequential.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

/** Calls of add_inplace in one forward and backward of `model` on a [2, 3, 16, 16] batch. */
async function addsPerStep(model: Module): Promise<number> {
  const x = Tensor.randn([2, 3, 16, 16], { seed: 3 });
  const labels = new Int32Array([1, 3]);
  const step = () =>
    tidy(() => {
      for (const p of model.parameters()) {
        p.grad?.dispose();
        p.grad = null;
      }
      crossEntropy(model.forward(x) as Tensor, labels).backward();
    });
  step();
  const { kernels } = await profileKernels(step);
  x.dispose();
  return kernels.find((k) => k.kernel === "add_inplace")?.calls ?? 0;
}

gpuTest(
  "a ResNet-8 training step adds no gradients with add_inplace (identity and projection shortcuts)",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 5 });
    assert.equal(await addsPerStep(model), 0);
    model.dispose();
  },
);

gpuTest("a bottleneck ResNet training step adds no gradients with add_inplace", async () => {
  const model = new Sequential(
    new ResNetBase([2, 1], [8, 16], { bottlenecks: [4, 8], firstKernelSize: 3, seed: 6 }),
    new Linear(16, 4, { seed: 7 }),
  );
  assert.equal(await addsPerStep(model), 0);
  model.dispose();
});
