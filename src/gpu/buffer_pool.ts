/**
 * A pool of storage buffers keyed by byte size, so that a training loop that repeats the same
 * shapes allocates nothing from the device after its first step. Each size class hands out its
 * free buffer that was created first, so a step that acquires and releases the same sizes in the
 * same order as the step before gets the same buffers in the same places, and the bind groups
 * cached for that step serve it again.
 *
 * @module
 */
import { getDevice } from "./device.ts";

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

// Free buffers per size class, ordered by creation number, latest first: pop() gives the oldest.
const free = new Map<number, GPUBuffer[]>();
// Free buffers the garbage collector returned, per size class (see releaseBuffer).
const spares = new Map<number, GPUBuffer[]>();
const serials = new WeakMap<GPUBuffer, number>();
let created = 0;
let allocatedBytes = 0;
let inUseBytes = 0;
let peakInUseBytes = 0;
let allocations = 0;
let poolDevice: GPUDevice | null = null;
// Buffers of the current device; a lost device's buffers are never handed out again.
let owned = new WeakSet<GPUBuffer>();
// Buffers held by tensors, with the serial number of their checkout (see inUseBytesSince).
const checkedOut = new Map<GPUBuffer, number>();
let checkouts = 0;

/** Rounds a byte length up to the pool's size class (a multiple of 16, at least 16). */
export function sizeClass(byteLength: number): number {
  return Math.max(16, Math.ceil(byteLength / 16) * 16);
}

/**
 * Takes a storage buffer of at least `byteLength` bytes from the pool, creating one only when
 * none of that size class is free. Its contents are undefined: the caller writes all of it.
 */
export function acquireBuffer(byteLength: number): GPUBuffer {
  const device = getDevice();
  if (device !== poolDevice) {
    free.clear();
    spares.clear();
    checkedOut.clear();
    pins.clear();
    owned = new WeakSet();
    allocatedBytes = inUseBytes = peakInUseBytes = 0;
    poolDevice = device;
  }
  const size = sizeClass(byteLength);
  const list = free.get(size);
  const reused = list?.pop() ?? spares.get(size)?.pop();
  inUseBytes += size;
  peakInUseBytes = Math.max(peakInUseBytes, inUseBytes);
  if (reused) {
    checkedOut.set(reused, ++checkouts);
    return reused;
  }
  const limit = device.limits.maxStorageBufferBindingSize;
  if (size > limit) {
    throw new RangeError(
      `A tensor of ${byteLength} bytes exceeds this adapter's largest storage buffer ` +
        `(${limit} bytes); use a smaller batch size.`,
    );
  }
  allocatedBytes += size;
  allocations++;
  const buffer = device.createBuffer({ size, usage: STORAGE_USAGE, label: `pool:${size}` });
  owned.add(buffer);
  serials.set(buffer, ++created);
  checkedOut.set(buffer, ++checkouts);
  return buffer;
}

/**
 * Returns a buffer to the pool. Work already encoded that uses it still runs first: the queue
 * executes in order, so a later writer cannot overtake an earlier reader. A buffer `collected`
 * by the garbage collector (at a moment no program decides) waits among the spares, which serve
 * only when no buffer freed by dispose() is at hand, so it does not change which buffers a
 * repeated step gets.
 */
export function releaseBuffer(buffer: GPUBuffer, collected = false): void {
  if (!owned.has(buffer)) return;
  checkedOut.delete(buffer);
  const pin = pins.get(buffer);
  if (pin) {
    // Kept out of the free lists while pinned: a replay writes it. Still counted in use.
    pin.held = false;
    return;
  }
  const size = buffer.size;
  inUseBytes -= size;
  if (collected) {
    let list = spares.get(size);
    if (!list) spares.set(size, list = []);
    list.push(buffer);
    return;
  }
  let list = free.get(size);
  if (!list) free.set(size, list = []);
  // Insert by creation number (latest first): the lists are short, and buffers released in the
  // order they were taken land near the end after a comparison or two.
  const serial = serials.get(buffer)!;
  let i = list.length;
  while (i > 0 && serials.get(list[i - 1])! < serial) i--;
  list.splice(i, 0, buffer);
}

/** A pinned buffer: how many holders pinned it, and whether a tensor holds it too. */
interface Pin {
  count: number;
  held: boolean;
}

