// A training step repeated with the same shapes reuses everything it created: the pool hands it
// the same buffers, so its bind groups come from the cache, and its per-step uniforms are written
// only when they change. In a file of its own, so that no earlier test's garbage is collected
// while it measures.
import assert from "node:assert/strict";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Adam, adamTableWindow } from "../../src/optim/adam.ts";
import type { Optimizer } from "../../src/optim/optimizer.ts";
import { CosineLR } from "../../src/optim/schedules.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

/**
 * A ResNet-8 training step on a fixed batch of 2 with `makeOptimizer`'s optimizer, which waits for
 * the GPU (a 4-byte readback) after each step; `dispose` releases what it made.
 */
function repeatedStep<O extends Optimizer>(makeOptimizer: (params: Tensor[]) => O) {
  const model = resnet(8, { numClasses: 4, seed: 9 });
  const optimizer = makeOptimizer(model.parameters());
  const x = Tensor.randn([2, 3, 8, 8], { seed: 10 });
  const labels = new Int32Array([1, 3]);
  const probe = Tensor.zeros([1]);
  const step = async () => {
    tidy(() => {
      optimizer.zeroGrad();
      crossEntropy(model.forward(x), labels).backward();
      optimizer.step();
    });
    await probe.toArray();
  };
  const dispose = () => {
    optimizer.zeroGrad();
    optimizer.dispose();
    model.dispose();
    x.dispose();
    probe.dispose();
  };
  return { optimizer, step, dispose };
}

gpuTest(
  "a repeated training step creates no bind group, buffer or uniform write after its second",
  async () => {
    const { optimizer, step, dispose } = repeatedStep((params) =>
      new SGD(params, { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 })
    );
    // The first step creates the optimizer's state and fills the pool; the second settles which
    // pooled buffer each tensor of the step gets.
    await step();
    await step();
    const before = gpuCounters();
    for (let i = 0; i < 4; i++) await step();
    const after = gpuCounters();
    assert.equal(after.bindGroupCreations - before.bindGroupCreations, 0, "bind groups created");
    assert.equal(after.bufferCreations - before.bufferCreations, 0, "buffers created");
    assert.equal(after.uniformWrites - before.uniformWrites, 0, "uniforms written, lr constant");
    // The labels are the data this step uploads: one write per step.
    assert.equal(after.uploads - before.uploads, 4);
    // A schedule changes the learning rate every step: one write of the per-step uniforms each.
    const schedule = new CosineLR(optimizer, { totalSteps: 100 });
    const scheduled = gpuCounters();
    for (let i = 0; i < 4; i++) {
      schedule.step();
      await step();
    }
    const end = gpuCounters();
    assert.equal(end.uniformWrites - scheduled.uniformWrites, 4);
    assert.equal(end.bindGroupCreations - scheduled.bindGroupCreations, 0);
    dispose();
  },
);

gpuTest(
  "a repeated Adam step writes no uniforms at a constant lr, and uploads only its table refills",
  async () => {
    // Windows of 4 steps: the bias-correction table is refilled on steps 1, 5, 9, ...
    const saved = adamTableWindow.steps;
    adamTableWindow.steps = 4;
    try {
      const { optimizer, step, dispose } = repeatedStep((params) =>
        new Adam(params, { lr: 1e-3, weightDecay: 1e-4 })
      );
      await step();
      await step();
      // Steps 3 to 10: two refills (steps 5 and 9).
      const before = gpuCounters();
      for (let i = 0; i < 8; i++) await step();
      const after = gpuCounters();
      assert.equal(after.bindGroupCreations - before.bindGroupCreations, 0, "bind groups created");
      assert.equal(after.bufferCreations - before.bufferCreations, 0, "buffers created");
      assert.equal(after.uniformWrites - before.uniformWrites, 0, "uniforms written, lr constant");
      // The labels, one upload per step, and one upload per refill.
      assert.equal(after.uploads - before.uploads, 8 + 2);
      assert.deepEqual(new Set(optimizer.steps), new Set([10]));
      // A schedule changes the learning rate every step: one write of the per-step uniforms each.
      const schedule = new CosineLR(optimizer, { totalSteps: 100 });
      const scheduled = gpuCounters();
      for (let i = 0; i < 4; i++) {
        schedule.step();
        await step();
      }
      const end = gpuCounters();
      assert.equal(end.uniformWrites - scheduled.uniformWrites, 4);
      assert.equal(end.bindGroupCreations - scheduled.bindGroupCreations, 0);
      dispose();
    } finally {
      adamTableWindow.steps = saved;
    }
  },
);
