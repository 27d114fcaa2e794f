/**
 * `Tensor`: a contiguous float32 array in a GPU buffer, with a shape and autograd state.
 *
 * @module
 */
import fillSource from "../kernels/fill.wgsl" with { type: "text" };
import addInplaceSource from "../kernels/add_inplace.wgsl" with { type: "text" };
import {
  type BackwardOptions,
  type GradNode,
  isGradEnabled,
  runBackward,
  setRegrantEffect,
} from "./autograd.ts";
import {
  acquireBuffer,
  adoptPinned,
  isPinnedFree,
  releaseBuffer,
  sizeClass,
} from "./gpu/buffer_pool.ts";
import { currentDevice } from "./gpu/device.ts";
import {
  clearBuffer,
  copyBuffer,
  dispatch,
  grid1d,
  isRecording,
  kernel,
  readBuffer,
  recordEffect,
  recordingSerial,
  writeBuffer,
} from "./gpu/dispatch.ts";
import { defaultGenerator, Generator } from "./random.ts";
import { keep, track } from "./scope.ts";

/** A tensor's shape: non-negative integer sizes, outermost first, e.g. `[N, C, H, W]`. */
export type Shape = readonly number[];

/** Numbers a tensor can be created from. */
export type TensorData = ArrayLike<number>;

const FILL = kernel("fill", fillSource, ["count", "value"]);
const ADD_INPLACE = kernel("add_inplace", addInplaceSource, ["count"]);

/**
 * A GPU buffer shared by a tensor and its views, returned to the pool with its last user. It
 * counts its in-place writes (`version`) and holds the tensors derived from its values that ops
 * cache (a convolution's packed filters): those are disposed when the values change or the buffer
 * is released, so a cached derivative is never stale.
 */
class Storage {
  refs = 1;
  /** The cached {@link Tensor.binding}; rebuilt when the values move (see moveIntoArena). */
  binding: GPUBufferBinding | null = null;
  version = 0;
  /**
   * The values of each channel sum to exactly 0 in exact arithmetic (over N, H, W of an
   * `[N, C, H, W]` tensor): a training-mode batch norm's input gradient. Cleared by any in-place
   * write but a sum of two such gradients. The N and C it was marked with: a view that groups the
   * values into other channels (another N or C) does not count.
   */
  zeroChannelSums: readonly [number, number] | null = null;
  /**
   * Cached tensors computed from this buffer's values, by key, with the stamp they were made at
   * and the recording they were made in (its `recordingSerial()`, 0 for none).
   */
  derived: Map<string, { stamp: string; recording: number; tensor: Tensor }> | null = null;
  /**
   * Bytes from `offset` on that hold zeros whose clear is not encoded yet (see
   * {@link fillZeroLater}): encoded when the values are first used, 0 when none wait.
   */
  zeroBytes = 0;
  /** The device the buffer belongs to: a tensor outlives a re-initialised device, its buffer not. */
  readonly device: GPUDevice | null = currentDevice();
  /**
   * `buffer` holds the values from `offset` bytes on; `arena` is the shared buffer it is a slice
   * of (null for a pool buffer of its own).
   */
  constructor(
    public buffer: GPUBuffer,
    public offset = 0,
    public arena: Arena | null = null,
  ) {}
  /** `collected`: by the garbage collector, not dispose(). */
  release(collected = false): void {
    if (--this.refs === 0) {
      this.dropDerived();
      this.releaseMemory(collected);
    }
  }
  /** Gives the memory back: the pool buffer, or this slice's reference on its arena. */
  releaseMemory(collected = false): void {
    if (this.arena) this.arena.release(collected);
    else releaseBuffer(this.buffer, collected);
  }
  modified(): void {
    // A replayed step redoes the bump, so that caches see the values it changes.
    if (isRecording()) recordEffect(() => this.modified());
    this.version++;
    this.zeroChannelSums = null;
    this.dropDerived();
  }
  /** Encodes the clear that {@link fillZeroLater} deferred. */
  writeZeros(): void {
    const bytes = this.zeroBytes;
    this.zeroBytes = 0;
    clearBuffer(this.buffer, this.offset, bytes);
  }
  dropDerived(): void {
    if (!this.derived) return;
    for (const { tensor } of this.derived.values()) tensor.dispose();
    this.derived = null;
  }
}

