// CompiledTrainStep: a recorded and replayed step computes what ordinary steps compute, bit for
// bit, keeps its buffers from other work, and falls back to ordinary steps when it must.
import assert from "node:assert/strict";
import { inUseBytesSince, memoryStats, poolMark } from "../../src/gpu/buffer_pool.ts";
import {
  dispatch,
  gpuCounters,
  kernel,
  markRestagePoint,
  releaseRecording,
  replayRecording,
  startRecording,
  stopRecording,
  writeBuffer,
} from "../../src/gpu/dispatch.ts";
import { Identity } from "../../src/nn/activation.ts";
import type { Module } from "../../src/nn/module.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { add } from "../../src/ops/elementwise.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Adam, adamTableWindow } from "../../src/optim/adam.ts";
import type { Optimizer } from "../../src/optim/optimizer.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { noGrad } from "../../src/autograd.ts";
import { Tensor } from "../../src/tensor.ts";
import { CompiledTrainStep } from "../../src/train/compiled_step.ts";
import { trainStep } from "../../src/train/step.ts";
import { gpuTest } from "../_gpu.ts";

function batch(seed: number, n = 8) {
  return {
    images: Tensor.randn([n, 3, 8, 8], { seed }),
    labels: Int32Array.from({ length: n }, (_, i) => (i * 3 + seed) % 4),
  };
}

/** Every parameter and buffer (running statistics) of `model`, read back. */
async function weights(model: Module): Promise<Float32Array[]> {
  return await Promise.all(model.stateDict().values().map((t) => t.toArray()));
}

async function assertSameModels(a: Module, b: Module, what: string): Promise<void> {
  const [wa, wb] = [await weights(a), await weights(b)];
  const keys = [...a.stateDict().keys()];
  wa.forEach((values, i) => assert.deepEqual(values, wb[i], `${what}: ${keys[i]} differs`));
}

/** Disposes what a test made, so that no tensor is left for the garbage collector to return. */
function disposeAll(...things: ({ dispose(): void } | Module)[]): void {
  for (const thing of things) {
    if ("zeroGrad" in thing) thing.zeroGrad();
    thing.dispose();
  }
}

function pair(makeOptimizer: (m: Module) => Optimizer) {
  const eager = resnet(8, { numClasses: 4, seed: 5 });
  const compiled = resnet(8, { numClasses: 4, seed: 5 });
  return {
    eager,
    compiled,
    eagerOpt: makeOptimizer(eager),
    compiledOpt: makeOptimizer(compiled),
  };
}

for (
  const [name, make] of [
    [
      "SGD with momentum and weight decay",
      (m: Module) => new SGD(m.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 }),
    ],
    ["Adam", (m: Module) => new Adam(m.parameters(), { lr: 1e-3 })],
  ] as const
) {
  gpuTest(
    `replayed steps (${name}) give bit-identical losses, weights and running statistics to trainStep`,
    async () => {
      const { eager, compiled, eagerOpt, compiledOpt } = pair(make);
      const step = new CompiledTrainStep(compiled, compiledOpt);
      const modes: string[] = [];
      for (let s = 0; s < 6; s++) {
        const b = batch(s + 1);
        const want = trainStep(eager, eagerOpt, b);
        const got = step.run(b);
        modes.push(step.mode);
        assert.equal(await got.loss.item(), await want.loss.item(), `loss of step ${s}`);
        assert.equal(await got.correct.item(), await want.correct.item(), `correct of step ${s}`);
        disposeAll(got.loss, got.correct, want.loss, want.correct);
        // A learning rate that changes per step, as a schedule sets it.
        eagerOpt.lr *= 0.9;
        compiledOpt.lr *= 0.9;
        b.images.dispose();
      }
      assert.deepEqual(modes, ["eager", "eager", "recorded", "replayed", "replayed", "replayed"]);
      await assertSameModels(compiled, eager, "after 6 steps");
      // The parameters' gradients are the last step's, as after trainStep.
      const [gc, ge] = [compiled.parameters()[0].grad!, eager.parameters()[0].grad!];
      assert.deepEqual(await gc.toArray(), await ge.toArray());
      // Optimizer state (momentum, Adam's moments and step counts) agrees too.
      const [sc, se] = [compiledOpt.stateDict(), eagerOpt.stateDict()];
      assert.deepEqual(sc.hyper, se.hyper);
      for (const [key, t] of se.state) {
        assert.deepEqual(await sc.state.get(key)!.toArray(), await t.toArray(), key);
      }
      disposeAll(step, eagerOpt, compiledOpt, eager, compiled);
    },
  );
}

