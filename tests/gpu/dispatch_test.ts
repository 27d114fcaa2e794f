import assert from "node:assert/strict";
import { getDevice, kernelFamily } from "../../src/gpu/device.ts";
import { dispatch, gpuCounters, kernel, profileKernels } from "../../src/gpu/dispatch.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { add, relu } from "../../src/ops/elementwise.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpu, gpuTest } from "../_gpu.ts";

// Whether this adapter offers timestamp queries, known before the tests are registered.
const hasTimestamps = (await gpu()).features.has("timestamp-query");

gpuTest(
  "profileKernels() times every dispatch of the work, grouped by kernel, and returns its result",
  async () => {
    if (!getDevice().features.has("timestamp-query")) {
      await assert.rejects(profileKernels(() => 0), /timestamp-query/);
      return;
    }
    const x = Tensor.randn([2, 3, 8, 8], { seed: 1 });
    const w = Tensor.randn([5, 3, 3, 3], { seed: 2 });
    // Work encoded before the profile is flushed first and not counted.
    relu(x).dispose();
    const before = gpuCounters().dispatches;
    const { result, kernels, totalMs, untimed } = await profileKernels(async () => {
      const y = conv2d(x, w, null, { padding: 1 });
      const z = add(y, y);
      const r1 = relu(z);
      const r2 = relu(r1);
      await Promise.resolve();
      y.dispose();
      z.dispose();
      r1.dispose();
      return r2;
    });
    const dispatched = gpuCounters().dispatches - before;
    assert.deepEqual(result.shape, [2, 5, 8, 8]);
    assert.equal(untimed, 0);
    const calls = new Map(kernels.map((k) => [k.kernel, k.calls]));
    assert.equal(calls.get("relu_forward"), 2);
    assert.equal(calls.get("add"), 1);
    // The 3x3 convolution's kernel: the row-blocked one of the software family, else the tiled.
    const convKernel = kernelFamily() === "gpu" ? "conv2d_forward_tiled" : "conv2d_forward_rows";
    assert.equal(calls.get(convKernel), 1);
    assert.equal([...calls.values()].reduce((a, b) => a + b, 0), dispatched);
    for (const k of kernels) assert.ok(k.ms >= 0 && Number.isFinite(k.ms), `${k.kernel}: ${k.ms}`);
    assert.ok(totalMs > 0, `total ${totalMs} ms`);
    const sum = kernels.reduce((a, k) => a + k.ms, 0);
    assert.ok(Math.abs(sum - totalMs) <= 1e-9 * Math.max(1, totalMs));
    for (let i = 1; i < kernels.length; i++) assert.ok(kernels[i - 1].ms >= kernels[i].ms);
    // The profiled result is a normal tensor: the work after the profile runs unprofiled.
    const values = await result.toArray();
    assert.ok(values.every((v) => v >= 0));
    for (const t of [x, w, result]) t.dispose();
  },
);

gpuTest("profileKernels() does not nest, and a throwing function ends the profile", async () => {
  await assert.rejects(
    profileKernels(() => profileKernels(() => 1)),
    /profiles do not nest/,
  );
  await assert.rejects(
    profileKernels(() => {
      throw new RangeError("inside");
    }),
    /inside/,
  );
  // Both profiles ended: a new one starts.
  const ones = Tensor.ones([4]);
  const { kernels } = await profileKernels(() => relu(ones).dispose());
  assert.deepEqual(kernels.map((k) => k.kernel), ["relu_forward"]);
  ones.dispose();
}, { ignore: !hasTimestamps });

// Two entry points of one file: main_skip leaves out binding 2, which main uses.
const SKIPPING = kernel(
  "test_skipped_binding",
  `struct Params { value: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(1) fn main() { a[0] = p.value; b[0] = p.value; c[0] = p.value; }
@compute @workgroup_size(1) fn main_skip() { a[0] = p.value; c[0] = p.value; }
`,
  ["value"],
);

gpuTest("dispatch() leaves a null buffer's binding out of the bind group", async () => {
  const [a, b, c] = [Tensor.zeros([1]), Tensor.zeros([1]), Tensor.zeros([1])];
  dispatch(SKIPPING, {
    buffers: [a.buffer, b.buffer, c.buffer],
    params: { value: 2 },
    workgroups: [1],
  });
  dispatch({ ...SKIPPING, entryPoint: "main_skip" }, {
    buffers: [a.buffer, null, c.buffer],
    params: { value: 3 },
    workgroups: [1],
  });
  assert.deepEqual([await a.item(), await b.item(), await c.item()], [3, 2, 3]);
  for (const t of [a, b, c]) t.dispose();
});
