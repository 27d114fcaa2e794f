// optim.SGD against a float64 CPU implementation of PyTorch 1.13's rule, on random odd-sized
// parameters: every option combination, skipped null gradients, the state dict through a
// safetensors file, no allocation or submit in steady state, and option validation.
import assert from "node:assert/strict";
import {
  loadSafetensors,
  readSafetensorsMetadata,
  saveSafetensors,
} from "../../src/io/safetensors.ts";
import { mulScalar } from "../../src/ops/elementwise.ts";
import { SGD, type SGDOptions } from "../../src/optim/sgd.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, gpuTest } from "../_gpu.ts";
import { assertStepsAllocateNothing, gradients, makeParams, setGrads, SHAPES } from "./_params.ts";

const TOL = { rtol: 1e-5, atol: 1e-6, maxRelL2: 1e-6 };

interface Hyper {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/** PyTorch 1.13's _single_tensor_sgd for one parameter, in float64; updates p and state. */
function sgdReference(
  p: Float64Array,
  g: Float64Array,
  state: { buf: Float64Array | null },
  h: Hyper,
): void {
  const d = g.map((gj, j) => gj + h.weightDecay * p[j]);
  let step: Float64Array = d;
  if (h.momentum !== 0) {
    if (!state.buf) {
      state.buf = Float64Array.from(d);
    } else {
      const buf = state.buf;
      for (let j = 0; j < buf.length; j++) buf[j] = buf[j] * h.momentum + (1 - h.dampening) * d[j];
    }
    const buf = state.buf;
    step = h.nesterov ? d.map((dj, j) => dj + h.momentum * buf[j]) : buf;
  }
  for (let j = 0; j < p.length; j++) p[j] -= h.lr * step[j];
}

const COMBOS: Omit<Hyper, "lr">[] = [];
for (const weightDecay of [0, 0.01]) {
  COMBOS.push({ momentum: 0, dampening: 0, weightDecay, nesterov: false });
  COMBOS.push({ momentum: 0, dampening: 0.3, weightDecay, nesterov: false });
  COMBOS.push({ momentum: 0.9, dampening: 0, weightDecay, nesterov: false });
  COMBOS.push({ momentum: 0.9, dampening: 0.3, weightDecay, nesterov: false });
  COMBOS.push({ momentum: 0.9, dampening: 0, weightDecay, nesterov: true });
}

gpuTest(
  "SGD matches the float64 rule over 3 steps for every momentum/dampening/nesterov/decay",
  async () => {
    for (const [c, combo] of COMBOS.entries()) {
      const what = JSON.stringify(combo);
      const { params, ref } = makeParams(10 * c);
      const opt = new SGD(params, { lr: 0.1, ...combo });
      const states = SHAPES.map(() => ({ buf: null as Float64Array | null }));
      for (let step = 0; step < 3; step++) {
        const lr = 0.1 * (1 - 0.25 * step); // a schedule changes lr between steps
        opt.lr = lr;
        const grads = gradients(c, step);
        setGrads(params, grads);
        opt.step();
        ref.forEach((p, k) => sgdReference(p, grads[k]!, states[k], { lr, ...combo }));
      }
      const { state } = opt.stateDict();
      assert.equal(state.size, combo.momentum ? SHAPES.length : 0, what);
      for (let k = 0; k < SHAPES.length; k++) {
        assertClose(await params[k].toArray(), ref[k], { ...TOL, what: `${what} param ${k}` });
        if (combo.momentum) {
          const buf = state.get(`${k}.momentum_buffer`)!;
          assert.deepEqual(buf.shape, SHAPES[k]);
          assertClose(await buf.toArray(), states[k].buf!, { ...TOL, what: `${what} buf ${k}` });
        }
      }
      opt.zeroGrad();
      assert.ok(params.every((p) => p.grad === null));
      opt.dispose();
      params.forEach((p) => p.dispose());
    }
  },
);

gpuTest("SGD skips parameters whose grad is null and creates their buffer later", async () => {
  const { params, ref } = makeParams(500);
  const initial = await Promise.all(params.map((p) => p.toArray()));
  const hyper = { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3, nesterov: false };
  const opt = new SGD(params, hyper);
  const states = SHAPES.map(() => ({ buf: null as Float64Array | null }));
  const presence = [
    [true, false, true, false, true],
    [true, true, false, false, true],
    [false, true, true, false, true],
  ];
  for (let step = 0; step < 3; step++) {
    const grads = gradients(7, step, presence[step]);
    setGrads(params, grads);
    opt.step();
    ref.forEach((p, k) => {
      if (grads[k]) sgdReference(p, grads[k]!, states[k], hyper);
    });
    if (step === 0) {
      assert.deepEqual([...opt.stateDict().state.keys()], [
        "0.momentum_buffer",
        "2.momentum_buffer",
        "4.momentum_buffer",
      ]);
    }
  }
  // Parameter 3 never had a gradient: untouched, bit for bit, and without state.
  assert.deepEqual(await params[3].toArray(), initial[3]);
  assert.equal(opt.stateDict().state.has("3.momentum_buffer"), false);
  for (const k of [0, 1, 2, 4]) {
    assertClose(await params[k].toArray(), ref[k], { ...TOL, what: `param ${k}` });
    const buf = opt.stateDict().state.get(`${k}.momentum_buffer`)!;
    assertClose(await buf.toArray(), states[k].buf!, { ...TOL, what: `buffer ${k}` });
  }
  opt.dispose();
  params.forEach((p) => p.dispose());
});

gpuTest(
  "SGD state dict through safetensors + JSON metadata resumes exactly like not stopping",
  async () => {
    const hyper = { lr: 0.07, momentum: 0.8, dampening: 0, weightDecay: 5e-3, nesterov: true };
    const { params: a } = makeParams(900);
    const optA = new SGD(a, hyper);
    for (let step = 0; step < 2; step++) {
      setGrads(a, gradients(9, step));
      optA.step();
    }
    optA.lr = 0.03;
    const dir = await Deno.makeTempDir();
    const path = `${dir}/sgd.safetensors`;
    try {
      const { state, hyper: saved } = optA.stateDict();
      await saveSafetensors(path, state, { hyper: JSON.stringify(saved) });
      const b = await Promise.all(
        a.map(async (p) => Tensor.from(await p.toArray(), p.shape, { requiresGrad: true })),
      );
      // Different hyperparameters at construction: the state dict restores them.
      const optB = new SGD(b, { lr: 1 });
      const loaded = await loadSafetensors(path);
      const metadata = await readSafetensorsMetadata(path);
      optB.loadStateDict({ state: loaded, hyper: JSON.parse(metadata.hyper) });
      loaded.forEach((t) => t.dispose()); // copied: the optimizer keeps its own
      assert.deepEqual(optB.stateDict().hyper, { ...hyper, lr: 0.03 });
      for (let step = 2; step < 4; step++) {
        const grads = gradients(9, step);
        setGrads(a, grads);
        setGrads(b, grads);
        optA.step();
        optB.step();
      }
      for (let k = 0; k < SHAPES.length; k++) {
        assert.deepEqual(await b[k].toArray(), await a[k].toArray(), `param ${k}`);
        const key = `${k}.momentum_buffer`;
        assert.deepEqual(
          await optB.stateDict().state.get(key)!.toArray(),
          await optA.stateDict().state.get(key)!.toArray(),
        );
      }
      optB.dispose();
      b.forEach((p) => p.dispose());
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    optA.dispose();
    a.forEach((p) => p.dispose());
  },
);

gpuTest("SGD allocates nothing after its first step and never submits while encoding", () => {
  const { params } = makeParams(1300);
  const opt = new SGD(params, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  assertStepsAllocateNothing(opt, params, 13);
  opt.dispose();
  params.forEach((p) => p.dispose());
});

gpuTest("SGD validates its parameters and options like PyTorch", () => {
  const p = Tensor.ones([3], { requiresGrad: true });
  const make = (options: Partial<SGDOptions>) => () =>
    new SGD([p], { lr: 0.1, ...options } as SGDOptions);
  assert.throws(make({ lr: -0.1 }), RangeError);
  assert.throws(make({ lr: NaN }), RangeError);
  assert.throws(make({ momentum: -0.5 }), RangeError);
  assert.throws(make({ dampening: -1 }), RangeError);
  assert.throws(make({ weightDecay: -1e-4 }), RangeError);
  assert.throws(make({ weightDecay: Infinity }), RangeError);
  assert.throws(make({ nesterov: true }), /Nesterov momentum requires a momentum/);
  assert.throws(make({ nesterov: true, momentum: 0.9, dampening: 0.1 }), RangeError);
  assert.throws(() => new SGD([p], {} as SGDOptions), TypeError);
  assert.throws(() => new SGD([], { lr: 0.1 }), RangeError);
  assert.throws(() => new SGD([p, p], { lr: 0.1 }), /appears twice/);
  assert.throws(() => new SGD([p, 3 as unknown as Tensor], { lr: 0.1 }), TypeError);
  assert.throws(() => new SGD(p as unknown as Tensor[], { lr: 0.1 }), TypeError);
  assert.throws(() => new SGD([mulScalar(p, 2)], { lr: 0.1 }), /not a leaf/);
  const opt = new SGD(new Set([p]), { lr: 0.1, momentum: 0.9 });
  assert.throws(() => opt.lr = -1, RangeError);
  assert.equal(opt.lr, 0.1);
  p.grad = Tensor.ones([4]);
  assert.throws(() => opt.step(), /gradient of shape \[4\]/);
  p.grad.dispose();
  p.grad = null;
  p.dispose();
});

gpuTest("SGD.loadStateDict() names every problem and changes nothing on failure", () => {
  const a = Tensor.ones([2, 3], { requiresGrad: true });
  const b = Tensor.ones([4], { requiresGrad: true });
  const opt = new SGD([a, b], { lr: 0.1, momentum: 0.9 });
  const hyper = { lr: 0.5, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false };
  const bad = (state: Record<string, Tensor>, h: Record<string, unknown>, pattern: RegExp) =>
    assert.throws(
      () => opt.loadStateDict({ state, hyper: h as typeof hyper }),
      (e: Error) => pattern.test(e.message),
    );
  bad({ "0.momentum_buffer": Tensor.zeros([3, 2]) }, hyper, /"0.momentum_buffer" has shape/);
  bad({ "2.momentum_buffer": Tensor.zeros([4]) }, hyper, /unexpected key "2.momentum_buffer"/);
  bad({ "1.exp_avg": Tensor.zeros([4]) }, hyper, /unexpected key "1.exp_avg"/);
  bad({}, { ...hyper, lr: undefined, foo: 1 }, /unknown hyperparameters: foo/);
  bad({}, { lr: 0.5 }, /missing hyperparameters: momentum/);
  bad({}, { ...hyper, dampening: 0.5, nesterov: true }, /Nesterov/);
  bad({}, { ...hyper, lr: -1 }, /lr/);
  assert.equal(opt.lr, 0.1, "a failed load changed lr");
  opt.loadStateDict({ state: { "1.momentum_buffer": Tensor.zeros([4]) }, hyper });
  assert.equal(opt.lr, 0.5);
  assert.deepEqual([...opt.stateDict().state.keys()], ["1.momentum_buffer"]);
  opt.dispose();
  a.dispose();
  b.dispose();
});