gpuTest("a replayed step encodes what the recorded one did and creates nothing", async () => {
  const model = resnet(8, { numClasses: 4, seed: 1 });
  const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
  const step = new CompiledTrainStep(model, opt);
  const b = batch(1);
  const dispatches: number[] = [];
  let before = gpuCounters();
  const memory: number[] = [];
  for (let s = 0; s < 8; s++) {
    const { loss, correct } = step.run(b);
    const after = gpuCounters();
    dispatches.push(after.dispatches - before.dispatches);
    if (s >= 4) {
      assert.equal(after.bindGroupCreations - before.bindGroupCreations, 0, "bind groups");
      assert.equal(after.bufferCreations - before.bufferCreations, 0, "buffers");
      assert.equal(after.uniformWrites - before.uniformWrites, 0, "uniform writes");
      // The labels are the only upload.
      assert.equal(after.uploads - before.uploads, 1, "uploads");
    }
    before = after;
    await loss.item();
    loss.dispose();
    correct.dispose();
    memory.push(memoryStats().inUseBytes);
  }
  assert.equal(step.mode, "replayed");
  // Recorded and replayed steps encode the same dispatches as the ordinary ones. The first step
  // also packs each filter bank and direction on its own as the convolutions first ask for it;
  // from the second on, one dispatch packs them all (software family).
  assert.ok(dispatches[0] >= dispatches[1], `dispatches per step: ${dispatches}`);
  assert.ok(dispatches.every((d, s) => s === 0 || d === dispatches[1]), `per step: ${dispatches}`);
  assert.ok(memory.slice(3).every((m) => m === memory[3]), `memory in use: ${memory}`);
  disposeAll(step, opt, model, b.images);
});

gpuTest(
  "work between replays cannot take the replayed step's buffers, and zeroGrad between them " +
    "does not stop the update",
  async () => {
    const { eager, compiled, eagerOpt, compiledOpt } = pair((m) =>
      new SGD(m.parameters(), { lr: 0.05, momentum: 0.9 })
    );
    const step = new CompiledTrainStep(compiled, compiledOpt);
    for (let s = 0; s < 6; s++) {
      const b = batch(s + 10);
      const want = trainStep(eager, eagerOpt, b);
      const got = step.run(b);
      disposeAll(want.loss, want.correct, got.loss, got.correct);
      // Other work in between: evaluation-mode forwards and scratch tensors, which allocate
      // from the pool while the step's intermediates sit unused; and a zeroGrad.
      for (const model of [eager, compiled]) {
        model.eval();
        const scratch = noGrad(() => model.forward(b.images));
        const junk = add(scratch, scratch);
        junk.fill(123);
        scratch.dispose();
        junk.dispose();
        model.train();
      }
      compiledOpt.zeroGrad();
      eagerOpt.zeroGrad();
      b.images.dispose();
    }
    assert.equal(step.mode, "replayed");
    await assertSameModels(compiled, eager, "with work between steps");
    disposeAll(step, eagerOpt, compiledOpt, eager, compiled);
  },
);

gpuTest(
  "a batch of another shape or a changed model runs ordinarily, then records anew",
  async () => {
    const { eager, compiled, eagerOpt, compiledOpt } = pair((m) =>
      new SGD(m.parameters(), { lr: 0.05 })
    );
    const step = new CompiledTrainStep(compiled, compiledOpt, { warmupSteps: 1 });
    const modes: string[] = [];
    const run = (b: ReturnType<typeof batch>) => {
      const want = trainStep(eager, eagerOpt, b);
      const got = step.run(b);
      disposeAll(want.loss, want.correct, got.loss, got.correct);
      modes.push(step.mode);
      b.images.dispose();
    };
    run(batch(1));
    run(batch(2));
    run(batch(3));
    run(batch(4, 5)); // a smaller last batch
    run(batch(5));
    for (const model of [eager, compiled]) model.setSubmodule("0.blocks.0.act1", new Identity());
    run(batch(6));
    run(batch(7));
    run(batch(8));
    assert.deepEqual(modes, [
      "eager",
      "recorded",
      "replayed",
      "eager",
      "replayed",
      "eager",
      "recorded",
      "replayed",
    ]);
    await assertSameModels(compiled, eager, "after shape and model changes");
    disposeAll(step, eagerOpt, compiledOpt, eager, compiled);
  },
);

