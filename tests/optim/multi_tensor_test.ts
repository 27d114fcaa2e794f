// The multi-tensor optimizer step: the optimizers move their parameters into flat buffers,
// backward writes gradients into their slots, and one dispatch updates every parameter. Checked
// against the per-parameter kernels (gradients assigned by hand, which stay out of the slots):
// bit-identical results for SGD and Adam/AdamW over odd-sized parameters, skipped parameters
// untouched, ops on flattened parameters equal to ops on plain ones, dispatch counts of a
// ResNet-20 step, state and checkpoints, dispose, two optimizers over the same parameters.
import assert from "node:assert/strict";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { loadSafetensors, saveSafetensors } from "../../src/io/safetensors.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Adam, type AdamOptions, AdamW } from "../../src/optim/adam.ts";
import { clipGradNorm } from "../../src/optim/clip_grad.ts";
import type { Optimizer } from "../../src/optim/optimizer.ts";
import { SGD, type SGDOptions } from "../../src/optim/sgd.ts";
import { tidy } from "../../src/scope.ts";
import { gradDestination, Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";
import { gradients, makeParams, SHAPES } from "./_params.ts";

/** Gives each parameter its gradient in its slot, as backward does (null drops it). */
function setSlotGrads(params: Tensor[], grads: (Float64Array | null)[]): void {
  params.forEach((p, k) => {
    p.grad?.dispose();
    p.grad = null;
    const g = grads[k];
    if (!g) return;
    const slot = gradDestination(p);
    const values = Tensor.from(g, p.shape);
    slot.copyFrom(values);
    values.dispose();
    p.grad = slot;
  });
}

/** Replaces each gradient with a tensor of its own (outside the slots). */
function setOwnGrads(params: Tensor[], grads: (Float64Array | null)[]): void {
  params.forEach((p, k) => {
    p.grad?.dispose();
    const g = grads[k];
    p.grad = g ? Tensor.from(g, p.shape) : null;
  });
}

async function values(params: Tensor[]): Promise<Float32Array[]> {
  return await Promise.all(params.map((p) => p.toArray()));
}

/**
 * Runs `make` twice over equal parameters for 4 steps, one with slot gradients (one dispatch a
 * step) and one with gradients of their own (the per-parameter kernels), parameter 1 without a
 * gradient in steps 0 and 2; asserts equal parameters and state after each step.
 */
async function assertMultiEqualsSingle(make: (params: Tensor[]) => Optimizer): Promise<void> {
  const a = makeParams(3);
  const b = makeParams(3);
  const multi = make(a.params);
  const single = make(b.params);
  for (let step = 0; step < 4; step++) {
    const present = SHAPES.map((_, k) => !(k === 1 && step % 2 === 0));
    const grads = gradients(5, step, present);
    const skipped = await a.params[1].toArray();
    setSlotGrads(a.params, grads);
    setOwnGrads(b.params, grads);
    const before = gpuCounters().dispatches;
    multi.step();
    // Adam: adam_prepare, then one update whatever the step counts (parameter 1 lags the others
    // after step 0).
    const expected = multi instanceof Adam ? 2 : 1;
    assert.equal(gpuCounters().dispatches - before, expected, `step ${step}: dispatches`);
    single.step();
    const [pa, pb] = [await values(a.params), await values(b.params)];
    pa.forEach((v, k) => assert.deepEqual(v, pb[k], `step ${step}, parameter ${k}`));
    if (!present[1]) assert.deepEqual(pa[1], skipped, `step ${step}: parameter 1 untouched`);
    const sa = multi.stateDict().state;
    const sb = single.stateDict().state;
    assert.deepEqual([...sa.keys()].sort(), [...sb.keys()].sort());
    for (const [key, t] of sa) assert.deepEqual(await t.toArray(), await sb.get(key)!.toArray());
  }
  multi.zeroGrad();
  single.zeroGrad();
  multi.dispose();
  single.dispose();
  for (const p of [...a.params, ...b.params]) p.dispose();
}

const SGD_CASES: SGDOptions[] = [
  { lr: 0.1 },
  { lr: 0.1, momentum: 0.9 },
  { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 1e-2 },
  { lr: 0.05, momentum: 0.8, nesterov: true, weightDecay: 5e-4 },
];

for (const options of SGD_CASES) {
  gpuTest(
    `SGD ${JSON.stringify(options)}: the multi-tensor step equals the per-parameter one`,
    () => assertMultiEqualsSingle((params) => new SGD(params, options)),
  );
}

const ADAM_CASES: [string, AdamOptions][] = [
  ["Adam", { lr: 1e-2 }],
  ["Adam", { lr: 1e-2, weightDecay: 1e-2, betas: [0.8, 0.99] }],
  ["AdamW", { lr: 1e-2, weightDecay: 5e-2 }],
];

for (const [name, options] of ADAM_CASES) {
  gpuTest(
    `${name} ${JSON.stringify(options)}: the multi-tensor step equals the per-parameter one`,
    () =>
      assertMultiEqualsSingle((params) =>
        name === "Adam" ? new Adam(params, options) : new AdamW(params, options)
      ),
  );
}

gpuTest(
  "Adam with parameters at different step counts: one update dispatch, exact",
  async () => {
    const a = makeParams(7);
    const b = makeParams(7);
    const multi = new Adam(a.params, { lr: 1e-2 });
    const single = new Adam(b.params, { lr: 1e-2 });
    for (let step = 0; step < 3; step++) {
      // Parameter 1 has no gradient in step 0: afterwards its step count lags the others'.
      const grads = gradients(9, step, SHAPES.map((_, k) => k !== 1 || step > 0));
      setSlotGrads(a.params, grads);
      setOwnGrads(b.params, grads);
      const before = gpuCounters().dispatches;
      multi.step();
      // adam_prepare and one adam_multi_step, whether the step counts differ or not.
      assert.equal(gpuCounters().dispatches - before, 2);
      single.step();
    }
    assert.deepEqual(multi.steps, [3, 2, 3, 3, 3]);
    const [pa, pb] = [await values(a.params), await values(b.params)];
    pa.forEach((v, k) => assert.deepEqual(v, pb[k], `parameter ${k}`));
    multi.dispose();
    single.dispose();
    for (const p of [...a.params, ...b.params]) p.dispose();
  },
);

/** Loss, then every parameter's gradient, of one forward and backward of `model`. */
async function lossAndGrads(model: ReturnType<typeof resnet>, x: Tensor): Promise<Float32Array[]> {
  const loss = tidy(() => {
    const loss = crossEntropy(model.forward(x), new Int32Array([1, 3]));
    loss.backward();
    return loss;
  });
  const out = [await loss.toArray(), ...await values(model.parameters().map((p) => p.grad!))];
  loss.dispose();
  return out;
}

gpuTest("conv2d, batch norm and linear on flattened parameters match plain ones", async () => {
  const plain = resnet(8, { numClasses: 4, seed: 4 });
  const flat = resnet(8, { numClasses: 4, seed: 4 });
  const optimizer = new SGD(flat.parameters(), { lr: 0.1, momentum: 0.9 });
  assert.ok(flat.parameters().slice(1).every((p) => p.byteOffset > 0), "flattened");
  const x = Tensor.randn([2, 3, 8, 8], { seed: 5 });
  const expected = await lossAndGrads(plain, x);
  const actual = await lossAndGrads(flat, x);
  actual.forEach((v, k) => assert.deepEqual(v, expected[k], `loss, then gradient ${k - 1}`));
  // A second backward without zeroGrad accumulates (the new part outside the slots).
  await lossAndGrads(flat, x);
  await lossAndGrads(plain, x);
  const [ga, gb] = [flat, plain].map((m) => m.parameters().map((p) => p.grad!));
  for (let k = 0; k < ga.length; k++) {
    assert.deepEqual(await ga[k].toArray(), await gb[k].toArray(), `accumulated gradient ${k}`);
  }
  // Every gradient is in its slot: a step is one dispatch.
  const before = gpuCounters().dispatches;
  optimizer.step();
  assert.equal(gpuCounters().dispatches - before, 1);
  optimizer.dispose();
  plain.dispose();
  flat.dispose();
  x.dispose();
});

for (const which of ["SGD", "Adam"] as const) {
  gpuTest(`a ResNet-20 ${which} step is one dispatch, not one per two parameters`, () => {
    const model = resnet(20, { numClasses: 10, seed: 1 });
    const optimizer = which === "SGD"
      ? new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 })
      : new Adam(model.parameters(), { lr: 1e-3 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 2 });
    for (let step = 0; step < 2; step++) {
      tidy(() => {
        optimizer.zeroGrad();
        crossEntropy(model.forward(x), new Int32Array([1, 7])).backward();
        const before = gpuCounters().dispatches;
        optimizer.step();
        const dispatches = gpuCounters().dispatches - before;
        assert.ok(dispatches >= 1 && dispatches <= 3, `${dispatches} dispatches`);
      });
    }
    optimizer.dispose();
    model.dispose();
    x.dispose();
  });
}