/**
 * Marks `t`'s values as written in place by a kernel (an optimizer's update, running statistics):
 * its version goes up and what was derived from it is dropped. Internal: not exported by mod.ts.
 */
export function markModified(t: Tensor): void {
  storageOf(t).modified();
}

/**
 * Sets every element of `t` to 0 as `t.fill(0)` does, but encodes the clear only when the values
 * are next used (any access to the buffer, a binding, the offset or the version encodes it
 * first), so that zero gradients found during a backward pass are cleared together when the
 * optimizer or the recorded step's gradient effects take them, one run of clears instead of one
 * between each layer's dispatches. A tensor disposed before any use is never cleared: nothing
 * could see its values. Returns `t`. Internal: not exported by mod.ts.
 */
export function fillZeroLater(t: Tensor): Tensor {
  const storage = storageOf(t);
  storage.modified();
  storage.zeroBytes = t.size * 4;
  return t;
}

/**
 * The tensor `make()` returns, cached on `source`'s buffer under `key` until the values change
 * (an in-place write), the buffer is released, or `stamp` differs (what else it was derived from,
 * e.g. other tensors' versions). The cached tensor belongs to the cache: callers must not dispose
 * it, and tidy() leaves it alone. Internal: not exported by mod.ts.
 */
export function derivedTensor(
  source: Tensor,
  key: string,
  stamp: string,
  make: () => Tensor,
): Tensor {
  const cached = cachedDerived(source, key, stamp);
  if (cached) return cached;
  // The stale tensor goes back to the pool before make() takes one.
  const derived = storageOf(source).derived;
  derived?.get(key)?.tensor.dispose();
  derived?.delete(key);
  const tensor = make();
  cacheDerived(source, key, stamp, tensor);
  return tensor;
}

/**
 * The tensor cached on `source`'s buffer under `key` with `stamp` (see {@link derivedTensor}), or
 * null. While a step is recorded, only one made in this recording counts: the recording must hold
 * the work that makes it, since a replay cannot count on a cache that held it at recording time.
 * Internal: not exported by mod.ts.
 */
export function cachedDerived(source: Tensor, key: string, stamp: string): Tensor | null {
  const cached = storageOf(source).derived?.get(key);
  if (!cached || cached.stamp !== stamp) return null;
  const recording = recordingSerial();
  return recording === 0 || cached.recording === recording ? cached.tensor : null;
}

/**
 * Caches `tensor` on `source`'s buffer under `key` with `stamp` (see {@link derivedTensor}),
 * disposing the tensor cached there before; the cache takes it out of every tidy() scope and
 * owns it. Internal: not exported by mod.ts.
 */
export function cacheDerived(source: Tensor, key: string, stamp: string, tensor: Tensor): void {
  const storage = storageOf(source);
  const before = storage.derived?.get(key);
  if (before?.tensor !== tensor) before?.tensor.dispose();
  (storage.derived ??= new Map()).set(key, {
    stamp,
    recording: recordingSerial(),
    tensor: keep(tensor),
  });
}

/** The arena `t`'s values are a slice of, or null. Internal: not exported by mod.ts. */
export function arenaOf(t: Tensor): Arena | null {
  return storageOf(t).arena;
}

/**
 * Marks `t` as a gradient whose per-channel sums are exactly 0 (a training-mode batch norm's input
 * gradient), so that a convolution's bias gradient from it is known to be 0 without a pass over
 * it. Internal: not exported by mod.ts.
 */
export function markZeroChannelSums(t: Tensor): void {
  storageOf(t).zeroChannelSums = [t.shape[0], t.shape[1]];
}

/**
 * Whether {@link markZeroChannelSums} holds for `t` `[N, C, …]`: marked with the same N and C
 * (the same channels). Internal: not exported by mod.ts.
 */
export function hasZeroChannelSums(t: Tensor): boolean {
  const marked = storageOf(t).zeroChannelSums;
  return marked !== null && t.ndim >= 2 && marked[0] === t.shape[0] && marked[1] === t.shape[1];
}

/**
 * A new tensor on a pinned buffer that no tensor holds (see `pinBuffers`), outside every tidy()
 * scope: a replayed step hands out its recorded outputs and gradients again this way after the
 * tensors it first returned were disposed. Internal: not exported by mod.ts.
 */
