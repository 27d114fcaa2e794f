import assert from "node:assert/strict";
import { fillZeroLater, Tensor } from "../src/tensor.ts";
import { reshape } from "../src/ops/shape.ts";
import { flush, gpuCounters } from "../src/gpu/dispatch.ts";
import { tidy } from "../src/scope.ts";
import { inUseBytesSince, poolMark } from "../src/gpu/buffer_pool.ts";
import { gpuTest } from "./_gpu.ts";

gpuTest("Tensor.from() round-trips values and checks the shape", async () => {
  const x = Tensor.from([1.5, -2, 3, 4, 5, 6], [2, 3]);
  assert.deepEqual(x.shape, [2, 3]);
  assert.equal(x.size, 6);
  assert.deepEqual(Array.from(await x.toArray()), [1.5, -2, 3, 4, 5, 6]);
  assert.throws(() => Tensor.from([1, 2, 3], [2, 2]), RangeError);
  assert.throws(() => Tensor.from([1, 2], [-1, -2]), RangeError);
});

gpuTest("Tensor.full/zeros/ones fill every element; randn is reproducible by seed", async () => {
  assert.deepEqual(Array.from(await Tensor.full([3, 5], 2.5).toArray()), new Array(15).fill(2.5));
  assert.deepEqual(Array.from(await Tensor.zeros([1027]).toArray()), new Array(1027).fill(0));
  const a = await Tensor.randn([50], { seed: 7 }).toArray();
  const b = await Tensor.randn([50], { seed: 7 }).toArray();
  assert.deepEqual(a, b);
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(Math.abs(mean) < 0.5);
});

gpuTest("item() reads a scalar and refuses a larger tensor", async () => {
  assert.equal(await Tensor.from([4], []).item(), 4);
  await assert.rejects(() => Tensor.ones([2]).item(), RangeError);
});

gpuTest("dispose() returns the buffer and a disposed tensor throws a clear error", () => {
  const mark = poolMark();
  const t = Tensor.zeros([100]);
  assert.ok(inUseBytesSince(mark) > 0);
  t.dispose();
  assert.equal(inUseBytesSince(mark), 0);
  assert.throws(() => t.buffer, /disposed/);
});

gpuTest("tidy() disposes tensors made inside except the result", async () => {
  const mark = poolMark();
  const kept = tidy(() => {
    Tensor.ones([64]);
    const a = Tensor.ones([8]);
    a.accumulate(Tensor.full([8], 2));
    return a;
  });
  assert.deepEqual(Array.from(await kept.toArray()), new Array(8).fill(3));
  kept.dispose();
  assert.equal(inUseBytesSince(mark), 0);
});

gpuTest("views share the buffer until the last one is disposed", async () => {
  const t = Tensor.from([1, 2, 3, 4], [4]);
  const v = t.viewAs([2, 2]);
  t.dispose();
  assert.deepEqual(Array.from(await v.toArray()), [1, 2, 3, 4]);
  assert.throws(() => t.viewAs([3]), /disposed/);
  assert.throws(() => v.viewAs([3]), RangeError);
  v.dispose();
});

gpuTest("tidy() disposes what its function made when it throws", () => {
  const mark = poolMark();
  assert.throws(() =>
    tidy(() => {
      Tensor.ones([32]);
      throw new RangeError("bad shape");
    }), RangeError);
  assert.equal(inUseBytesSince(mark), 0);
  assert.throws(() => tidy(() => Promise.resolve(1)), TypeError);
});

gpuTest("inUseBytesSince() counts only buffers taken after the mark and still held", () => {
  const older = Tensor.zeros([40]);
  const mark = poolMark();
  const newer = Tensor.zeros([10]);
  // Releasing a buffer taken before the mark (as the garbage collector may) changes nothing.
  older.dispose();
  assert.equal(inUseBytesSince(mark), 48);
  newer.dispose();
  assert.equal(inUseBytesSince(mark), 0);
  // A free buffer taken again after the mark counts again.
  const reused = Tensor.zeros([40]);
  assert.equal(inUseBytesSince(mark), 160);
  reused.dispose();
});

gpuTest(
  "fillZeroLater() reads as zeros and encodes its clear only when the values are used",
  async () => {
    const t = Tensor.from([1, 2, 3, 4, 5]);
    flush();
    const version = t.version;
    fillZeroLater(t);
    assert.equal(gpuCounters().pendingCommands, 0, "nothing encoded yet");
    void t.binding;
    assert.equal(gpuCounters().pendingCommands, 1, "the first use encodes the clear");
    void t.buffer;
    assert.equal(gpuCounters().pendingCommands, 1, "once");
    assert.deepEqual(Array.from(await t.toArray()), [0, 0, 0, 0, 0]);
    assert.equal(t.version, version + 1, "a write like fill(0)");
    // A view shares the storage: a clear deferred through it is the tensor's too.
    const view = reshape(t, [5, 1]);
    fillZeroLater(view);
    flush();
    void t.byteOffset;
    assert.equal(gpuCounters().pendingCommands, 1, "used through the other tensor");
    // Read by another op before anything else used it: the op sees the zeros.
    const u = Tensor.from([7, 8, 9]);
    const sum = Tensor.from([1, 1, 1]);
    fillZeroLater(u);
    sum.accumulate(u);
    assert.deepEqual(Array.from(await sum.toArray()), [1, 1, 1]);
    for (const x of [t, view, u, sum]) x.dispose();
  },
);

gpuTest("fillZeroLater() on a tensor disposed before any use encodes nothing", () => {
  const t = Tensor.from([1, 2, 3]);
  flush();
  fillZeroLater(t);
  t.dispose();
  assert.equal(gpuCounters().pendingCommands, 0);
});