gpuTest("a model with forward hooks is never replayed, and the reason says so", () => {
  const model = resnet(8, { numClasses: 4, seed: 1 });
  const handle = model.getSubmodule("0.blocks.0").registerForwardHook(() => {});
  const opt = new SGD(model.parameters(), { lr: 0.1 });
  const step = new CompiledTrainStep(model, opt, { warmupSteps: 1 });
  const b = batch(1);
  for (let s = 0; s < 3; s++) {
    const { loss, correct } = step.run(b);
    disposeAll(loss, correct);
  }
  assert.equal(step.mode, "eager");
  assert.match(step.reason!, /forward hooks \(on 0\.blocks\.0\)/);
  handle.remove();
  disposeAll(step, opt, model, b.images);
});

gpuTest(
  "a loss that uploads makes the step unreplayable, with the reason, and still trains",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 1 });
    const opt = new SGD(model.parameters(), { lr: 0.1 });
    const step = new CompiledTrainStep(model, opt, {
      warmupSteps: 1,
      loss: (output, labels) => {
        const weights = Tensor.from([1, 1, 1, 1]); // an upload inside the step
        weights.dispose();
        return crossEntropy(output, labels);
      },
    });
    const b = batch(1);
    const losses: number[] = [];
    const modes: string[] = [];
    const reasons: (string | null)[] = [];
    for (let s = 0; s < 8; s++) {
      const { loss, correct } = step.run(b);
      losses.push(await loss.item());
      modes.push(step.mode);
      reasons.push(step.reason);
      disposeAll(loss, correct);
    }
    // Three tries to record (each a step that runs ordinarily), one settling step before each
    // retry, then ordinary steps for good.
    assert.deepEqual(modes, [
      "eager",
      "eager",
      "eager",
      "eager",
      "eager",
      "eager",
      "eager",
      "eager",
    ]);
    assert.deepEqual(reasons.map((r) => r !== null), [
      false,
      false,
      false,
      false,
      false,
      true,
      true,
      true,
    ]);
    assert.match(step.reason!, /uploads data from the CPU/);
    assert.ok(losses[7] < losses[0], `losses ${losses}`);
    disposeAll(step, opt, model, b.images);
  },
);

gpuTest("labels outside the model's classes are refused before any replayed work", () => {
  const model = resnet(8, { numClasses: 4, seed: 1 });
  const opt = new SGD(model.parameters(), { lr: 0.1 });
  const step = new CompiledTrainStep(model, opt);
  const b = batch(1);
  for (let s = 0; s < 4; s++) {
    const { loss, correct } = step.run(b);
    disposeAll(loss, correct);
  }
  const before = gpuCounters().dispatches;
  assert.throws(
    () => step.run({ images: b.images, labels: new Int32Array([0, 1, 2, 3, 4, 0, 1, 2]) }),
    /labels\[4\] is 4, outside the classes \[0, 3\]/,
  );
  assert.equal(gpuCounters().dispatches, before);
  assert.throws(
    () => step.run({ images: b.images, labels: new Int32Array(3) }),
    /3 labels for a batch of images \[8, 3, 8, 8\]/,
  );
  step.dispose();
  assert.throws(() => step.run(b), /disposed/);
  disposeAll(opt, model, b.images);
});

gpuTest("a recording replays copies, clears and dispatches in their order", async () => {
  const a = Tensor.from([1, 2, 3, 4]);
  const out = Tensor.empty([4]);
  startRecording();
  const sum = add(a, a); // a dispatch
  out.copyFrom(sum); // a copy
  sum.dispose();
  const rec = stopRecording();
  assert.equal(rec.invalid, null);
  assert.equal(rec.dispatches, 1);
  assert.deepEqual(rec.commands.map((c) => c.kind), ["dispatch", "copy"]);
  out.fill(0);
  replayRecording(rec);
  releaseRecording(rec);
  assert.deepEqual(await out.toArray(), new Float32Array([2, 4, 6, 8]));
  a.dispose();
  out.dispose();
});

gpuTest(
  "an optimizer whose state was dropped since the recording runs ordinarily, records anew, and " +
    "still matches trainStep",
  async () => {
    const { eager, compiled, eagerOpt, compiledOpt } = pair((m) =>
      new SGD(m.parameters(), { lr: 0.05, momentum: 0.9 })
    );
    const step = new CompiledTrainStep(compiled, compiledOpt);
    const b = batch(1);
    const run = () => {
      const want = trainStep(eager, eagerOpt, b);
      const got = step.run(b);
      disposeAll(want.loss, want.correct, got.loss, got.correct);
      return step.mode;
    };
    assert.deepEqual([run(), run(), run(), run()], ["eager", "eager", "recorded", "replayed"]);
    // Dropping every momentum buffer: the next update creates new ones, which the recorded
    // update does not bind.
    for (const opt of [eagerOpt, compiledOpt]) {
      opt.loadStateDict({ state: new Map(), hyper: opt.stateDict().hyper });
    }
    // The changed state is seen before replaying: an ordinary step, then a recording that holds
    // although the optimizer uploads its changed table of first steps while
    // it is recorded: that upload comes before the update's first dispatch, so it stays out of
    // the recording, and each replay's restage uploads the table again when it changes (here
    // the first replay, whose steps are no longer first steps).
    const after = [run(), run(), run(), run(), run()];
    assert.deepEqual(after, ["eager", "recorded", "replayed", "replayed", "replayed"]);
    await assertSameModels(compiled, eager, "after the optimizer's state was dropped");
    disposeAll(step, eagerOpt, compiledOpt, eager, compiled, b.images);
  },
);

