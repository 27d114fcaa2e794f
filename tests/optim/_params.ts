// Parameters, gradients and the no-allocation check shared by the optimizer tests.
import assert from "node:assert/strict";
import { memoryStats } from "../../src/gpu/buffer_pool.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import type { Optimizer } from "../../src/optim/optimizer.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { f32, randomValues } from "../_gpu.ts";

// Odd sizes, one past a 256-invocation workgroup, and an odd count (a dispatch with one slot).
export const SHAPES = [[7], [3, 5], [2, 3, 3, 3], [5, 67], [1]];

export const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Parameters on the GPU and their float64 copies. */
export function makeParams(seed: number): { params: Tensor[]; ref: Float64Array[] } {
  const ref = SHAPES.map((s, k) => f32(randomValues(sizeOf(s), seed + k)));
  const params = ref.map((v, k) => Tensor.from(v, SHAPES[k], { requiresGrad: true }));
  return { params, ref };
}

/** Random gradients (times `scale`) for step `step`, or null where `present` says so. */
export function gradients(
  seed: number,
  step: number,
  present = SHAPES.map(() => true),
  scale = 1,
): (Float64Array | null)[] {
  return SHAPES.map((s, k) =>
    present[k] ? f32(randomValues(sizeOf(s), 1000 * seed + 37 * step + k, scale)) : null
  );
}

/** Replaces each parameter's gradient (null drops it). */
export function setGrads(params: Tensor[], grads: (Float64Array | null)[]): void {
  params.forEach((p, k) => {
    p.grad?.dispose();
    const g = grads[k];
    p.grad = g ? Tensor.from(g, p.shape) : null;
  });
}

/**
 * Runs `optimizer` for 5 steps on `params` and asserts that no step submits or reads back, each
 * takes one dispatch per two parameters (plus `extraDispatches`, such as Adam's adam_prepare),
 * and no pool buffer is allocated after the first.
 */
export function assertStepsAllocateNothing(
  optimizer: Optimizer,
  params: Tensor[],
  gradientSeed: number,
  extraDispatches = 0,
): void {
  const step = (s: number) =>
    tidy(() => {
      optimizer.zeroGrad();
      setGrads(params, gradients(gradientSeed, s));
      const before = gpuCounters();
      optimizer.step();
      const after = gpuCounters();
      assert.equal(after.submits, before.submits, "step() submitted");
      assert.equal(after.readbacks, before.readbacks, "step() read back");
      return after.dispatches - before.dispatches;
    });
  step(0);
  const allocations = memoryStats().allocations;
  for (let s = 1; s < 5; s++) {
    assert.equal(step(s), Math.ceil(SHAPES.length / 2) + extraDispatches, "dispatches per step");
  }
  assert.equal(memoryStats().allocations, allocations, "buffers were allocated after step 1");
  optimizer.zeroGrad();
}
