import assert from "node:assert/strict";
import { correctCount, crossEntropy } from "../../src/ops/loss.ts";
import { Tensor } from "../../src/tensor.ts";
import { tidy } from "../../src/scope.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { Generator } from "../../src/random.ts";
import { assertClose, dot, f32, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

function randomTargets(n: number, c: number, seed: number): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: n }, () => g.nextUint32() % c);
}

type Reduction = "mean" | "sum" | "none";

/** float64 per-row cross-entropy through log-sum-exp, reduced. */
function ceRef(x: Float64Array, t: Int32Array, n: number, c: number, reduction: Reduction) {
  const rows = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    for (let j = 0; j < c; j++) mx = Math.max(mx, x[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x[i * c + j] - mx);
    rows[i] = mx + Math.log(s) - x[i * c + t[i]];
  }
  if (reduction === "none") return rows;
  const total = rows.reduce((a, b) => a + b, 0);
  return Float64Array.of(reduction === "mean" ? total / n : total);
}

/** float64 gradient of the reduced loss for output gradient r: (softmax - onehot) * r. */
function ceGradRef(
  x: Float64Array,
  t: Int32Array,
  n: number,
  c: number,
  reduction: Reduction,
  r: Float64Array,
): Float64Array {
  const g = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    for (let j = 0; j < c; j++) mx = Math.max(mx, x[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x[i * c + j] - mx);
    const scale = reduction === "none" ? r[i] : reduction === "mean" ? r[0] / n : r[0];
    for (let j = 0; j < c; j++) {
      const p = Math.exp(x[i * c + j] - mx) / s;
      g[i * c + j] = (p - (j === t[i] ? 1 : 0)) * scale;
    }
  }
  return g;
}

const REDUCTIONS: Reduction[] = ["mean", "sum", "none"];

gpuTest("crossEntropy() mean/sum/none matches float64 references and gradients", async () => {
  const sizes = [[1, 3], [5, 10], [33, 7]];
  for (const [s, [n, c]] of sizes.entries()) {
    const x = f32(randomValues(n * c, 10 + s, 3));
    const t = randomTargets(n, c, 20 + s);
    for (const reduction of REDUCTIONS) {
      const what = `crossEntropy N=${n} C=${c} ${reduction}`;
      const tx = Tensor.from(x, [n, c], { requiresGrad: true });
      const loss = crossEntropy(tx, t, { reduction });
      assert.deepEqual(loss.shape, reduction === "none" ? [n] : []);
      assertClose(await loss.toArray(), ceRef(x, t, n, c, reduction), { what });
      const r = reduction === "none" ? f32(randomValues(n, 30 + s)) : Float64Array.of(0.75);
      loss.backward(Tensor.from(r, loss.shape));
      const g = ceGradRef(x, t, n, c, reduction, r);
      assertClose(await tx.grad!.toArray(), g, { what: `${what} grad` });
      if (s === 1) {
        const numeric = finiteDifferences((v) => dot(ceRef(v, t, n, c, reduction), r), x);
        assertClose(g, numeric, { rtol: 1e-6, atol: 1e-8, maxRelL2: 1e-6 });
      }
    }
  }
});

gpuTest("crossEntropy() stays finite and accurate for logits of +-100", async () => {
  const n = 6;
  const c = 5;
  // exp(100) overflows float32: only a max-subtracted log-sum-exp survives these.
  const x = f32(randomValues(n * c, 3, 100));
  // A row whose target logit is far below the others: loss about 200.
  x.set([100, -100, 99.5, -3, 0], 0);
  const t = Int32Array.from([1, 0, 4, 2, 3, 1]);
  for (const reduction of REDUCTIONS) {
    const tx = Tensor.from(x, [n, c], { requiresGrad: true });
    const loss = crossEntropy(tx, t, { reduction });
    const values = await loss.toArray();
    assert.ok(values.every(Number.isFinite), `${reduction}: ${values}`);
    assertClose(values, ceRef(x, t, n, c, reduction), { what: reduction });
    const r = reduction === "none" ? f32(randomValues(n, 4)) : Float64Array.of(1);
    loss.backward(Tensor.from(r, loss.shape));
    assertClose(await tx.grad!.toArray(), ceGradRef(x, t, n, c, reduction, r), {
      what: `${reduction} grad`,
    });
  }
});

