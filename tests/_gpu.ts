// Test helpers: the shared GPU device, seeded random inputs, float64 comparisons.
import { initGPU } from "../src/gpu/device.ts";
// initGPU() reads RESNET_WEBGPU_KERNELS and RESNET_WEBGPU_LIMITS, as through mod.ts.
import "../src/gpu/_environment.ts";
import { Generator } from "../src/random.ts";

/** Initialises the GPU once for every test file. */
export async function gpu(): Promise<GPUDevice> {
  return await initGPU();
}

/**
 * Deno.test with WebGPU's async ops allowed to outlive a test (buffers map and the device stays
 * open across tests, which Deno's sanitizers would otherwise report). `ignore` marks a test that
 * cannot run on this adapter (reported as ignored, never passed silently).
 */
export function gpuTest(
  name: string,
  fn: () => Promise<void> | void,
  options: { ignore?: boolean } = {},
): void {
  Deno.test({
    name,
    ignore: options.ignore ?? false,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await gpu();
      await fn();
    },
  });
}

/** `n` values uniform in [-1, 1), away from zero (|v| >= 0.05), from a seed. */
export function randomValues(n: number, seed: number, scale = 1): Float64Array {
  const g = new Generator(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    while (Math.abs(v) < 0.05) v = 2 * g.uniform() - 1;
    out[i] = v * scale;
  }
  return out;
}

/** Values rounded to float32 (as the GPU holds them), in float64 for the references. */
export function f32(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}

/** Relative L2 error ||a - b|| / max(||b||, tiny). */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/**
 * Asserts every element within `atol + rtol * |expected|` and the whole within relative L2
 * `maxRelL2`; the message names the worst element.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  options: { rtol?: number; atol?: number; maxRelL2?: number; what?: string } = {},
): void {
  const { rtol = 1e-4, atol = 1e-5, maxRelL2 = 1e-5, what = "values" } = options;
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const excess = err - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(rtol ${rtol}, atol ${atol})`,
    );
  }
  const rel = relativeL2(actual, expected);
  if (!(rel <= maxRelL2)) {
    throw new Error(`${what}: relative L2 error ${rel} exceeds ${maxRelL2}`);
  }
}

/**
 * Central finite differences of a float64 scalar function: d f / d x[i] for every i.
 */
export function finiteDifferences(
  f: (x: Float64Array) => number,
  x: Float64Array,
  eps = 1e-6,
): Float64Array {
  const grad = new Float64Array(x.length);
  const probe = Float64Array.from(x);
  for (let i = 0; i < x.length; i++) {
    probe[i] = x[i] + eps;
    const up = f(probe);
    probe[i] = x[i] - eps;
    const down = f(probe);
    probe[i] = x[i];
    grad[i] = (up - down) / (2 * eps);
  }
  return grad;
}

/** Sum of a .* b in float64: the scalar loss <y, r> whose gradient with respect to y is r. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
