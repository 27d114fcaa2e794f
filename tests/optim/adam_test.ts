// optim.Adam and optim.AdamW against a float64 CPU implementation of PyTorch 1.13's rules, on
// random odd-sized parameters: with and without weight decay, per-parameter step counts when
// gradients are null, the state dict through a safetensors file, no allocation or submit in
// steady state, and option validation.
import assert from "node:assert/strict";
import {
  loadSafetensors,
  readSafetensorsMetadata,
  saveSafetensors,
} from "../../src/io/safetensors.ts";
import { Adam, type AdamOptions, adamTableWindow, AdamW } from "../../src/optim/adam.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, gpuTest } from "../_gpu.ts";
import {
  assertStepsAllocateNothing,
  gradients as sharedGradients,
  makeParams,
  setGrads,
  SHAPES,
  sizeOf,
} from "./_params.ts";

const TOL = { rtol: 1e-5, atol: 1e-7, maxRelL2: 1e-6 };

/** Gradients a tenth the size of the parameters, as Adam's tests have always used. */
function gradients(seed: number, step: number, present = SHAPES.map(() => true)) {
  return sharedGradients(seed, step, present, 0.1);
}

interface Hyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  decoupled: boolean;
}

interface RefState {
  m: Float64Array;
  v: Float64Array;
  t: number;
}

/** PyTorch 1.13's _single_tensor_adam / _single_tensor_adamw for one parameter, in float64. */
function adamReference(p: Float64Array, g: Float64Array, s: RefState, h: Hyper): void {
  s.t++;
  const bc1 = 1 - h.beta1 ** s.t;
  const bc2 = 1 - h.beta2 ** s.t;
  for (let j = 0; j < p.length; j++) {
    if (h.decoupled) p[j] *= 1 - h.lr * h.weightDecay;
    const gj = h.decoupled ? g[j] : g[j] + h.weightDecay * p[j];
    s.m[j] = h.beta1 * s.m[j] + (1 - h.beta1) * gj;
    s.v[j] = h.beta2 * s.v[j] + (1 - h.beta2) * gj * gj;
    p[j] -= (h.lr / bc1) * s.m[j] / (Math.sqrt(s.v[j]) / Math.sqrt(bc2) + h.eps);
  }
}

const freshState = () =>
  SHAPES.map((s) => ({
    m: new Float64Array(sizeOf(s)),
    v: new Float64Array(sizeOf(s)),
    t: 0,
  }));

const CASES: { name: string; Opt: typeof Adam; options: AdamOptions }[] = [
  { name: "Adam", Opt: Adam, options: {} },
  { name: "Adam", Opt: Adam, options: { lr: 0.01, weightDecay: 0.05 } },
  { name: "Adam", Opt: Adam, options: { lr: 3e-3, betas: [0.5, 0.9], eps: 1e-3 } },
  { name: "AdamW", Opt: AdamW, options: {} },
  { name: "AdamW", Opt: AdamW, options: { lr: 0.02, weightDecay: 0.1, betas: [0.8, 0.99] } },
  { name: "AdamW", Opt: AdamW, options: { weightDecay: 0 } },
];

for (const { name, Opt, options } of CASES) {
  gpuTest(
    `${name} matches the float64 rule over 4 steps with ${JSON.stringify(options)}`,
    async () => {
      const { params, ref } = makeParams(40);
      const opt = new Opt(params, options);
      const decoupled = Opt === AdamW;
      const h = {
        lr: options.lr ?? 1e-3,
        beta1: options.betas?.[0] ?? 0.9,
        beta2: options.betas?.[1] ?? 0.999,
        eps: options.eps ?? 1e-8,
        weightDecay: options.weightDecay ?? (decoupled ? 1e-2 : 0),
        decoupled,
      };
      assert.deepEqual(opt.betas, [h.beta1, h.beta2]);
      assert.equal(opt.weightDecay, h.weightDecay);
      const states = freshState();
      for (let step = 0; step < 4; step++) {
        const lr = h.lr * (1 - 0.2 * step); // a schedule changes lr between steps
        opt.lr = lr;
        const grads = gradients(3, step);
        setGrads(params, grads);
        opt.step();
        ref.forEach((p, k) => adamReference(p, grads[k]!, states[k], { ...h, lr }));
      }
      const { state, hyper } = opt.stateDict();
      assert.deepEqual(hyper.step, [4, 4, 4, 4, 4]);
      for (let k = 0; k < SHAPES.length; k++) {
        assertClose(await params[k].toArray(), ref[k], { ...TOL, what: `param ${k}` });
        assertClose(await state.get(`${k}.exp_avg`)!.toArray(), states[k].m, {
          ...TOL,
          what: `exp_avg ${k}`,
        });
        assertClose(await state.get(`${k}.exp_avg_sq`)!.toArray(), states[k].v, {
          ...TOL,
          atol: 1e-9,
          what: `exp_avg_sq ${k}`,
        });
      }
      opt.zeroGrad();
      opt.dispose();
      params.forEach((p) => p.dispose());
    },
  );
}

