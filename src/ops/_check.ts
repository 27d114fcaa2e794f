/**
 * Argument checks shared by the ops and the layers: each throws a TypeError (wrong kind of value)
 * or RangeError (right kind, bad value) naming the function (`op`, e.g. `"conv2d()"` or
 * `"Conv2d"`), the argument and what was given. Internal: not exported by mod.ts.
 *
 * @module
 */
import { formatShape, Tensor } from "../tensor.ts";

/** A short description of any value for an error message: `a Tensor [2, 3]`, `string "x"`, … */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (value instanceof Tensor) return `a Tensor ${formatShape(value.shape)}`;
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === "object") return `${value.constructor?.name ?? "an object"}`;
  if (typeof value === "string") return `string ${JSON.stringify(value.slice(0, 40))}`;
  return `${typeof value} ${String(value)}`;
}

/** `value` is a Tensor, else a TypeError. */
export function checkTensor(op: string, name: string, value: unknown): asserts value is Tensor {
  if (!(value instanceof Tensor)) {
    throw new TypeError(`${op}: ${name} must be a Tensor, got ${describe(value)}`);
  }
}

/** `value` is a Tensor of `ndim` dimensions, described as `layout` (e.g. `[N, C, H, W]`). */
export function checkTensorNd(
  op: string,
  name: string,
  value: unknown,
  ndim: number,
  layout: string,
): asserts value is Tensor {
  checkTensor(op, name, value);
  if (value.ndim !== ndim) {
    throw new RangeError(`${op}: ${name} must be ${layout}, got ${formatShape(value.shape)}`);
  }
}

/** `value` is null/undefined (returned as null) or a Tensor. */
export function optionalTensor(op: string, name: string, value: unknown): Tensor | null {
  if (value === undefined || value === null) return null;
  checkTensor(op, `${name} (a Tensor or null)`, value);
  return value;
}

/** `value` is a number (NaN and infinities included). */
export function checkNumber(op: string, name: string, value: unknown): number {
  if (typeof value !== "number") {
    throw new TypeError(`${op}: ${name} must be a number, got ${describe(value)}`);
  }
  return value;
}

/** `value` is a finite number. */
export function checkFinite(op: string, name: string, value: unknown): number {
  const v = checkNumber(op, name, value);
  if (!Number.isFinite(v)) {
    throw new RangeError(`${op}: ${name} must be a finite number, got ${v}`);
  }
  return v;
}

/** An integer >= `min` in words: "a positive integer", "a non-negative integer", … */
function integerWanted(min: number): string {
  if (min === 1) return "a positive integer";
  if (min === 0) return "a non-negative integer";
  return `an integer >= ${min}`;
}

/** `value` is an integer >= `min`. */
export function checkInteger(op: string, name: string, value: unknown, min: number): number {
  if (typeof value !== "number") {
    throw new TypeError(`${op}: ${name} must be ${integerWanted(min)}, got ${describe(value)}`);
  }
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`${op}: ${name} must be ${integerWanted(min)}, got ${value}`);
  }
  return value;
}

/** `value` is true or false. */
export function checkBoolean(op: string, name: string, value: unknown): boolean {
  if (typeof value !== "boolean") {
    throw new TypeError(`${op}: ${name} must be true or false, got ${describe(value)}`);
  }
  return value;
}

/** `value` is an options object (not null, not an array); `example` shows one in the message. */
export function checkOptions(
  op: string,
  value: unknown,
  example: string,
): asserts value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(
      `${op}: options must be an object such as ${example}, got ${describe(value)}`,
    );
  }
}

/**
 * A size option given as one integer or `[h, w]`, each >= `min`, as a pair; `fallback` when
 * undefined.
 */
export function pair(
  op: string,
  name: string,
  value: unknown,
  min: number,
  fallback?: number,
): [number, number] {
  if (value === undefined && fallback !== undefined) return [fallback, fallback];
  const wanted = `${op}: ${name} must be ${integerWanted(min)} or a pair [h, w] of them, got`;
  let hw: unknown[];
  if (typeof value === "number") {
    hw = [value, value];
  } else if (Array.isArray(value)) {
    if (value.length !== 2) throw new RangeError(`${wanted} ${describe(value)}`);
    hw = value;
  } else {
    throw new TypeError(`${wanted} ${describe(value)}`);
  }
  const got = Array.isArray(value)
    ? `[${hw.map((v) => typeof v === "string" ? JSON.stringify(v) : String(v)).join(", ")}]`
    : String(value);
  for (const v of hw) {
    if (typeof v !== "number") throw new TypeError(`${wanted} ${got}`);
    if (!Number.isInteger(v) || v < min) throw new RangeError(`${wanted} ${got}`);
  }
  return [hw[0] as number, hw[1] as number];
}