gpuTest(
  "GPU memory stays flat over 1000 replayed steps, and nothing is created per step",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 2 });
    const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    const step = new CompiledTrainStep(model, opt);
    const b = batch(3, 4);
    const run = () => {
      const { loss, correct } = step.run(b);
      disposeAll(loss, correct);
    };
    const wait = async () => {
      const { loss, correct } = step.run(b);
      await loss.item();
      disposeAll(loss, correct);
    };
    for (let s = 0; s < 4; s++) run();
    await wait();
    // Buffers taken from the pool from here on and still held at the end (unlike memoryStats'
    // inUseBytes, not moved by the garbage collector returning earlier tests' tensors).
    const mark = poolMark();
    const allocations = memoryStats().allocations;
    const before = gpuCounters();
    for (let s = 0; s < 1000; s++) {
      run();
      // A wait now and then, so that the GPU keeps up and the garbage collector gets to run.
      if (s % 100 === 99) await wait();
    }
    await wait();
    const after = gpuCounters();
    assert.equal(step.mode, "replayed");
    assert.equal(inUseBytesSince(mark), 0, "memory taken and still held");
    assert.equal(memoryStats().allocations, allocations, "pool allocations");
    assert.equal(after.bindGroupCreations - before.bindGroupCreations, 0, "bind groups");
    assert.equal(after.bufferCreations - before.bufferCreations, 0, "buffers");
    assert.equal(after.uniformWrites - before.uniformWrites, 0, "uniform writes");
    disposeAll(step, opt, model, b.images);
  },
);

for (const window of [3, 2]) {
  gpuTest(
    `replayed Adam steps stay bit-identical to trainStep across table refills (window ${window})`,
    async () => {
      // The bias-correction table is refilled every `window` steps, some of them during replays
      // (whose restage then uploads before its first dispatch) and, with window 2, during the
      // recording itself (that upload, before the update's first dispatch, stays out of it).
      const saved = adamTableWindow.steps;
      adamTableWindow.steps = window;
      try {
        const make = (m: Module) => new Adam(m.parameters(), { lr: 1e-3, weightDecay: 1e-4 });
        const { eager, compiled, eagerOpt, compiledOpt } = pair(make);
        const step = new CompiledTrainStep(compiled, compiledOpt);
        const modes: string[] = [];
        const uploads: number[] = [];
        for (let s = 0; s < 10; s++) {
          const b = batch(s + 1);
          const want = trainStep(eager, eagerOpt, b);
          const before = gpuCounters();
          const got = step.run(b);
          uploads.push(gpuCounters().uploads - before.uploads);
          modes.push(step.mode);
          assert.equal(await got.loss.item(), await want.loss.item(), `loss of step ${s}`);
          disposeAll(got.loss, got.correct, want.loss, want.correct);
          b.images.dispose();
        }
        assert.deepEqual(modes, ["eager", "eager", "recorded", ...Array(7).fill("replayed")]);
        // Besides the labels, the refills upload the table: steps 4, 7 and 10 with window 3,
        // every odd step with window 2.
        const refills = window === 3 ? [2, 1, 1, 2, 1, 1, 2] : [1, 2, 1, 2, 1, 2, 1];
        assert.deepEqual(uploads.slice(3), refills);
        await assertSameModels(compiled, eager, "after 10 steps");
        assert.deepEqual(compiledOpt.stateDict().hyper, eagerOpt.stateDict().hyper);
        disposeAll(step, eagerOpt, compiledOpt, eager, compiled);
      } finally {
        adamTableWindow.steps = saved;
      }
    },
  );
}

// dst = src + v, v a per-step uniform.
const ADD_UNIFORM = kernel(
  "test_add_uniform",
  `struct Params { v: f32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3u) {
  dst[id.x] = src[id.x] + u.v;
}`,
  ["v"],
);