export function adoptPinnedTensor(shape: Shape, buffer: GPUBuffer): Tensor {
  return new Tensor(shape, adoptPinned(buffer)).keep();
}

let storageOf: (t: Tensor) => Storage;

/**
 * One pooled storage buffer that several tensors hold slices of (an optimizer's flat parameter,
 * gradient and state buffers), returned to the pool when its last holder lets go: the creator
 * holds one reference, each tensor whose values lie in it another. Internal: not exported by
 * mod.ts.
 */
export class Arena {
  /** The buffer; slices start at multiples of `device.limits.minStorageBufferOffsetAlignment`. */
  readonly buffer: GPUBuffer;
  #refs = 1;

  /** Takes a pool buffer of at least `byteLength` bytes. */
  constructor(byteLength: number) {
    this.buffer = acquireBuffer(byteLength);
    arenas.set(this.buffer, this);
  }

  /** Whether every reference was released (the buffer went back to the pool). */
  get released(): boolean {
    return this.#refs === 0;
  }

  /** Adds a reference. */
  retain(): void {
    if (this.#refs === 0) throw new Error("Arena: retained after its buffer was released");
    this.#refs++;
  }

  /** Drops a reference; the last one returns the buffer to the pool. */
  release(collected = false): void {
    if (this.#refs === 0) return;
    if (--this.#refs === 0) {
      arenas.delete(this.buffer);
      releaseBuffer(this.buffer, collected);
    }
  }
}

const arenas = new WeakMap<GPUBuffer, Arena>();

/**
 * Moves `t`'s values (and those of every view sharing its storage) into `arena` at `byteOffset`:
 * encodes a copy, gives the old memory back and points the storage at the slice. The tensor
 * keeps its identity, version and derived caches (the values are the same). Internal: not
 * exported by mod.ts.
 */
export function moveIntoArena(t: Tensor, arena: Arena, byteOffset: number): void {
  const storage = storageOf(t);
  if (storage.buffer === arena.buffer && storage.offset === byteOffset) return;
  if (t.size > 0) copyBuffer(storage.buffer, storage.offset, arena.buffer, byteOffset, t.size * 4);
  arena.retain();
  storage.releaseMemory();
  storage.buffer = arena.buffer;
  storage.offset = byteOffset;
  storage.arena = arena;
  storage.binding = null;
}

/**
 * Moves `t`'s values out of an arena into a pool buffer of their own (a no-op for a tensor that
 * has one), e.g. when the optimizer that flattened it is disposed. Internal: not exported by
 * mod.ts.
 */
export function moveOutOfArena(t: Tensor): void {
  const storage = storageOf(t);
  if (!storage.arena) return;
  const buffer = acquireBuffer(t.size * 4);
  if (t.size > 0) copyBuffer(storage.buffer, storage.offset, buffer, 0, t.size * 4);
  storage.releaseMemory();
  storage.buffer = buffer;
  storage.offset = 0;
  storage.arena = null;
  storage.binding = null;
}

/** Where a parameter's gradient goes when backward computes it: a slice of a gradient arena. */
interface GradSlot {
  arena: Arena;
  byteOffset: number;
  /** The storage of the gradient tensor last handed out for it, while it may be alive. */
  occupant: Storage | null;
}

const gradSlots = new WeakMap<Tensor, GradSlot>();

/**
 * Gives `param` a gradient slot: {@link gradDestination} hands out a view of `arena` at
 * `byteOffset` as its next gradient. It replaces an earlier slot (another optimizer's).
 * Internal: not exported by mod.ts.
 */
export function setGradSlot(param: Tensor, arena: Arena, byteOffset: number): void {
  gradSlots.set(param, { arena, byteOffset, occupant: null });
}

/** Removes `param`'s gradient slot if it lies in `arena`. Internal: not exported by mod.ts. */
export function clearGradSlot(param: Tensor, arena: Arena): void {
  if (gradSlots.get(param)?.arena === arena) gradSlots.delete(param);
}

/**
 * The tensor a backward function writes the gradient of its input `input` into (every element):
 * for a leaf parameter with a gradient slot (see {@link setGradSlot}), no gradient yet and no
 * live tensor on the slot, a view of the slot, so that the gradient lands in the optimizer's flat
 * gradient buffer without a copy; otherwise a fresh tensor of `input`'s shape. Internal: not
 * exported by mod.ts.
 */
export function gradDestination(input: Tensor): Tensor {
  const slot = input.grad === null && input.gradFn === null ? gradSlots.get(input) : undefined;
  if (!slot || slot.arena.released || (slot.occupant && slot.occupant.refs > 0)) {
    return Tensor.empty(input.shape);
  }
  const view = new Tensor(input.shape, { buffer: slot.arena.buffer, offset: slot.byteOffset });
  slot.occupant = storageOf(view);
  return view;
}

/**
 * The effect a recorded step replays to give `leaf` its recorded gradient again, after the
 * replayed commands wrote it: nothing while `leaf.grad` is still that tensor; after it was
 * dropped (`zeroGrad()`), a new tensor on the same memory: the pinned pool buffer, or the
 * parameter's gradient slot in its optimizer's flat buffer.
 */
function regrantGradient(leaf: Tensor, grad: Tensor): () => void {
  const { shape, buffer, byteOffset } = grad;
  let current = grad;
  return () => {
    if (leaf.grad === current && !current.disposed) return;
    leaf.grad?.dispose();
    leaf.grad = null;
    let again: Tensor | null = null;
    if (byteOffset === 0 && isPinnedFree(buffer)) {
      again = new Tensor(shape, adoptPinned(buffer)).keep();
    } else {
      const slot = gradDestination(leaf);
      if (slot.buffer === buffer && slot.byteOffset === byteOffset) again = slot.keep();
      else slot.dispose();
    }
    if (!again) {
      throw new Error(
        "a replayed step's gradient memory is held by another tensor; was the recording " +
          "released while still replayed?",
      );
    }
    leaf.grad = current = again;
  };
}
setRegrantEffect(regrantGradient);

// A tensor dropped without dispose() still returns its buffer once garbage-collected.
const collected = new FinalizationRegistry<Storage>((storage) => storage.release(true));

/** Checks a shape and returns its element count. */
export function shapeSize(shape: Shape, what = "shape"): number {
  if (!Array.isArray(shape)) {
    throw new TypeError(`${what} must be an array of sizes such as [2, 3], got ${String(shape)}`);
  }
  let size = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new RangeError(
        `${what} must hold non-negative integers, got [${shape.join(", ")}]`,
      );
    }
    size *= d;
  }
  return size;
}

