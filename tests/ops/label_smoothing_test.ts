import assert from "node:assert/strict";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Tensor } from "../../src/tensor.ts";
import { Generator } from "../../src/random.ts";
import { assertClose, dot, finiteDifferences, gpuTest, randomValues } from "../_gpu.ts";

type Reduction = "mean" | "sum" | "none";

const fixture = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/bookkeeping_torch.json", import.meta.url)),
).cross_entropy as {
  n: number;
  c: number;
  logits: number[];
  targets: number[];
  cases: { label_smoothing: number; reduction: Reduction; loss: number[]; grad: number[] }[];
};

function f32(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}

/**
 * float64 label-smoothed cross-entropy, PyTorch's definition written out: per row
 * (1 - eps) * (-log p[t]) + eps / C * sum_c(-log p[c]), then reduced.
 */
function smoothedRef(
  x: Float64Array,
  t: Int32Array,
  n: number,
  c: number,
  eps: number,
  reduction: Reduction,
): Float64Array {
  const rows = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    for (let j = 0; j < c; j++) mx = Math.max(mx, x[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x[i * c + j] - mx);
    const lse = mx + Math.log(s);
    let all = 0;
    for (let j = 0; j < c; j++) all += lse - x[i * c + j];
    rows[i] = (1 - eps) * (lse - x[i * c + t[i]]) + (eps / c) * all;
  }
  if (reduction === "none") return rows;
  const total = rows.reduce((a, b) => a + b, 0);
  return Float64Array.of(reduction === "mean" ? total / n : total);
}

function randomTargets(n: number, c: number, seed: number): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: n }, () => g.nextUint32() % c);
}

gpuTest(
  "crossEntropy() with labelSmoothing matches a float64 reference, and its gradient finite differences",
  async () => {
    for (const [s, [n, c]] of [[1, 3], [9, 11], [33, 7]].entries()) {
      const x = f32(randomValues(n * c, 40 + s, 3));
      const t = randomTargets(n, c, 50 + s);
      for (const eps of [0.1, 0.37, 1]) {
        for (const reduction of ["mean", "sum", "none"] as Reduction[]) {
          const what = `N=${n} C=${c} eps=${eps} ${reduction}`;
          const tx = Tensor.from(x, [n, c], { requiresGrad: true });
          const loss = crossEntropy(tx, t, { reduction, labelSmoothing: eps });
          const expected = smoothedRef(x, t, n, c, eps, reduction);
          assertClose(await loss.toArray(), expected, { what });
          const r = reduction === "none" ? f32(randomValues(n, 60 + s)) : Float64Array.of(0.75);
          loss.backward(Tensor.from(r, loss.shape));
          const numeric = finiteDifferences(
            (v) => dot(smoothedRef(v, t, n, c, eps, reduction), r),
            x,
          );
          assertClose(await tx.grad!.toArray(), numeric, {
            what: `${what} grad`,
            rtol: 1e-4,
            atol: 1e-6,
            maxRelL2: 1e-5,
          });
          tx.dispose();
          loss.dispose();
        }
      }
    }
  },
);

gpuTest("crossEntropy() with labelSmoothing matches PyTorch's F.cross_entropy values", async () => {
  const { n, c } = fixture;
  const t = Int32Array.from(fixture.targets);
  for (const k of fixture.cases) {
    const what = `label_smoothing=${k.label_smoothing} ${k.reduction}`;
    const x = Tensor.from(Float32Array.from(fixture.logits), [n, c], { requiresGrad: true });
    const loss = crossEntropy(x, t, { reduction: k.reduction, labelSmoothing: k.label_smoothing });
    assertClose(await loss.toArray(), k.loss, { what });
    loss.backward(Tensor.ones(loss.shape));
    assertClose(await x.grad!.toArray(), k.grad, { what: `${what} grad`, atol: 1e-6 });
    x.dispose();
    loss.dispose();
  }
});

gpuTest("crossEntropy() with labelSmoothing 0 is plain cross-entropy, bit for bit", async () => {
  const x = Tensor.from(f32(randomValues(5 * 4, 70, 2)), [5, 4]);
  const t = Int32Array.from([0, 3, 1, 2, 3]);
  const plain = await crossEntropy(x, t, { reduction: "none" }).toArray();
  const zero = await crossEntropy(x, t, { reduction: "none", labelSmoothing: 0 }).toArray();
  assert.deepEqual(zero, plain);
});

gpuTest("crossEntropy() refuses a labelSmoothing outside [0, 1]", () => {
  const x = Tensor.zeros([2, 3]);
  const t = Int32Array.from([0, 1]);
  for (const bad of [-0.1, 1.5, NaN, "0.1" as unknown as number]) {
    assert.throws(
      () => crossEntropy(x, t, { labelSmoothing: bad }),
      /labelSmoothing must be a number in \[0, 1\]/,
    );
  }
});