// Buffers that recorded commands use (see pinBuffers), never handed out while pinned.
const pins = new Map<GPUBuffer, Pin>();

/**
 * Keeps the pool from handing out `buffers` (those it owns) until {@link unpinBuffers}: a
 * recorded step replays commands that write them, so nothing else may get them, even after the
 * tensors that held them are disposed. Free ones leave the free lists; all count as in use while
 * pinned. Pins nest: a buffer pinned twice needs two unpins. Internal.
 */
export function pinBuffers(buffers: Iterable<GPUBuffer>): void {
  for (const buffer of buffers) {
    if (!owned.has(buffer)) continue;
    const pin = pins.get(buffer);
    if (pin) {
      pin.count++;
      continue;
    }
    const held = checkedOut.has(buffer);
    if (!held) {
      for (const lists of [free, spares]) {
        const list = lists.get(buffer.size);
        const i = list?.indexOf(buffer) ?? -1;
        if (i >= 0) list!.splice(i, 1);
      }
      inUseBytes += buffer.size;
      peakInUseBytes = Math.max(peakInUseBytes, inUseBytes);
    }
    pins.set(buffer, { count: 1, held });
  }
}

/**
 * Undoes one {@link pinBuffers} of each buffer; a buffer no longer pinned and held by no tensor
 * goes back to the free lists. Internal.
 */
export function unpinBuffers(buffers: Iterable<GPUBuffer>): void {
  for (const buffer of buffers) {
    const pin = pins.get(buffer);
    if (!pin || --pin.count > 0) continue;
    pins.delete(buffer);
    if (!pin.held && owned.has(buffer)) {
      checkedOut.set(buffer, ++checkouts);
      releaseBuffer(buffer);
    }
  }
}

/**
 * Whether `buffer` is pinned and held by no tensor, so that {@link adoptPinned} may give it to a
 * new one. Internal.
 */
export function isPinnedFree(buffer: GPUBuffer): boolean {
  const pin = pins.get(buffer);
  return pin !== undefined && !pin.held;
}

/**
 * Marks a pinned buffer that no tensor holds as held again, for a tensor that wraps it (a
 * replayed step's output or gradient, whose earlier tensor was disposed). Internal.
 *
 * @throws {Error} when the buffer is not pinned or a tensor already holds it.
 */
export function adoptPinned(buffer: GPUBuffer): GPUBuffer {
  const pin = pins.get(buffer);
  if (!pin || pin.held) throw new Error("adoptPinned(): the buffer is not a free pinned buffer");
  pin.held = true;
  checkedOut.set(buffer, ++checkouts);
  return buffer;
}

/**
 * A mark for {@link inUseBytesSince}: the number of checkouts so far. Internal (tests): not
 * exported by mod.ts.
 */
export function poolMark(): number {
  return checkouts;
}

/**
 * Bytes of the buffers taken from the pool after `mark` and still held. Unlike differences of
 * `memoryStats().inUseBytes`, it does not move when the garbage collector reclaims tensors made
 * before the mark, so a leak check around a piece of work sees only that work's buffers.
 */
export function inUseBytesSince(mark: number): number {
  let bytes = 0;
  for (const [buffer, serial] of checkedOut) if (serial > mark) bytes += buffer.size;
  return bytes;
}

/** Figures about device memory held by the pool, in bytes. */
export interface MemoryStats {
  /** Bytes of all buffers the pool has created (in use and free). */
  allocatedBytes: number;
  /** Bytes of buffers held by live tensors. */
  inUseBytes: number;
  /** Largest `inUseBytes` seen since the last {@link resetPeakMemory}. */
  peakInUseBytes: number;
  /** Number of buffers created from the device. */
  allocations: number;
}

/**
 * Memory held by the buffer pool.
 *
 * @example
 * ```ts
 * import { initGPU, memoryStats, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const t = Tensor.zeros([2, 3]);
 * console.log(memoryStats().inUseBytes >= 24);
 * t.dispose();
 * ```
 */
export function memoryStats(): MemoryStats {
  return { allocatedBytes, inUseBytes, peakInUseBytes, allocations };
}

/**
 * Resets the peak of {@link memoryStats} to the memory in use now.
 *
 * @example
 * ```ts
 * import { resetPeakMemory } from "@resnet/webgpu";
 * resetPeakMemory();
 * ```
 */
export function resetPeakMemory(): void {
  peakInUseBytes = inUseBytes;
}