/** Formats a shape as `[2, 3]` for messages. */
export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/** Whether two shapes are the same sizes in the same order. Internal: not exported by mod.ts. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Options for tensors created from values or at random. */
export interface TensorOptions {
  /** Whether autograd should compute a gradient for this tensor; default false. */
  requiresGrad?: boolean;
}

/** Options of {@link Tensor.randn} and {@link Tensor.rand}. */
export interface RandomOptions extends TensorOptions {
  /** Seed for a fresh generator; without it (and without `generator`), the default generator. */
  seed?: number;
  /** The generator to draw from. */
  generator?: Generator;
}

/**
 * A float32 tensor on the GPU, contiguous, row-major. Ops are functions (`conv2d(x, w)`,
 * `relu(x)`); values come back to the CPU only through `await toArray()` or `await item()`.
 *
 * @example
 * ```ts
 * import { initGPU, mean, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.from([1, 2, 3, 4], [2, 2], { requiresGrad: true });
 * const loss = mean(x);
 * loss.backward();
 * console.log(await loss.item());        // 2.5
 * console.log(await x.grad!.toArray());  // Float32Array [0.25, 0.25, 0.25, 0.25]
 * ```
 */
export class Tensor {
  /** Sizes of each dimension, outermost first. */
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  /** Whether autograd computes a gradient for this tensor. */
  requiresGrad: boolean;
  /** The accumulated gradient, after `backward()`; `null` before. */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor; `null` for leaves. */
  gradFn: GradNode | null = null;
  #storage: Storage | null;

  static {
    storageOf = (t) => t.#live();
  }

