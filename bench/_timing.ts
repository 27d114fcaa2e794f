// Timing on a queue whose every wait costs ~11 ms: encode a kernel R times, then time one submit
// and one readback, subtract the cost of a readback on an idle queue, divide by R.
import { Tensor } from "@resnet/webgpu";

export interface TimingOptions {
  /** Each measurement repeats the kernel until it lasts at least this long. */
  targetMs: number;
  /** Measurements whose median is reported. */
  samples: number;
  /** Upper bound on repetitions per measurement (encoding thousands of dispatches costs too). */
  maxReps: number;
}

export interface Timing {
  /** Median milliseconds per call. */
  ms: number;
  /** Calls per measurement. */
  reps: number;
  /** Milliseconds per call of each measurement. */
  samplesMs: number[];
  /** Dispatches one call encodes. */
  dispatches: number;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Waits for everything encoded so far through the readback of a one-element tensor. */
export class Clock {
  #probe: Tensor;
  /** Milliseconds of a readback with nothing else queued (submit + mapAsync round trip). */
  overheadMs = 0;

  constructor() {
    this.#probe = Tensor.zeros([1]).keep();
  }

  async sync(): Promise<void> {
    await this.#probe.toArray();
  }

  /** Measures the idle round trip: the median of `count` readbacks on an idle queue. */
  async calibrate(count = 7): Promise<number> {
    await this.sync();
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      await this.sync();
      times.push(performance.now() - t0);
    }
    this.overheadMs = median(times);
    return this.overheadMs;
  }

  /**
   * Times `encode` (which must only encode GPU work and dispose what it creates): once to warm up
   * (pipeline compilation, pool and cache fills), once to choose R, then `samples` measurements
   * of R calls. Only submit-to-readback time is measured; the JS encoding of the R calls is not.
   */
  async time(
    encode: () => void,
    options: TimingOptions,
    counters: () => number,
  ): Promise<Timing> {
    encode();
    await this.sync();
    // Counted after the warm-up, which may add one-time work (an optimizer's state fills).
    const before = counters();
    const once = await this.#measure(encode, 1);
    const dispatches = counters() - before;
    const reps = Math.max(
      1,
      Math.min(options.maxReps, Math.ceil(options.targetMs / Math.max(once, 0.005))),
    );
    const samplesMs: number[] = [];
    for (let s = 0; s < options.samples; s++) samplesMs.push(await this.#measure(encode, reps));
    return { ms: median(samplesMs), reps, samplesMs, dispatches };
  }

  async #measure(encode: () => void, reps: number): Promise<number> {
    for (let r = 0; r < reps; r++) encode();
    const t0 = performance.now();
    await this.sync();
    const elapsed = performance.now() - t0;
    return Math.max(elapsed - this.overheadMs, 0) / reps;
  }
}

/** The 1-, 5- and 15-minute load averages (needs --allow-sys=loadavg), or null. */
export function loadAverage(): number[] | null {
  try {
    return Deno.loadavg();
  } catch {
    return null;
  }
}
