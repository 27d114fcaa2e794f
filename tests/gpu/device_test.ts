import assert from "node:assert/strict";
import { adapterDescription, getDevice, initGPU } from "../../src/gpu/device.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { memoryStats } from "../../src/gpu/buffer_pool.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

gpuTest("initGPU() is idempotent and describes the adapter", async () => {
  const a = await initGPU();
  const b = await initGPU();
  assert.equal(a, b);
  assert.equal(getDevice(), a);
  assert.notEqual(adapterDescription(), "none");
});

gpuTest("repeated ops reuse pipelines, bind groups and pooled buffers", async () => {
  const run = async () => {
    const t = Tensor.full([300], 1.5);
    const two = Tensor.full([300], 2);
    t.accumulate(two);
    const values = await t.toArray();
    assert.equal(values[299], 3.5);
    t.dispose();
    two.dispose();
  };
  await run();
  const before = { ...gpuCounters(), ...memoryStats() };
  await run();
  await run();
  const after = { ...gpuCounters(), ...memoryStats() };
  assert.equal(after.pipelines, before.pipelines, "a pipeline was compiled again");
  assert.equal(after.allocations, before.allocations, "the pool allocated again");
  assert.equal(after.readbacks - before.readbacks, 2);
});

gpuTest("a lost device gives a clear error on the next op, and initGPU() recovers", async () => {
  const device = await initGPU();
  device.destroy();
  await device.lost;
  assert.throws(() => Tensor.zeros([4]), /device was lost/);
  const fresh = await initGPU();
  assert.notEqual(fresh, device);
  assert.deepEqual(Array.from(await Tensor.full([2], 5).toArray()), [5, 5]);
});