  /**
   * Wraps a pooled buffer, shares another tensor's storage (a view), or takes a slice of a shared
   * buffer (`{ buffer, offset }`, internal); use the static constructors instead.
   */
  constructor(
    shape: Shape,
    storage: GPUBuffer | Tensor | GPUBufferBinding,
    options: TensorOptions = {},
  ) {
    this.size = shapeSize(shape);
    this.shape = Object.freeze([...shape]);
    this.requiresGrad = options.requiresGrad ?? false;
    if (storage instanceof Tensor) {
      const shared = storage.#live();
      shared.refs++;
      this.#storage = shared;
    } else if (storage instanceof GPUBuffer) {
      this.#storage = new Storage(storage);
    } else {
      const arena = arenas.get(storage.buffer) ?? null;
      if (!arena) throw new Error("Tensor: a slice must lie in a live arena buffer");
      arena.retain();
      this.#storage = new Storage(storage.buffer, storage.offset ?? 0, arena);
    }
    collected.register(this, this.#storage, this);
    track(this);
  }

  /**
   * An uninitialised tensor from the buffer pool; the caller's kernel must write every element.
   */
  static empty(shape: Shape, options: TensorOptions = {}): Tensor {
    return new Tensor(shape, acquireBuffer(shapeSize(shape) * 4), options);
  }

  /**
   * A tensor holding `data` (converted to float32) with `shape` (default `[data.length]`).
   *
   * @throws {RangeError} when the shape's size differs from `data.length`.
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const x = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
   * console.log(x.shape); // [2, 3]
   * ```
   */
  static from(data: TensorData, shape?: Shape, options: TensorOptions = {}): Tensor {
    if (data === null || typeof data !== "object" || typeof data.length !== "number") {
      throw new TypeError(
        `Tensor.from() expects an array or typed array of numbers, got ${typeof data}`,
      );
    }
    const dims = shape ?? [data.length];
    const size = shapeSize(dims);
    if (size !== data.length) {
      throw new RangeError(
        `Tensor.from(): shape ${formatShape(dims)} holds ${size} elements but data has ` +
          `${data.length}`,
      );
    }
    const values = data instanceof Float32Array ? data : Float32Array.from(data);
    const t = Tensor.empty(dims, options);
    if (size > 0) writeBuffer(t.buffer, values, t.byteOffset);
    return t;
  }

  /**
   * A tensor filled with `value`.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * console.log(await Tensor.full([2], 7).toArray()); // Float32Array [7, 7]
   * ```
   */
  static full(shape: Shape, value: number, options: TensorOptions = {}): Tensor {
    const t = Tensor.empty(shape, options);
    t.fill(value);
    return t;
  }

  /**
   * A tensor of zeros.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const z = Tensor.zeros([2, 3]);
   * ```
   */
  static zeros(shape: Shape, options: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 0, options);
  }