gpuTest("clipGradNorm scales gradients in their slots like gradients of their own", async () => {
  const a = makeParams(11);
  const b = makeParams(11);
  const opt = new SGD(a.params, { lr: 0.1 });
  const grads = gradients(12, 0, SHAPES.map(() => true), 3);
  setSlotGrads(a.params, grads);
  setOwnGrads(b.params, grads);
  const na = clipGradNorm(a.params, 0.5);
  const nb = clipGradNorm(b.params, 0.5);
  assert.equal(await na.item(), await nb.item());
  for (let k = 0; k < SHAPES.length; k++) {
    assert.deepEqual(await a.params[k].grad!.toArray(), await b.params[k].grad!.toArray());
  }
  na.dispose();
  nb.dispose();
  opt.zeroGrad();
  opt.dispose();
  for (const p of [...a.params, ...b.params]) p.dispose();
});

gpuTest(
  "a flattened model saves, loads and stays usable after its optimizer is disposed",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 6 });
    const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 7 });
    tidy(() => {
      crossEntropy(model.forward(x), new Int32Array([0, 2])).backward();
      optimizer.step();
      optimizer.zeroGrad();
    });
    const path = await Deno.makeTempFile({ suffix: ".safetensors" });
    await saveSafetensors(path, model.stateDict());
    const loaded = await loadSafetensors(path);
    const copy = resnet(8, { numClasses: 4, seed: 99 });
    copy.loadStateDict(loaded);
    for (const [name, t] of model.stateDict()) {
      assert.deepEqual(await copy.stateDict().get(name)!.toArray(), await t.toArray(), name);
    }
    // Loading into the flattened model writes into its slices.
    const fresh = resnet(8, { numClasses: 4, seed: 99 });
    const versions = model.parameters().map((p) => p.version);
    model.loadStateDict(fresh.stateDict());
    model.parameters().forEach((p, k) => assert.ok(p.version > versions[k]));
    for (const [name, t] of fresh.stateDict()) {
      assert.deepEqual(await model.stateDict().get(name)!.toArray(), await t.toArray(), name);
    }
    // Disposed, the optimizer leaves the parameters (and a second optimizer) working.
    optimizer.dispose();
    const expected = await lossAndGrads(fresh, x);
    assert.deepEqual(await lossAndGrads(model, x), expected);
    model.zeroGrad();
    fresh.zeroGrad();
    for (const d of [loaded]) for (const t of d.values()) t.dispose();
    await Deno.remove(path);
    for (const m of [model, copy, fresh]) m.dispose();
    x.dispose();
  },
);

gpuTest("two optimizers over the same parameters both update them correctly", async () => {
  const a = makeParams(13);
  const b = makeParams(13);
  const first = new SGD(a.params, { lr: 0.1, momentum: 0.9 });
  const second = new SGD(a.params, { lr: 0.1, momentum: 0.9 });
  const refFirst = new SGD(b.params, { lr: 0.1, momentum: 0.9 });
  const refSecond = new SGD(b.params, { lr: 0.1, momentum: 0.9 });
  for (let step = 0; step < 2; step++) {
    const grads = gradients(14, step);
    setSlotGrads(a.params, grads);
    setOwnGrads(b.params, grads);
    first.step();
    second.step();
    refFirst.step();
    refSecond.step();
  }
  const [pa, pb] = [await values(a.params), await values(b.params)];
  pa.forEach((v, k) => assert.deepEqual(v, pb[k], `parameter ${k}`));
  for (const o of [first, second, refFirst, refSecond]) {
    o.zeroGrad();
    o.dispose();
  }
  for (const p of [...a.params, ...b.params]) p.dispose();
});