gpuTest("Adam skips null gradients and keeps one step count per parameter", async () => {
  const { params, ref } = makeParams(60);
  const initial = await Promise.all(params.map((p) => p.toArray()));
  const h = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled: true };
  const opt = new AdamW(params, { lr: h.lr, weightDecay: h.weightDecay });
  const states = freshState();
  const presence = [
    [true, false, true, false, true],
    [true, true, false, false, true],
    [false, true, true, false, true],
  ];
  for (let step = 0; step < 3; step++) {
    const grads = gradients(5, step, presence[step]);
    setGrads(params, grads);
    opt.step();
    ref.forEach((p, k) => {
      if (grads[k]) adamReference(p, grads[k]!, states[k], h);
    });
  }
  const { state, hyper } = opt.stateDict();
  assert.deepEqual(hyper.step, [2, 2, 2, 0, 3]);
  assert.deepEqual(opt.steps, [2, 2, 2, 0, 3]);
  // Parameter 3 never had a gradient: untouched (no decoupled decay either) and without state.
  assert.deepEqual(await params[3].toArray(), initial[3]);
  assert.equal(state.has("3.exp_avg") || state.has("3.exp_avg_sq"), false);
  for (const k of [0, 1, 2, 4]) {
    assertClose(await params[k].toArray(), ref[k], { ...TOL, what: `param ${k}` });
    assertClose(await state.get(`${k}.exp_avg`)!.toArray(), states[k].m, TOL);
  }
  opt.dispose();
  assert.deepEqual(opt.steps, [0, 0, 0, 0, 0]);
  params.forEach((p) => p.dispose());
});

