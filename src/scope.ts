/**
 * Deterministic release of GPU memory: {@link tidy} disposes every tensor created inside its
 * function except those it returns, so a training step leaves nothing behind.
 *
 * @module
 */

/** Anything that holds GPU memory and can give it back. */
export interface Disposable {
  /** Releases the GPU memory; idempotent. */
  dispose(): void;
}

const scopes: Set<Disposable>[] = [];

/** Records a newly created tensor in the innermost open {@link tidy} scope. */
export function track(value: Disposable): void {
  scopes[scopes.length - 1]?.add(value);
}

/**
 * Removes `value` from every open {@link tidy} scope, so it outlives them; returns it.
 * Parameters, gradients and optimizer state are kept this way.
 *
 * @example
 * ```ts
 * import { initGPU, keep, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * let kept: Tensor | undefined;
 * tidy(() => {
 *   kept = keep(Tensor.ones([3]));
 * });
 * console.log(await kept!.toArray());
 * ```
 */
export function keep<T extends Disposable>(value: T): T {
  for (const scope of scopes) scope.delete(value);
  return value;
}

/**
 * Runs `fn` and disposes every tensor created while it ran, except the tensors it returns
 * (a tensor, or an array or plain object of them), which move to the enclosing scope. Like
 * TensorFlow.js's `tf.tidy`. `fn` must be synchronous: every op encodes synchronously, only
 * reading values back is asynchronous.
 *
 * @throws {TypeError} when `fn` returns a promise.
 * @example
 * ```ts
 * import { initGPU, relu, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.from([-1, 2, -3, 4], [4]);
 * const y = tidy(() => relu(relu(x)));   // the inner result is disposed, y is kept
 * console.log(await y.toArray());        // Float32Array [0, 2, 0, 4]
 * ```
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    // Nothing made inside a failed step is reachable by the caller any more.
    for (const value of scope) value.dispose();
    throw error;
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) {
    for (const value of scope) value.dispose();
    throw new TypeError(
      "tidy() takes a synchronous function; await readbacks outside it (it returned a Promise).",
    );
  }
  const survivors = new Set<Disposable>();
  collect(result, survivors);
  for (const value of scope) {
    if (survivors.has(value)) track(value);
    else value.dispose();
  }
  return result;
}

// Tensors handed to user code from inside a forward (a forward hook's output argument): they may
// be kept there, so forwardScope leaves them to the garbage collector or an enclosing tidy().
const observed = new WeakSet<object>();

/** Marks `value` as seen by user code inside a forward. Internal: not exported by mod.ts. */
export function markObserved(value: Disposable): void {
  observed.add(value);
}

/**
 * Runs a module's forward and finds its intermediates: what was made inside and is neither in
 * the result, kept, nor handed to a hook. `release(result, intermediates)` decides their fate
 * (dispose them now when no gradient was recorded; else tie them to the result's tape node, so
 * the backward that releases the tape disposes them). Everything made inside stays tracked by the
 * enclosing tidy() scopes too, which dispose it as before. Internal: not exported by mod.ts.
 */
export function forwardScope<T>(
  fn: () => T,
  release: (result: T, intermediates: Disposable[]) => void,
): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
    for (const value of scope) track(value);
  }
  const survivors = new Set<Disposable>();
  collect(result, survivors);
  const intermediates: Disposable[] = [];
  for (const value of scope) {
    if (!survivors.has(value) && !observed.has(value)) intermediates.push(value);
  }
  if (intermediates.length > 0) release(result, intermediates);
  return result;
}

function collect(value: unknown, into: Set<Disposable>, depth = 0): void {
  if (value === null || typeof value !== "object" || depth > 4) return;
  if (typeof (value as Disposable).dispose === "function") {
    into.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) collect(item, into, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) collect(item, into, depth + 1);
  }
}
