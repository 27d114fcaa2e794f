// Host cost: how long the CPU takes to encode one step while the GPU is idle, against the floor of
// Deno's WebGPU (a loop of setPipeline/setBindGroup/dispatchWorkgroups over pre-made objects, the
// same number of dispatches, measured in the same run). encode / floor is what our JavaScript adds
// per dispatch; batch / encode is the most images per second any GPU could reach with this host.
import { flush, getDevice, gpuCounters } from "@resnet/webgpu";
// Not public: the step's own recorded commands, for the floor over its own objects.
import {
  type Recording,
  releaseRecording,
  startRecording,
  stopRecording,
} from "../src/gpu/dispatch.ts";
import { median } from "./_timing.ts";

export interface HostCost {
  /** Dispatches one step encodes. */
  dispatches: number;
  /** Median milliseconds to encode and submit one step, the GPU idle. */
  encodeMs: number;
  /** encodeMs per dispatch, in microseconds. */
  perDispatchUs: number;
  /** The floor's microseconds per dispatch, measured with the same dispatch count. */
  floorUs: number;
  /** perDispatchUs / floorUs. */
  ratio: number;
  /** batch / encodeMs: images per second no GPU could exceed with this host cost. */
  ceilingImagesPerSecond: number;
  /** Per step, after the first: bind groups created, buffers created, uniform writes, uploads. */
  bindGroupsPerStep: number;
  bufferCreationsPerStep: number;
  uniformWritesPerStep: number;
  uploadsPerStep: number;
}

const FLOOR_SOURCE = `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1)
fn main() { out[0] = out[0] + 1.0; }`;

/**
 * The floor: `count` dispatches of pre-made pipelines and bind groups in one pass, encoded and
 * submitted. `sample()` waits for the GPU to be idle, encodes the loop once untimed (so that
 * WebGPU's upkeep of earlier work, such as a training step's, is not charged to the floor), waits
 * again and returns the microseconds per dispatch of a timed run.
 */
export function floorLoop(count: number): { sample(): Promise<number>; dispose(): void } {
  const device = getDevice();
  const module = device.createShaderModule({ code: FLOOR_SOURCE });
  // Two pipelines and four bind groups, alternating, as a step switches between kernels.
  const pipelines = [0, 1].map(() =>
    device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } })
  );
  const buffers = [0, 1, 2, 3].map(() =>
    device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE })
  );
  const groups = buffers.map((buffer, i) =>
    device.createBindGroup({
      layout: pipelines[i % 2].getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer } }],
    })
  );
  const run = () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < count; i++) {
      pass.setPipeline(pipelines[i & 1]);
      pass.setBindGroup(0, groups[i & 3]);
      pass.dispatchWorkgroups(1);
    }
    pass.end();
    device.queue.submit([encoder.finish()]);
  };
  return {
    async sample() {
      await device.queue.onSubmittedWorkDone();
      run();
      await device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      run();
      const us = (performance.now() - t0) * 1000 / count;
      await device.queue.onSubmittedWorkDone();
      return us;
    },
    dispose() {
      for (const b of buffers) b.destroy();
    },
  };
}

/**
 * Microseconds per dispatch of encoding `step`'s own commands again from pre-made objects: one
 * step is recorded (its pipelines, bind groups and workgroup counts), then a plain loop of
 * `setPipeline`/`setBindGroup`/`dispatchWorkgroups` (and its copies and clears) over those
 * objects is encoded, finished and submitted (median of `samples`, the GPU idle before each).
 * Unlike {@link measureFloor}'s one-buffer bind groups, this pays what WebGPU charges for the
 * step's real bindings (Deno's wgpu tracks every bound buffer when the encoder finishes), so it
 * is the floor of encoding this step in JavaScript at all.
 */
export async function measureOwnFloor(
  step: () => void,
  sync: () => Promise<void>,
  samples: number,
): Promise<number> {
  startRecording();
  let rec: Recording;
  try {
    step();
  } finally {
    rec = stopRecording();
    releaseRecording(rec);
  }
  flush();
  await sync();
  const { commands, dispatches } = rec;
  const device = getDevice();
  const times: number[] = [];
  for (let s = 0; s < samples + 1; s++) {
    await sync();
    const t0 = performance.now();
    const encoder = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    for (const c of commands) {
      if (c.kind === "dispatch") {
        pass ??= encoder.beginComputePass();
        pass.setPipeline(c.pipeline);
        pass.setBindGroup(0, c.group);
        pass.dispatchWorkgroups(c.x, c.y, c.z);
        continue;
      }
      pass?.end();
      pass = null;
      if (c.kind === "copy") {
        encoder.copyBufferToBuffer(
          c.source,
          c.sourceOffset,
          c.destination,
          c.destinationOffset,
          c.size,
        );
      } else {
        encoder.clearBuffer(c.buffer, c.offset, c.size);
      }
    }
    pass?.end();
    device.queue.submit([encoder.finish()]);
    if (s > 0) times.push(performance.now() - t0); // the first warms up
  }
  await sync();
  return (median(times) * 1000) / Math.max(dispatches, 1);
}

/**
 * Times `step` (which encodes one whole step and disposes what it creates) with the GPU idle: two
 * warm-up steps (the first compiles pipelines and creates the optimizer's state, the second
 * settles which pooled buffer each tensor gets), then `samples` steps each after `sync()` waited
 * for the previous one. After each step, two samples of the floor ({@link floorLoop}, the same
 * dispatch count) are taken, so that the step and its floor are measured side by side in the
 * same phases of the machine (on a shared VM the floor alone moves by 1.5x between phases).
 */
export async function measureHostCost(
  step: () => void,
  sync: () => Promise<void>,
  batch: number,
  samples: number,
): Promise<HostCost> {
  for (let i = 0; i < 2; i++) {
    step();
    flush();
    await sync();
  }
  const times: number[] = [];
  const floorTimes: number[] = [];
  let floor: ReturnType<typeof floorLoop> | null = null;
  let dispatches = 0;
  let bindGroups = 0;
  let creations = 0;
  let writes = 0;
  let uploads = 0;
  try {
    for (let s = 0; s < samples; s++) {
      const before = gpuCounters();
      const t0 = performance.now();
      step();
      flush();
      times.push(performance.now() - t0);
      const after = gpuCounters();
      dispatches = after.dispatches - before.dispatches;
      bindGroups += after.bindGroupCreations - before.bindGroupCreations;
      creations += after.bufferCreations - before.bufferCreations;
      writes += after.uniformWrites - before.uniformWrites;
      uploads += after.uploads - before.uploads;
      await sync();
      floor ??= floorLoop(Math.max(dispatches, 1));
      for (let f = 0; f < 2; f++) floorTimes.push(await floor.sample());
    }
  } finally {
    floor?.dispose();
  }
  const encodeMs = median(times);
  const perDispatchUs = (encodeMs * 1000) / Math.max(dispatches, 1);
  const floorUs = median(floorTimes);
  return {
    dispatches,
    encodeMs,
    perDispatchUs,
    floorUs,
    ratio: perDispatchUs / floorUs,
    ceilingImagesPerSecond: batch / (encodeMs / 1000),
    bindGroupsPerStep: bindGroups / samples,
    bufferCreationsPerStep: creations / samples,
    uniformWritesPerStep: writes / samples,
    uploadsPerStep: uploads / samples,
  };
}