for (const Opt of [Adam, AdamW]) {
  gpuTest(
    `${Opt.name} state dict through safetensors + JSON metadata resumes exactly like not stopping`,
    async () => {
      const { params: a } = makeParams(80);
      const optA = new Opt(a, { lr: 0.01, betas: [0.85, 0.995], eps: 1e-7, weightDecay: 0.02 });
      // Parameter 2 has no gradient on the first step, so step counts differ.
      setGrads(a, gradients(8, 0, [true, true, false, true, true]));
      optA.step();
      setGrads(a, gradients(8, 1));
      optA.step();
      const dir = await Deno.makeTempDir();
      const path = `${dir}/adam.safetensors`;
      try {
        const { state, hyper } = optA.stateDict();
        assert.deepEqual(hyper.step, [2, 2, 1, 2, 2]);
        await saveSafetensors(path, state, { hyper: JSON.stringify(hyper) });
        const b = await Promise.all(
          a.map(async (p) => Tensor.from(await p.toArray(), p.shape, { requiresGrad: true })),
        );
        const optB = new Opt(b); // defaults: the state dict restores the hyperparameters
        const loaded = await loadSafetensors(path);
        const { hyper: json } = await readSafetensorsMetadata(path);
        optB.loadStateDict({ state: loaded, hyper: JSON.parse(json) });
        loaded.forEach((t) => t.dispose());
        assert.deepEqual(optB.stateDict().hyper, hyper);
        for (let step = 2; step < 4; step++) {
          const grads = gradients(8, step);
          setGrads(a, grads);
          setGrads(b, grads);
          optA.step();
          optB.step();
        }
        for (let k = 0; k < SHAPES.length; k++) {
          assert.deepEqual(await b[k].toArray(), await a[k].toArray(), `param ${k}`);
          for (const key of [`${k}.exp_avg`, `${k}.exp_avg_sq`]) {
            assert.deepEqual(
              await optB.stateDict().state.get(key)!.toArray(),
              await optA.stateDict().state.get(key)!.toArray(),
              key,
            );
          }
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
}

gpuTest("Adam allocates nothing after its first step and never submits while encoding", () => {
  const { params } = makeParams(100);
  const opt = new Adam(params, { weightDecay: 1e-4 });
  assertStepsAllocateNothing(opt, params, 11, 1);
  opt.dispose();
  params.forEach((p) => p.dispose());
});

gpuTest("Adam and AdamW validate their options like PyTorch", () => {
  const p = Tensor.ones([3], { requiresGrad: true });
  for (const Opt of [Adam, AdamW]) {
    const make = (options: AdamOptions) => () => new Opt([p], options);
    assert.throws(make({ lr: -1e-3 }), RangeError);
    assert.throws(make({ eps: -1 }), RangeError);
    assert.throws(make({ weightDecay: -0.1 }), RangeError);
    assert.throws(make({ betas: [1, 0.999] }), /beta parameter at index 0/);
    assert.throws(make({ betas: [0.9, -0.1] }), /beta parameter at index 1/);
    assert.throws(make({ betas: [0.9, NaN] }), RangeError);
    assert.throws(make({ betas: [0.9] as unknown as [number, number] }), RangeError);
    assert.throws(() => new Opt([]), RangeError);
    assert.throws(() => new Opt([{} as Tensor]), TypeError);
    assert.equal(new Opt([p], { betas: [0, 0] }).betas[0], 0);
  }
  p.dispose();
});

gpuTest("Adam.loadStateDict() refuses partial state and step counts that do not match", () => {
  const a = Tensor.ones([2, 3], { requiresGrad: true });
  const b = Tensor.ones([5], { requiresGrad: true });
  const opt = new Adam([a, b]);
  const hyper = { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, step: [1, 0] };
  const full = { "0.exp_avg": Tensor.zeros([2, 3]), "0.exp_avg_sq": Tensor.zeros([2, 3]) };
  const bad = (state: Record<string, Tensor>, h: Record<string, unknown>, pattern: RegExp) =>
    assert.throws(
      () => opt.loadStateDict({ state, hyper: h as typeof hyper }),
      (e: Error) => pattern.test(e.message),
    );
  bad({ "0.exp_avg": full["0.exp_avg"] }, hyper, /missing keys 0.exp_avg_sq/);
  bad(full, { ...hyper, step: [0, 0] }, /step count is positive/);
  bad(full, { ...hyper, step: [1, 1] }, /parameters 1:/);
  bad(full, { ...hyper, step: [1] }, /step must hold 2/);
  bad(full, { ...hyper, step: [1.5, 0] }, /step must hold 2/);
  bad(full, { ...hyper, betas: [0.9, 1] }, /beta parameter at index 1/);
  bad({ ...full, "1.momentum_buffer": Tensor.zeros([5]) }, hyper, /unexpected key/);
  assert.deepEqual(opt.steps, [0, 0]);
  opt.loadStateDict({ state: full, hyper });
  assert.deepEqual(opt.stateDict().hyper, hyper);
  opt.dispose();
  a.dispose();
  b.dispose();
});

gpuTest(
  "Adam.loadStateDict() into a stepped optimizer resets its GPU step counts, across table refills",
  async () => {
    // Windows of 2 steps: the bias-correction table is refilled every other step.
    const saved = adamTableWindow.steps;
    adamTableWindow.steps = 2;
    try {
      const { params: a } = makeParams(90);
      const { params: b } = makeParams(91);
      const optA = new Adam(a, { lr: 0.01, weightDecay: 0.01 });
      const optB = new Adam(b, { lr: 0.01, weightDecay: 0.01 });
      // A takes 5 steps, parameter 2 skipping the first; B 7 steps of other gradients, so that
      // the loaded step counts lie inside B's current table window.
      for (let step = 0; step < 5; step++) {
        setGrads(a, gradients(12, step, SHAPES.map((_, k) => k !== 2 || step > 0)));
        optA.step();
      }
      for (let step = 0; step < 7; step++) {
        setGrads(b, gradients(13, step));
        optB.step();
      }
      for (let k = 0; k < SHAPES.length; k++) b[k].copyFrom(a[k]);
      optB.loadStateDict(optA.stateDict());
      assert.deepEqual(optB.steps, [5, 5, 4, 5, 5]);
      for (let step = 5; step < 10; step++) {
        const grads = gradients(12, step);
        setGrads(a, grads);
        setGrads(b, grads);
        optA.step();
        optB.step();
      }
      assert.deepEqual(optB.steps, optA.steps);
      for (let k = 0; k < SHAPES.length; k++) {
        assert.deepEqual(await b[k].toArray(), await a[k].toArray(), `param ${k}`);
      }
      optA.zeroGrad();
      optB.zeroGrad();
      optA.dispose();
      optB.dispose();
      [...a, ...b].forEach((p) => p.dispose());
    } finally {
      adamTableWindow.steps = saved;
    }
  },
);

gpuTest("Adam's table window does not change its results", async () => {
  const run = async (window: number) => {
    const saved = adamTableWindow.steps;
    adamTableWindow.steps = window;
    try {
      const { params } = makeParams(92);
      const opt = new Adam(params, { lr: 0.01 });
      for (let step = 0; step < 7; step++) {
        setGrads(params, gradients(14, step, SHAPES.map((_, k) => k !== 3 || step % 3 !== 0)));
        opt.step();
      }
      const values = await Promise.all(params.map((p) => p.toArray()));
      opt.zeroGrad();
      opt.dispose();
      params.forEach((p) => p.dispose());
      return values;
    } finally {
      adamTableWindow.steps = saved;
    }
  };
  const wide = await run(1024);
  for (const window of [1, 2, 3]) assert.deepEqual(await run(window), wide, `window ${window}`);
});
