import assert from "node:assert/strict";
import { inUseBytesSince, memoryStats, poolMark, sizeClass } from "../../src/gpu/buffer_pool.ts";
import { gpuCounters, MAX_PENDING_COMMANDS } from "../../src/gpu/dispatch.ts";
import { noGrad } from "../../src/autograd.ts";
import { Linear } from "../../src/nn/linear.ts";
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

gpuTest(
  "2000 steps without a readback keep the encoder, GPU memory and buffer count bounded",
  async () => {
    const mark = poolMark();
    const model = new Linear(12, 5, { seed: 7 });
    const optimizer = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    const x = Tensor.randn([6, 12], { seed: 8 });
    const labels = new Int32Array([0, 1, 2, 3, 4, 0]);
    const step = () =>
      tidy(() => {
        optimizer.zeroGrad();
        crossEntropy(model.forward(x), labels).backward();
        optimizer.step();
      });
    for (let i = 0; i < 10; i++) step();
    const inUseAfter10 = inUseBytesSince(mark);
    const submits = gpuCounters().submits;
    // The per-submit buffers (the labels' upload staging, the per-step uniforms) grow until a
    // submit holds as much as the encoder's bound allows; then nothing more is created.
    let createdAt1500 = -1;
    let mostPending = 0;
    for (let i = 10; i < 2000; i++) {
      step();
      const now = gpuCounters();
      mostPending = Math.max(mostPending, now.pendingCommands);
      if (i === 1500) createdAt1500 = now.bufferCreations;
    }
    assert.ok(
      mostPending < MAX_PENDING_COMMANDS,
      `the encoder held ${mostPending} commands (bound ${MAX_PENDING_COMMANDS})`,
    );
    assert.ok(gpuCounters().submits >= submits + 2, "the encoder was not submitted on its own");
    assert.equal(inUseBytesSince(mark), inUseAfter10, "GPU memory in use grew after step 10");
    assert.equal(
      gpuCounters().bufferCreations,
      createdAt1500,
      "buffers were still created in the last 500 steps",
    );
    // The loop trained: the parameters moved and the loss is finite.
    const loss = noGrad(() => crossEntropy(model.forward(x), labels));
    assert.ok(Number.isFinite(await loss.item()));
    loss.dispose();
    optimizer.dispose();
    model.dispose();
    x.dispose();
  },
);

gpuTest(
  "2000 steps without tidy(): model.call() frees the activations, only the loop's outputs wait",
  () => {
    const model = resnet(8, { numClasses: 4, seed: 11 });
    const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 12 });
    const labels = new Int32Array([1, 3]);
    const mark = poolMark();
    let inUseAt100 = 0;
    // A plain loop: no tidy(), no dispose(), no readback, so no garbage collector's finalizer
    // runs (they need the event loop). Only the logits [2, 4] and the loss [] of each step are
    // left for it; the forward's intermediates are freed by the backward that used them.
    for (let step = 1; step <= 2000; step++) {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.call(x), labels);
      loss.backward();
      optimizer.step();
      if (step === 100) inUseAt100 = inUseBytesSince(mark);
    }
    const perStep = (inUseBytesSince(mark) - inUseAt100) / 1900;
    assert.equal(perStep, sizeClass(2 * 4 * 4) + sizeClass(4), `${perStep} bytes held per step`);
    // The same loop through forward() instead of call() holds every activation until the
    // garbage collector finalizes it: far more per step.
    const forwardMark = poolMark();
    for (let step = 1; step <= 20; step++) {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(x), labels);
      loss.backward();
      optimizer.step();
    }
    assert.ok(inUseBytesSince(forwardMark) / 20 > 10 * perStep);
    optimizer.dispose();
    model.dispose();
    x.dispose();
  },
);
