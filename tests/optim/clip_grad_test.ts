import assert from "node:assert/strict";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { clipGradNorm } from "../../src/optim/clip_grad.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, gpuTest, randomValues } from "../_gpu.ts";

const fixture = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/bookkeeping_torch.json", import.meta.url)),
).clip_grad_norm as {
  shapes: number[][];
  grads: number[][];
  cases: { max_norm: number; norm_type: number | "inf"; total_norm: number; grads: number[][] }[];
};

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function f32(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}

/** float64 clip_grad_norm_: the total norm and the clipped gradients. */
function clipRef(grads: Float64Array[], maxNorm: number, normType: number) {
  let total = 0;
  for (const g of grads) {
    for (const v of g) {
      total = normType === Infinity
        ? Math.max(total, Math.abs(v))
        : total + Math.abs(v) ** normType;
    }
  }
  if (normType !== Infinity) total = total ** (1 / normType);
  const coef = Math.min(1, maxNorm / (total + 1e-6));
  return { total, clipped: grads.map((g) => g.map((v) => v * coef)) };
}

/** Parameters with gradients `grads` (null: a parameter without a gradient). */
function withGrads(shapes: number[][], grads: (ArrayLike<number> | null)[]): Tensor[] {
  return shapes.map((shape, k) => {
    const p = Tensor.zeros(shape, { requiresGrad: true });
    const g = grads[k];
    if (g) p.grad = Tensor.from(Float32Array.from(g), shape).keep();
    return p;
  });
}

// Odd sizes; more than seven gradients (two dispatches of each pass) and one over 4096 elements
// (split across several workgroups).
const SHAPES = [[7], [3, 5], [2, 3, 3, 3], [5, 67], [1], [9, 1, 3, 3], [13], [3], [4099], [2, 9]];

gpuTest("clipGradNorm() matches a float64 reference for the 2-, 1-, 3- and inf-norms", async () => {
  const grads = SHAPES.map((s, k) => f32(randomValues(sizeOf(s), 80 + k, 0.5)));
  for (const normType of [2, 1, 3, Infinity]) {
    for (const maxNorm of [0.25, 1e6]) {
      const what = `normType ${normType} maxNorm ${maxNorm}`;
      const params = withGrads(SHAPES, grads);
      const norm = clipGradNorm(params, maxNorm, { normType });
      assert.deepEqual(norm.shape, []);
      const ref = clipRef(grads, maxNorm, normType);
      assertClose([await norm.item()], [ref.total], { what: `${what} norm` });
      for (const [k, p] of params.entries()) {
        assertClose(await p.grad!.toArray(), ref.clipped[k], { what: `${what} grad ${k}` });
      }
      norm.dispose();
      for (const p of params) p.dispose();
    }
  }
});

gpuTest("clipGradNorm() gives torch.nn.utils.clip_grad_norm_'s norms and gradients", async () => {
  for (const k of fixture.cases) {
    const normType = k.norm_type === "inf" ? Infinity : k.norm_type;
    const what = `max_norm ${k.max_norm} norm_type ${k.norm_type}`;
    const params = withGrads(fixture.shapes, fixture.grads);
    const norm = clipGradNorm(params, k.max_norm, { normType });
    assertClose([await norm.item()], [k.total_norm], { what: `${what} norm` });
    for (const [i, p] of params.entries()) {
      assertClose(await p.grad!.toArray(), k.grads[i], { what: `${what} grad ${i}` });
    }
    norm.dispose();
    for (const p of params) p.dispose();
  }
});

gpuTest("clipGradNorm() skips parameters without gradients and reads nothing back", async () => {
  const shapes = [[3, 5], [7], [2, 2]];
  const g0 = f32(randomValues(15, 90, 2));
  const g2 = f32(randomValues(4, 91, 2));
  const params = withGrads(shapes, [g0, null, g2]);
  const before = gpuCounters();
  const norm = clipGradNorm(params, 1);
  const after = gpuCounters();
  assert.equal(after.readbacks, before.readbacks, "no readback");
  // One reduction, the total, one scaling.
  assert.equal(after.dispatches - before.dispatches, 3);
  assert.equal(params[1].grad, null);
  const ref = clipRef([g0, g2], 1, 2);
  assertClose([await norm.item()], [ref.total]);
  assertClose(await params[2].grad!.toArray(), ref.clipped[1]);

  const none = clipGradNorm([Tensor.zeros([3])], 1);
  assert.equal(await none.item(), 0);
});

gpuTest("clipGradNorm() refuses a negative maxNorm, a non-positive normType, non-tensors", () => {
  const p = [Tensor.zeros([2])];
  assert.throws(() => clipGradNorm(p, -1), /maxNorm must be a number >= 0/);
  assert.throws(() => clipGradNorm(p, NaN), RangeError);
  assert.throws(() => clipGradNorm(p, 1, { normType: 0 }), /normType must be a positive/);
  assert.throws(() => clipGradNorm([1 as unknown as Tensor], 1), TypeError);
});