  /**
   * A tensor of ones.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const o = Tensor.ones([4]);
   * ```
   */
  static ones(shape: Shape, options: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 1, options);
  }

  /**
   * Standard normal samples drawn on the CPU from a seeded generator (reproducible everywhere).
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const x = Tensor.randn([2, 3, 8, 8], { seed: 0 });
   * ```
   */
  static randn(shape: Shape, options: RandomOptions = {}): Tensor {
    const g = options.generator ??
      (options.seed === undefined ? defaultGenerator : new Generator(options.seed));
    const values = new Float32Array(shapeSize(shape));
    for (let i = 0; i < values.length; i++) values[i] = g.normal();
    return Tensor.from(values, shape, options);
  }

  /**
   * Uniform samples in `[low, high)` (default `[0, 1)`) from a seeded generator.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const w = Tensor.rand([3, 3], { seed: 1, low: -1, high: 1 });
   * ```
   */
  static rand(shape: Shape, options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
    const g = options.generator ??
      (options.seed === undefined ? defaultGenerator : new Generator(options.seed));
    const low = options.low ?? 0;
    const high = options.high ?? 1;
    const values = new Float32Array(shapeSize(shape));
    for (let i = 0; i < values.length; i++) values[i] = low + (high - low) * g.uniform();
    return Tensor.from(values, shape, options);
  }

  #live(): Storage {
    const storage = this.#storage;
    if (!storage) {
      throw new Error(
        `This tensor ${formatShape(this.shape)} was disposed (by dispose(), tidy() or a ` +
          "released autograd graph) and can no longer be used.",
      );
    }
    if (storage.device !== currentDevice()) {
      throw new Error(
        `This tensor ${formatShape(this.shape)} belongs to an earlier GPU device (lost, or ` +
          "replaced by a later initGPU()), whose memory is gone: recreate it (and its model) " +
          "after initGPU(), e.g. from a checkpoint.",
      );
    }
    if (storage.zeroBytes > 0) storage.writeZeros();
    return storage;
  }

  /**
   * The GPU buffer holding the values, from {@link Tensor.byteOffset} on (at least `size * 4`
   * bytes from there). Kernels bind {@link Tensor.binding} instead.
   */
  get buffer(): GPUBuffer {
    return this.#live().buffer;
  }

  /**
   * Where the values start in {@link Tensor.buffer}, in bytes: 0 but for a parameter an
   * optimizer moved into its flat parameter buffer (and its gradients and state), where it is a
   * multiple of the device's `minStorageBufferOffsetAlignment`.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * console.log(Tensor.zeros([3]).byteOffset); // 0
   * ```
   */
  get byteOffset(): number {
    return this.#live().offset;
  }

  /**
   * The values as a buffer binding for a kernel dispatch: the whole buffer for a tensor that owns
   * one, `{ buffer, offset, size }` for a slice of a shared buffer, its size rounded up to the
   * pool's 16-byte size classes as a buffer of its own would be (a slice's room in its arena is
   * at least that).
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const t = Tensor.zeros([3]);
   * console.log(t.binding.buffer === t.buffer); // true
   * ```
   */
  get binding(): GPUBufferBinding {
    const storage = this.#live();
    return storage.binding ??= storage.arena
      ? { buffer: storage.buffer, offset: storage.offset, size: sizeClass(this.size * 4) }
      : { buffer: storage.buffer };
  }

  /** Whether {@link Tensor.dispose} was called. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /**
   * Copies the values back to the CPU. Waits for all work encoded so far.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * console.log(await Tensor.ones([2]).toArray()); // Float32Array [1, 1]
   * ```
   */
  async toArray(): Promise<Float32Array> {
    if (this.size === 0) return new Float32Array(0);
    return new Float32Array(await readBuffer(this.buffer, this.byteOffset, this.size * 4));
  }

  /**
   * The value of a one-element tensor.
   *
   * @throws {RangeError} when the tensor has more than one element.
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * console.log(await Tensor.from([3]).item()); // 3
   * ```
   */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new RangeError(
        `item() needs a tensor with one element, got shape ${formatShape(this.shape)}`,
      );
    }
    return (await this.toArray())[0];
  }

  /**
   * Computes gradients of this tensor with respect to every leaf that requires one and adds them
   * to their `grad`. Without `gradient`, the tensor must hold one element (a loss).
   *
   * @throws {RangeError} when no gradient is given for a non-scalar, or its shape differs.
   * @example
   * ```ts
   * import { initGPU, mulScalar, sum, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const x = Tensor.from([1, 2], [2], { requiresGrad: true });
   * sum(mulScalar(x, 3)).backward();
   * console.log(await x.grad!.toArray()); // Float32Array [3, 3]
   * ```
   */
  backward(gradient?: Tensor, options: BackwardOptions = {}): void {
    if (!this.requiresGrad) {
      throw new Error(
        "backward() on a tensor that does not require grad: no input of the ops that made it " +
          "has requiresGrad (or it was computed under noGrad()).",
      );
    }
    let seed: Tensor;
    if (gradient) {
      if (gradient.shape.join() !== this.shape.join()) {
        throw new RangeError(
          `backward(): gradient shape ${formatShape(gradient.shape)} differs from the tensor's ` +
            formatShape(this.shape),
        );
      }
      seed = gradient.clone();
    } else {
      if (this.size !== 1) {
        throw new RangeError(
          `backward() without a gradient needs a one-element tensor (a loss), got shape ` +
            `${formatShape(this.shape)}; pass the gradient explicitly`,
        );
      }
      seed = Tensor.ones(this.shape);
    }
    runBackward(this, seed, options);
  }

  /**
   * A tensor sharing this one's values, cut from the autograd tape.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const x = Tensor.ones([2], { requiresGrad: true });
   * console.log(x.detach().requiresGrad); // false
   * ```
   */
  detach(): Tensor {
    return new Tensor(this.shape, this);
  }

  /**
   * A tensor with the same values in a new buffer, without autograd history.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const copy = Tensor.ones([2]).clone();
   * ```
   */
  clone(): Tensor {
    const t = Tensor.empty(this.shape);
    if (this.size > 0) copyBuffer(this.buffer, this.byteOffset, t.buffer, 0, this.size * 4);
    return t;
  }

  /**
   * A view of the same buffer with another shape of the same size; not recorded on the tape
   * (use the `reshape` op for that).
   */
  viewAs(shape: Shape): Tensor {
    this.#live();
    const size = shapeSize(shape);
    if (size !== this.size) {
      throw new RangeError(
        `view: cannot view shape ${formatShape(this.shape)} (${this.size} elements) as ` +
          `${formatShape(shape)} (${size} elements)`,
      );
    }
    return new Tensor(shape, this);
  }

  /**
   * How many times the values were written in place (`fill`, `copyFrom`, `accumulate`, an
   * optimizer's step, a batch norm's running statistics), as PyTorch's `tensor._version`; views
   * share it. Caches of values derived from a tensor compare it.
   *
   * @example
   * ```ts
   * import { initGPU, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const t = Tensor.zeros([3]);
   * const before = t.version;
   * t.fill(2);
   * console.log(t.version - before); // 1
   * ```
   */
  get version(): number {
    return this.#live().version;
  }

  /** Sets every element to `value` in place. */
  fill(value: number): this {
    this.#live().modified();
    if (this.size === 0) return this;
    if (value === 0 && !Object.is(value, -0)) {
      clearBuffer(this.buffer, this.byteOffset, this.size * 4);
      return this;
    }
    dispatch(FILL, {
      buffers: [this.binding],
      params: { count: this.size, value },
      workgroups: grid1d(this.size, 256),
    });
    return this;
  }

  /** Copies `source`'s values into this tensor in place (same size). */
  copyFrom(source: Tensor): this {
    if (source.size !== this.size) {
      throw new RangeError(
        `copyFrom(): sizes differ (${formatShape(source.shape)} into ${formatShape(this.shape)})`,
      );
    }
    this.#live().modified();
    if (this.size > 0) {
      copyBuffer(source.buffer, source.byteOffset, this.buffer, this.byteOffset, this.size * 4);
    }
    return this;
  }

  /** Adds `source` into this tensor in place (same size); used to accumulate gradients. */
  accumulate(source: Tensor): this {
    if (source.size !== this.size) {
      throw new RangeError(
        `accumulate(): sizes differ (${formatShape(source.shape)} into ${formatShape(this.shape)})`,
      );
    }
    // A sum of gradients whose channels sum to 0 still does.
    const mine = this.#live().zeroChannelSums;
    const theirs = source.#live().zeroChannelSums;
    this.#live().modified();
    if (mine && theirs && mine[0] === theirs[0] && mine[1] === theirs[1]) {
      this.#live().zeroChannelSums = mine;
    }
    if (this.size === 0) return this;
    dispatch(ADD_INPLACE, {
      buffers: [this.binding, source.binding],
      params: { count: this.size },
      workgroups: grid1d(this.size, 256),
    });
    return this;
  }

  /** Removes this tensor from every open `tidy()` scope; returns it. */
  keep(): this {
    return keep(this);
  }

  /**
   * Returns the GPU buffer to the pool now. Idempotent. Views and detached copies keep the buffer
   * alive until they are disposed too.
   */
  dispose(): void {
    if (!this.#storage) return;
    collected.unregister(this);
    this.#storage.release();
    this.#storage = null;
  }

  /** Like PyTorch's repr: shape, and `requiresGrad` or the op that made it. */
  toString(): string {
    const extra = this.gradFn
      ? `, gradFn=${this.gradFn.name}`
      : this.requiresGrad
      ? ", requiresGrad=true"
      : "";
    return `Tensor(${formatShape(this.shape)}${extra}${this.disposed ? ", disposed" : ""})`;
  }
}

/** Packs a `{ u32, f32 }` uniform struct. */
/** Whether ops should record a node now: grad mode is on and an input requires grad. */
export function shouldRecord(...inputs: (Tensor | null | undefined)[]): boolean {
  return isGradEnabled() && inputs.some((t) => t?.requiresGrad);
}

/**
 * Attaches a tape node to `output` (which then requires grad). Ops call this only when
 * {@link shouldRecord} holds.
 */
export function record(output: Tensor, node: GradNode): Tensor {
  output.gradFn = node;
  output.requiresGrad = true;
  return output;
}