gpuTest("crossEntropy() takes targets as a Tensor of class indices too", async () => {
  const n = 7;
  const c = 4;
  const x = f32(randomValues(n * c, 5));
  const t = randomTargets(n, c, 6);
  const targets = Tensor.from(Float32Array.from(t));
  const tx = Tensor.from(x, [n, c], { requiresGrad: true });
  const loss = crossEntropy(tx, targets);
  assertClose([await loss.item()], ceRef(x, t, n, c, "mean"));
  loss.backward();
  assertClose(await tx.grad!.toArray(), ceGradRef(x, t, n, c, "mean", Float64Array.of(1)));
  assert.equal(targets.disposed, false, "a caller's targets tensor is not disposed");
  assert.equal(crossEntropy(Tensor.from(x, [n, c]), targets).requiresGrad, false);
});

gpuTest("crossEntropy() gives NaN for out-of-range targets given as a Tensor", async () => {
  const x = Tensor.from(randomValues(3 * 4, 8), [3, 4], { requiresGrad: true });
  const rows = await crossEntropy(x, Tensor.from([1, 4, -1]), { reduction: "none" }).toArray();
  assert.ok(Number.isFinite(rows[0]));
  assert.ok(Number.isNaN(rows[1]) && Number.isNaN(rows[2]));
  const loss = crossEntropy(x, Tensor.from([1, 2, 1.5]));
  assert.ok(Number.isNaN(await loss.item()));
  loss.backward();
  const g = await x.grad!.toArray();
  assert.ok(g.slice(0, 8).every(Number.isFinite));
  assert.ok(g.slice(8).every(Number.isNaN));
});

gpuTest("correctCount() counts first-max arg-max hits like the CPU", async () => {
  const n = 37;
  const c = 6;
  // Coarse values so that ties occur; the first maximum wins, as in torch.argmax.
  const x = f32(randomValues(n * c, 9).map((v) => Math.round(v * 2)));
  const t = randomTargets(n, c, 10);
  let expected = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < c; j++) if (x[i * c + j] > x[i * c + best]) best = j;
    if (best === t[i]) expected++;
  }
  const logits = Tensor.from(x, [n, c], { requiresGrad: true });
  const count = correctCount(logits, t);
  assert.deepEqual(count.shape, []);
  assert.equal(count.requiresGrad, false);
  assert.equal(await count.item(), expected);
  assert.equal(await correctCount(logits, Tensor.from(Float32Array.from(t))).item(), expected);
  const two = Tensor.from([1, 1, 0, 0, 2, 2], [2, 3]);
  assert.equal(await correctCount(two, Int32Array.from([0, 1])).item(), 2);
  assert.equal(await correctCount(two, Tensor.from([1, 7])).item(), 0);
});

gpuTest("crossEntropy() and correctCount() leave no buffers behind", async () => {
  const x = Tensor.from(randomValues(5 * 3, 11), [5, 3], { requiresGrad: true });
  const t = Int32Array.from([0, 1, 2, 1, 0]);
  await x.toArray();
  const mark = poolMark();
  for (const reduction of REDUCTIONS) {
    tidy(() => {
      const loss = crossEntropy(x, t, { reduction });
      loss.backward(Tensor.ones(loss.shape));
      crossEntropy(x.detach(), t, { reduction });
      correctCount(x, t);
    });
    x.grad!.dispose();
    x.grad = null;
    assert.equal(inUseBytesSince(mark), 0, reduction);
  }
});

gpuTest("crossEntropy() and correctCount() reject bad logits, targets and options", () => {
  const x = Tensor.zeros([3, 4]);
  const t = Int32Array.from([0, 1, 2]);
  for (const op of [crossEntropy, correctCount]) {
    assert.throws(() => op(Tensor.zeros([12]), t), RangeError);
    assert.throws(() => op(Tensor.zeros([3, 4, 1]), t), RangeError);
    assert.throws(() => op(Tensor.zeros([0, 4]), new Int32Array(0)), RangeError);
    assert.throws(() => op(x, Int32Array.from([0, 1])), /N = 3 class indices .* got 2/);
    assert.throws(() => op(x, Int32Array.from([0, 4, -1])), (e: Error) => {
      return e instanceof RangeError && /targets\[1\] is 4/.test(e.message);
    });
    assert.throws(() => op(x, Int32Array.from([-1, 0, 0])), /targets\[0\] is -1/);
    assert.throws(() => op(x, Tensor.zeros([4])), RangeError);
    assert.throws(() => op(x, Tensor.zeros([3, 1])), RangeError);
    assert.throws(() => op(x, [0, 1, 2] as unknown as Int32Array), TypeError);
    assert.throws(() => op(null as unknown as Tensor, t), TypeError);
  }
  assert.throws(() => crossEntropy(x, t, { reduction: "avg" as "mean" }), RangeError);
  assert.throws(() => crossEntropy(x, t, { reduction: 1 as unknown as "mean" }), TypeError);
});
