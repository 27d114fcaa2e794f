// The software family's packed filters of the weights an optimizer flattened: one
// conv2d_pack_weights dispatch packs every (weight, direction) of the flat buffer, bit for bit as
// conv2d_pack_weight packs each, and nothing stale is ever used.
import assert from "node:assert/strict";
import { noGrad } from "../../src/autograd.ts";
import { kernelFamily } from "../../src/gpu/device.ts";
import { gpuCounters, profileKernels } from "../../src/gpu/dispatch.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { conv2d, packedWeight, packWeight } from "../../src/ops/conv2d.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { sum } from "../../src/ops/reduce.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { tidy } from "../../src/scope.ts";
import { markModified, Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

// O and C not multiples of 4, 1x1, 3x3 and KW < KH, and wide ones (two vec4s, four vec4s).
const SHAPES = [
  [5, 3, 3, 3],
  [7, 6, 1, 1],
  [6, 2, 3, 2],
  [3, 9, 3, 1],
  [13, 11, 3, 3],
  [1, 1, 1, 1],
  [37, 21, 3, 3],
];

function weights(seed: number): Tensor[] {
  return SHAPES.map((shape, i) => Tensor.randn(shape, { seed: seed + i, requiresGrad: true }));
}

async function assertSameValues(actual: Tensor, expected: Tensor, what: string) {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  assert.deepEqual(await actual.toArray(), await expected.toArray(), what);
}

function packDispatches(before: { dispatches: number }): number {
  return gpuCounters().dispatches - before.dispatches;
}

gpuTest("packs of a flat buffer's weights equal packWeight's, both directions", async () => {
  const ws = weights(1);
  const opt = new SGD(ws, { lr: 0.1 });
  assert.ok(ws.every((w) => w.buffer === ws[0].buffer), "the optimizer flattened the weights");
  // First asked: a dispatch per new pair.
  for (const w of ws) {
    for (const flip of [false, true]) {
      await assertSameValues(packedWeight(w, flip), packWeight(w, flip), `${w.shape} ${flip}`);
    }
  }
  // Asked again: cached, no dispatch.
  let before = gpuCounters();
  for (const w of ws) for (const flip of [false, true]) packedWeight(w, flip);
  assert.equal(packDispatches(before), 0, "cached packs take no dispatch");
  // Every weight written: one dispatch packs them all again, from the new values.
  for (const w of ws) {
    w.fill(0.5);
    w.copyFrom(Tensor.randn(w.shape, { seed: w.size }));
  }
  before = gpuCounters();
  const packed = ws.map((w) => [packedWeight(w, false), packedWeight(w, true)]);
  assert.equal(packDispatches(before), 1, "one dispatch for every pair");
  for (const [i, w] of ws.entries()) {
    await assertSameValues(packed[i][0], packWeight(w, false), `${w.shape} repacked`);
    await assertSameValues(packed[i][1], packWeight(w, true), `${w.shape} repacked, flipped`);
  }
  // One weight written: it and the pairs after it in the table are packed again.
  ws[4].copyFrom(Tensor.randn(ws[4].shape, { seed: 99 }));
  before = gpuCounters();
  await assertSameValues(packedWeight(ws[4], true), packWeight(ws[4], true), "one repacked");
  await assertSameValues(packedWeight(ws[4], false), packWeight(ws[4], false), "one repacked");
  assert.equal(packDispatches(before), 3, "one pack dispatch, then two packWeight");
  await assertSameValues(packedWeight(ws[0], true), packWeight(ws[0], true), "untouched");
  opt.dispose();
});

gpuTest(
  "a weight disposed or moved out of the flat buffer leaves the others packed right",
  async () => {
    const ws = weights(20);
    new SGD(ws, { lr: 0.1 });
    for (const w of ws) packedWeight(w, false);
    ws[1].dispose();
    // Another optimizer moves two of them into a flat buffer of its own.
    new SGD([ws[2], ws[3]], { lr: 0.1 });
    for (const w of [ws[0], ...ws.slice(2)]) markModified(w);
    for (const w of [ws[0], ...ws.slice(2)]) {
      await assertSameValues(packedWeight(w, false), packWeight(w, false), `${w.shape}`);
      await assertSameValues(packedWeight(w, true), packWeight(w, true), `${w.shape} flipped`);
    }
  },
);

gpuTest("after an optimizer step the next convolution sees the new weights", async () => {
  const ws = weights(40).filter((w) => w.shape[2] === 3 && w.shape[3] === 3);
  const opt = new SGD(ws, { lr: 0.5, momentum: 0.9 });
  const inputs = ws.map((w, i) => Tensor.randn([2, w.shape[1], 8, 8], { seed: 60 + i }));
  for (let step = 0; step < 3; step++) {
    tidy(() => {
      opt.zeroGrad();
      for (const [i, w] of ws.entries()) sum(conv2d(inputs[i], w, null, { padding: 1 })).backward();
      opt.step();
    });
    for (const [i, w] of ws.entries()) {
      const got = noGrad(() => conv2d(inputs[i], w, null, { padding: 1 }));
      const own = w.clone();
      const expected = noGrad(() => conv2d(inputs[i], own, null, { padding: 1 }));
      await assertSameValues(got, expected, `step ${step}, weight ${w.shape}`);
    }
  }
});

gpuTest(
  "a ResNet-8 training step packs its filters in one dispatch, and eval after it sees them",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 3 });
    const optimizer = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    const x = Tensor.randn([4, 3, 8, 8], { seed: 4 });
    const labels = new Int32Array([0, 1, 2, 3]);
    const step = () =>
      tidy(() => {
        optimizer.zeroGrad();
        crossEntropy(model.forward(x), labels).backward();
        optimizer.step();
      });
    step();
    const { kernels } = await profileKernels(step);
    const packs = kernels.filter((k) => k.kernel.startsWith("conv2d_pack_weight"));
    const calls = packs.reduce((n, k) => n + k.calls, 0);
    if (kernelFamily() === "gpu") assert.equal(calls, 0, "the gpu family packs nothing");
    else {
      assert.ok(calls >= 1 && calls <= 2, `pack dispatches per step: ${calls}`);
      assert.deepEqual(packs.map((k) => k.kernel), ["conv2d_pack_weights"]);
    }
    // Eval after training: the same outputs as a copy of the model whose weights are its own.
    model.eval();
    const copy = resnet(8, { numClasses: 4, seed: 5 });
    copy.loadStateDict(model.stateDict());
    copy.eval();
    const got = noGrad(() => model.forward(x));
    const expected = noGrad(() => copy.forward(x));
    await assertSameValues(got, expected, "eval after training");
  },
);
