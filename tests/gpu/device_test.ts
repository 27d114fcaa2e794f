import assert from "node:assert/strict";
import {
  adapterDescription,
  autoKernelFamily,
  getDevice,
  initGPU,
  kernelFamily,
} from "../../src/gpu/device.ts";
import { readEnvironment } from "../../src/gpu/_environment.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { memoryStats } from "../../src/gpu/buffer_pool.ts";
import { add } from "../../src/ops/elementwise.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

gpuTest("initGPU() is idempotent and describes the adapter", async () => {
  const a = await initGPU();
  const b = await initGPU();
  assert.equal(a, b);
  assert.equal(getDevice(), a);
  assert.notEqual(adapterDescription(), "none");
});

gpuTest("kernelFamily() is the one RESNET_WEBGPU_KERNELS names, else the adapter's", async () => {
  await initGPU();
  const named = readEnvironment("RESNET_WEBGPU_KERNELS");
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }) ??
    await navigator.gpu.requestAdapter({ forceFallbackAdapter: true });
  const expected = named && named !== "auto" ? named : autoKernelFamily(adapter!.info);
  assert.equal(kernelFamily(), expected);
});

Deno.test("autoKernelFamily() picks software for fallback and software adapters only", () => {
  const info = (fields: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean }) =>
    ({ vendor: "", architecture: "", device: "", description: "", ...fields }) as GPUAdapterInfo;
  assert.equal(
    autoKernelFamily(info({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" })),
    "software",
  );
  assert.equal(autoKernelFamily(info({ device: "lavapipe" })), "software");
  assert.equal(autoKernelFamily(info({ description: "SwiftShader Device" })), "software");
  assert.equal(
    autoKernelFamily(info({ description: "Microsoft Basic Render Driver" })),
    "software",
  );
  assert.equal(autoKernelFamily(info({ description: "x", isFallbackAdapter: true })), "software");
  assert.equal(autoKernelFamily(info({ vendor: "nvidia", description: "NVIDIA H200" })), "gpu");
  assert.equal(autoKernelFamily(info({ vendor: "amd", architecture: "rdna-3" })), "gpu");
});

gpuTest("RESNET_WEBGPU_LIMITS=default requests WebGPU's default limits only", async () => {
  const device = await initGPU();
  if (readEnvironment("RESNET_WEBGPU_LIMITS") !== "default") return;
  assert.equal(device.limits.maxComputeWorkgroupStorageSize, 16384);
  assert.equal(device.limits.maxComputeInvocationsPerWorkgroup, 256);
  assert.equal(device.limits.maxStorageBuffersPerShaderStage, 8);
  assert.equal(device.limits.maxStorageBufferBindingSize, 134217728);
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

gpuTest(
  "a tensor of a lost device is refused by name; new tensors work after initGPU()",
  async () => {
    const device = await initGPU();
    const old = Tensor.full([3], 2);
    device.destroy();
    await device.lost;
    assert.throws(() => Tensor.zeros([1]), /device was lost/);
    await initGPU();
    assert.throws(
      () => add(old, Tensor.ones([3])),
      /belongs to an earlier GPU device.*recreate it/,
    );
    // The refusal left nothing behind: later work on the new device runs and reads back.
    const fresh = add(Tensor.full([3], 4), Tensor.ones([3]));
    assert.deepEqual(Array.from(await fresh.toArray()), [5, 5, 5]);
    assert.deepEqual(Array.from(await Tensor.full([2], 7).toArray()), [7, 7]);
  },
);

gpuTest("one WebGPU validation error is reported once and does not poison later work", async () => {
  const device = await initGPU();
  // A uniform buffer bound as storage: a validation error WebGPU reports asynchronously.
  device.pushErrorScope("out-of-memory"); // scopes of another filter leave validation uncaptured
  const bad = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM });
  device.queue.writeBuffer(bad, 0, new Uint8Array(32)); // out of range: a validation error
  await device.popErrorScope();
  await device.queue.onSubmittedWorkDone();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.throws(() => getDevice(), /WebGPU reported an error/);
  // Reported once; the same device keeps working, for new models and old tensors alike.
  assert.equal(getDevice(), device);
  const t = Tensor.full([4], 1.5);
  assert.deepEqual(Array.from(await add(t, t).toArray()), [3, 3, 3, 3]);
});