gpuTest("a restaged part may upload before its first command, not after it", async () => {
  const src = Tensor.from([1, 2, 3, 4]);
  const dst = Tensor.empty([4]);
  const upload = (values: number[]) =>
    writeBuffer(src.buffer, new Float32Array(values), src.byteOffset);
  const part = (v: number, before: number[] | null, after: number[] | null = null) => {
    if (before) upload(before);
    dispatch(ADD_UNIFORM, {
      dynamicUniforms: true,
      buffers: [src.binding, dst.binding],
      params: { v },
      workgroups: [1, 1, 1],
    });
    if (after) upload(after);
  };
  startRecording();
  markRestagePoint();
  part(10, [5, 6, 7, 8]);
  const rec = stopRecording();
  // The upload stays out of the recording, which holds the dispatch only.
  assert.equal(rec.invalid, null);
  assert.deepEqual(rec.commands.map((c) => c.kind), ["dispatch"]);
  assert.deepEqual(await dst.toArray(), new Float32Array([15, 16, 17, 18]));
  // With work pending (the upload then goes through a staging copy) and without.
  for (const pending of [true, false]) {
    if (pending) dst.fill(0);
    replayRecording(rec, () => part(100, [1, 2, 1, 2]));
    assert.deepEqual(await dst.toArray(), new Float32Array([101, 102, 101, 102]));
  }
  assert.throws(
    () => replayRecording(rec, () => part(100, null, [0, 0, 0, 0])),
    /an upload came where the recording has none/,
  );
  releaseRecording(rec);
  // While recording, an upload after the restaged part's first command spoils the recording.
  startRecording();
  markRestagePoint();
  part(1, null, [0, 0, 0, 0]);
  const spoiled = stopRecording();
  assert.match(spoiled.invalid ?? "", /uploads data from the CPU/);
  releaseRecording(spoiled);
  src.dispose();
  dst.dispose();
});

gpuTest(
  "sums: every run, replayed or not, adds loss x batch and the correct count into the sums",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 2 });
    const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
    const lossSum = Tensor.zeros([]);
    const correctSum = Tensor.zeros([]);
    const step = new CompiledTrainStep(model, opt, {
      sums: { loss: lossSum, correct: correctSum },
    });
    // What the GPU computes in float32: each loss times the batch size, added in order.
    let wantLoss = 0;
    let wantCorrect = 0;
    const modes: string[] = [];
    for (let s = 0; s < 7; s++) {
      // The last batch is smaller, so it runs as an ordinary step.
      const b = batch(s + 1, s === 6 ? 5 : 8);
      const { loss, correct } = step.run(b);
      modes.push(step.mode);
      wantLoss = Math.fround(wantLoss + Math.fround((await loss.item()) * b.labels.length));
      wantCorrect = Math.fround(wantCorrect + (await correct.item()));
      assert.equal(await lossSum.item(), wantLoss, `loss sum after step ${s}`);
      assert.equal(await correctSum.item(), wantCorrect, `correct sum after step ${s}`);
      if (s === 4) {
        // Reset in place between runs, as an epoch's end does: the replays go on adding.
        lossSum.fill(0);
        correctSum.fill(0);
        wantLoss = 0;
        wantCorrect = 0;
      }
      disposeAll(loss, correct, b.images);
    }
    assert.deepEqual(modes, [
      "eager",
      "eager",
      "recorded",
      "replayed",
      "replayed",
      "replayed",
      "eager",
    ]);
    disposeAll(step, opt, model, lossSum, correctSum);
  },
);

gpuTest("sums must be scalar tensors, and a disposed one is refused by run()", () => {
  const model = resnet(8, { numClasses: 4, seed: 3 });
  const opt = new SGD(model.parameters(), { lr: 0.05 });
  const vector = Tensor.zeros([2]);
  const scalar = Tensor.zeros([]);
  assert.throws(
    () => new CompiledTrainStep(model, opt, { sums: { loss: vector, correct: scalar } }),
    /sums\.loss must be a scalar Tensor \(shape \[\]\), got shape \[2\]/,
  );
  assert.throws(
    () => new CompiledTrainStep(model, opt, { sums: { loss: scalar } as never }),
    /sums\.correct must be a scalar Tensor/,
  );
  const other = Tensor.zeros([]);
  const step = new CompiledTrainStep(model, opt, { sums: { loss: scalar, correct: other } });
  other.dispose();
  const b = batch(1);
  assert.throws(() => step.run(b), /a tensor of options\.sums was disposed/);
  disposeAll(step, opt, model, vector, scalar, b.images);
});
