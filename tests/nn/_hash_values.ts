// Hash-generated weights and inputs that tests/fixtures/make_torchvision_fixtures.py reproduces
// bit for bit (its `hash_values`), so that torchvision fixtures need no committed weights:
// h(key, i) = mix32(i * 0x9E3779B9 + fnv1a32(key)), value = float32(low + (high - low) h / 2^32).
import { Tensor } from "../../src/tensor.ts";

function fnv1a32(key: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(key)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** `n` float32 values in `[low, high)` for `key`, as the Python script's `hash_values`. */
export function hashValues(key: string, n: number, low: number, high: number): Float32Array {
  const seed = fnv1a32(key);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let z = (Math.imul(i, 0x9e3779b9) + seed) >>> 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z = (z ^ (z >>> 16)) >>> 0;
    out[i] = low + (high - low) * (z / 4294967296);
  }
  return out;
}

/** The range the Python script's `value_range` draws a state-dict entry from. */
function hashRange(key: string, shape: readonly number[]): [number, number] {
  if (key.endsWith("running_mean")) return [-0.1, 0.1];
  if (key.endsWith("running_var")) return [0.5, 1.5];
  if (shape.length === 4) {
    const bound = Math.sqrt(3 * 2 / (shape[0] * shape[2] * shape[3]));
    return [-bound, bound];
  }
  if (key.startsWith("fc.")) return [-0.04, 0.04];
  if (key.endsWith(".weight")) return [0.5, 1.5];
  return [-0.2, 0.2];
}

/** A state dict for `shapes` (key → shape) filled with the Python script's hash values. */
export function hashedState(shapes: Map<string, readonly number[]>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [key, shape] of shapes) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (key.endsWith("num_batches_tracked")) {
      out.set(key, Tensor.zeros(shape as number[]));
      continue;
    }
    const [low, high] = hashRange(key, shape);
    out.set(key, Tensor.from(hashValues(key, size, low, high), shape as number[]));
  }
  return out;
}

/** `[norm, dot(v, r0), dot(v, r1)]` in float64, r0 and r1 the hash vectors of `key`. */
export function summary(key: string, v: Float32Array): [number, number, number] {
  const r0 = hashValues(`${key}#r0`, v.length, -1, 1);
  const r1 = hashValues(`${key}#r1`, v.length, -1, 1);
  let n = 0, d0 = 0, d1 = 0;
  for (let i = 0; i < v.length; i++) {
    n += v[i] * v[i];
    d0 += v[i] * r0[i];
    d1 += v[i] * r1[i];
  }
  return [Math.sqrt(n), d0, d1];
}
