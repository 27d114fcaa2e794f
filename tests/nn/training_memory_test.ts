import assert from "node:assert/strict";
import { inUseBytesSince, memoryStats, poolMark } from "../../src/gpu/buffer_pool.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { CosineLR } from "../../src/optim/schedules.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

gpuTest(
  "GPU memory in use is the same after step 20 as after step 2 of a training loop",
  async () => {
    // Counted from here, so that earlier tests' garbage, reclaimed meanwhile, does not move it.
    const mark = poolMark();
    const model = resnet(8, { numClasses: 4, seed: 3 });
    const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    // The learning rate changes every step, as under any schedule.
    const schedule = new CosineLR(optimizer, { totalSteps: 20, warmupSteps: 2 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 4 });
    const labels = new Int32Array([1, 3]);
    const inUse: number[] = [];
    const allocated: number[] = [];
    const created: number[] = [];
    const losses: number[] = [];
    for (let step = 1; step <= 20; step++) {
      const loss = tidy(() => {
        optimizer.zeroGrad();
        const loss = crossEntropy(model.forward(x), labels);
        loss.backward();
        optimizer.step();
        return loss;
      });
      schedule.step();
      losses.push(await loss.item());
      loss.dispose();
      inUse.push(inUseBytesSince(mark));
      allocated.push(memoryStats().allocatedBytes);
      created.push(gpuCounters().bufferCreations);
    }
    assert.ok(losses[19] < losses[0], `the loss did not fall: ${losses[0]} -> ${losses[19]}`);
    assert.equal(inUse[19], inUse[1], `in use: step 2 ${inUse[1]} B, step 20 ${inUse[19]} B`);
    assert.equal(allocated[19], allocated[1], "the pool allocated new buffers in steady state");
    assert.equal(created[19], created[1], "uniform, upload or readback buffers were created");
    optimizer.dispose();
    model.dispose();
    x.dispose();
  },
);

gpuTest("a training step is encoded without submits; only the readback submits", async () => {
  const model = resnet(8, { numClasses: 4, seed: 5 });
  const x = Tensor.randn([2, 3, 8, 8], { seed: 6 });
  const labels = new Int32Array([0, 2]);
  const step = () =>
    tidy(() => {
      model.zeroGrad();
      const loss = crossEntropy(model.forward(x), labels);
      loss.backward();
      return loss;
    });
  await step().item();
  const before = gpuCounters();
  const loss = step();
  const encoded = gpuCounters();
  await loss.item();
  const after = gpuCounters();
  assert.equal(encoded.submits - before.submits, 0, "the step submitted while encoding");
  assert.equal(after.submits - encoded.submits, 1);
  assert.equal(after.readbacks - before.readbacks, 1);
  model.dispose();
});
