import assert from "node:assert/strict";
import { noGrad, type PendingGradients } from "../src/autograd.ts";
import { inUseBytesSince, poolMark } from "../src/gpu/buffer_pool.ts";
import { add, mul, mulScalar } from "../src/ops/elementwise.ts";
import { sum } from "../src/ops/reduce.ts";
import { record, Tensor } from "../src/tensor.ts";
import { tidy } from "../src/scope.ts";
import { gpuTest } from "./_gpu.ts";

gpuTest("gradients accumulate across backward() calls like PyTorch's", async () => {
  const x = Tensor.from([1, 2, 3], [3], { requiresGrad: true });
  sum(mulScalar(x, 2)).backward();
  sum(mul(x, x)).backward();
  assert.deepEqual(Array.from(await x.grad!.toArray()), [4, 6, 8]);
});

gpuTest(
  "a second backward() through released nodes fails clearly; retainGraph allows it",
  async () => {
    const x = Tensor.from([1, 2], [2], { requiresGrad: true });
    const y = sum(mul(x, x));
    y.backward(undefined, { retainGraph: true });
    y.backward();
    assert.deepEqual(Array.from(await x.grad!.toArray()), [4, 8]);
    assert.throws(() => y.backward(), /second time.*retainGraph/);
  },
);

gpuTest("backward() refuses tensors without grad and non-scalars without a gradient", () => {
  const x = Tensor.from([1, 2], [2], { requiresGrad: true });
  assert.throws(() => Tensor.ones([1]).backward(), /does not require grad/);
  assert.throws(() => mulScalar(x, 2).backward(), RangeError);
  assert.throws(() => mulScalar(x, 2).backward(Tensor.ones([3])), RangeError);
});

gpuTest("a diamond graph sums both paths; the explicit gradient is not consumed", async () => {
  const x = Tensor.from([1, -2, 3], [3], { requiresGrad: true });
  const a = mulScalar(x, 3);
  const y = add(a, mul(a, x)); // y = 3x + 3x²  →  dy/dx = 3 + 6x
  const g = Tensor.from([1, 1, 2], [3]);
  y.backward(g);
  assert.deepEqual(Array.from(await x.grad!.toArray()), [9, -9, 42]);
  assert.deepEqual(Array.from(await g.toArray()), [1, 1, 2]);
});

gpuTest("noGrad() records nothing, also for async functions", async () => {
  const x = Tensor.ones([2], { requiresGrad: true });
  assert.equal(noGrad(() => mulScalar(x, 2)).requiresGrad, false);
  const y = await noGrad(async () => {
    await Promise.resolve();
    return mulScalar(x, 2);
  });
  assert.equal(y.requiresGrad, false);
  assert.equal(mulScalar(x, 2).requiresGrad, true);
});

gpuTest("backward() releases its intermediate gradients: only leaf grads remain", () => {
  const x = Tensor.randn([64], { seed: 1, requiresGrad: true });
  const mark = poolMark();
  tidy(() => sum(mul(mulScalar(x, 2), x)).backward());
  // Everything made inside is gone except x.grad (64 floats).
  assert.equal(inUseBytesSince(mark), 64 * 4);
});

/**
 * `a + b` as an op whose backward adds the gradient autograd already holds for `a` when `fuse`
 * (the way conv2d adds a shortcut's gradient); `seen` collects the pending gradients offered.
 */
function addFusing(
  a: Tensor,
  b: Tensor,
  fuse: boolean,
  seen: (readonly (Tensor | null)[])[],
): Tensor {
  const out = noGrad(() => add(a, b));
  return record(out, {
    name: "addFusing",
    inputs: [a, b],
    backward: (gy: Tensor, pending?: PendingGradients) => {
      seen.push(pending ? [...pending.grads] : []);
      const held = pending?.grads[0];
      if (!fuse || !held) return [gy, gy];
      pending!.included[0] = true;
      return [noGrad(() => add(gy, held)), gy];
    },
  });
}

gpuTest(
  "a backward that adds the held gradient itself replaces it: same values, no leak",
  async () => {
    for (const fuse of [false, true]) {
      const x = Tensor.from([1, -2, 3], [3], { requiresGrad: true });
      const seen: (readonly (Tensor | null)[])[] = [];
      const mark = poolMark();
      tidy(() => {
        // y = (3x + x) + x: the inner node runs after the outer one gave x a gradient.
        const inner = addFusing(mulScalar(x, 3), x, fuse, seen);
        addFusing(inner, x, fuse, seen).backward(Tensor.from([1, 2, 4], [3]));
      });
      assert.deepEqual(Array.from(await x.grad!.toArray()), [5, 10, 20]);
      assert.equal(inUseBytesSince(mark), x.grad!.buffer.size, `fuse ${fuse}`);
      // Outer node: nothing held yet; inner node: x's gradient from the outer one, at input 1.
      assert.deepEqual(seen.map((p) => p.map((t) => t !== null)), [[], [false, true]]);
      x.grad!.dispose();
    }
  },
);

gpuTest("an input listed twice is offered its held gradient once", async () => {
  for (const fuse of [false, true]) {
    const x = Tensor.from([1, 2], [2], { requiresGrad: true });
    const seen: (readonly (Tensor | null)[])[] = [];
    const mark = poolMark();
    tidy(() => {
      // y = x + (x + x) + 2x, the node of x + x running last, after x holds 1 + 2.
      const doubled = addFusing(x, x, fuse, seen);
      add(add(doubled, mulScalar(x, 2)), x).backward(Tensor.from([1, 3], [2]));
    });
    assert.deepEqual(Array.from(await x.grad!.toArray()), [5, 15]);
    assert.equal(inUseBytesSince(mark), x.grad!.buffer.size, `fuse ${fuse}`);
    assert.deepEqual(seen.map((p) => p.map((t) => t !== null)), [[true, false]]);
    x.grad!.dispose();
  }
});

gpuTest(
  "with retainGraph a fused backward runs again and adds to the leaf's gradient",
  async () => {
    const x = Tensor.from([1, -1], [2], { requiresGrad: true });
    const y = addFusing(mulScalar(x, 3), x, true, []);
    const z = add(y, x);
    z.backward(Tensor.from([1, 1], [2]), { retainGraph: true });
    z.backward(Tensor.from([1, 1], [2]));
    assert.deepEqual(Array.from(await x.grad!.toArray()), [10, 10]);
  },
);
