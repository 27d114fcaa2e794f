/**
 * Training speed and time left: {@link ThroughputMeter} turns "these steps finished by now" into
 * smoothed images per second and the run's ETA, leaving out the first steps (which compile the
 * GPU pipelines and would make the estimate far too long).
 *
 * @module
 */

/** Options of {@link ThroughputMeter}. */
export interface ThroughputMeterOptions {
  /** Steps of the whole run, counted from its start, for {@link ThroughputMeter.etaSeconds}. */
  totalSteps?: number;
  /**
   * Steps taken before this meter started (a resumed run): they count toward `totalSteps` but
   * are not timed. Default 0.
   */
  completedSteps?: number;
  /**
   * Steps at the start that are not timed, because the first steps compile pipelines. A window
   * is timed only when at least this many steps were recorded before it. Default 2.
   */
  warmupSteps?: number;
  /**
   * Weight of the newest window in the smoothed rates, in (0, 1]; 1 keeps only the newest
   * window. Default 0.3.
   */
  smoothing?: number;
}

/**
 * Measures training throughput between points where the GPU's work is known to have finished
 * (after a readback: GPU work runs asynchronously, so timing the CPU loop alone measures only the
 * encoding). Each {@link ThroughputMeter.update} closes a window that began at the previous
 * update (or {@link ThroughputMeter.restart}); a window's rate enters an exponential moving
 * average, except for windows that begin before `warmupSteps` steps were recorded.
 *
 * @example
 * ```ts
 * import { ThroughputMeter } from "@resnet/webgpu/train";
 * const meter = new ThroughputMeter({ totalSteps: 10, warmupSteps: 1, smoothing: 0.5 });
 * meter.update(1, 100, 0); // the first step: compiles pipelines, not timed
 * meter.update(1, 100, 1000); // 1 step of 100 images in 1 s
 * console.log(meter.imagesPerSecond, meter.etaSeconds); // 100 8
 * meter.update(2, 200, 2000); // 2 steps in 1 s: the average moves half way
 * console.log(meter.imagesPerSecond, meter.secondsPerStep, meter.etaSeconds); // 150 0.75 4.5
 * ```
 */
export class ThroughputMeter {
  /** Steps of the whole run (`Infinity` when not given). */
  readonly totalSteps: number;
  readonly #warmupSteps: number;
  readonly #smoothing: number;
  #steps: number;
  #recorded = 0;
  #windowStart: number | undefined;
  #imagesPerSecond = NaN;
  #secondsPerStep = NaN;

  /** A meter with nothing measured yet. */
  constructor(options: ThroughputMeterOptions = {}) {
    const { totalSteps = Infinity, completedSteps = 0, warmupSteps = 2, smoothing = 0.3 } = options;
    if (!(smoothing > 0 && smoothing <= 1)) {
      throw new RangeError(`ThroughputMeter: smoothing must be in (0, 1], got ${smoothing}`);
    }
    this.totalSteps = totalSteps;
    this.#steps = completedSteps;
    this.#warmupSteps = warmupSteps;
    this.#smoothing = smoothing;
  }

  /**
   * Records that `steps` more steps of `images` images in all had finished at `now`
   * (milliseconds, default `performance.now()`), which closes the current window.
   */
  update(steps: number, images: number, now: number = performance.now()): void {
    const start = this.#windowStart;
    if (start !== undefined && this.#recorded >= this.#warmupSteps && steps > 0 && now > start) {
      const seconds = (now - start) / 1000;
      const a = this.measured ? this.#smoothing : 1;
      this.#imagesPerSecond = a * (images / seconds) + (1 - a) * (this.#imagesPerSecond || 0);
      this.#secondsPerStep = a * (seconds / steps) + (1 - a) * (this.#secondsPerStep || 0);
    }
    this.#recorded += steps;
    this.#steps += steps;
    this.#windowStart = now;
  }

  /**
   * Starts the next window at `now` without timing what happened since the last update: call it
   * after work that is not training (an evaluation, a checkpoint) and before the first step.
   */
  restart(now: number = performance.now()): void {
    this.#windowStart = now;
  }

  /** Whether a window has been timed, so the rates and the ETA are known. */
  get measured(): boolean {
    return !Number.isNaN(this.#secondsPerStep);
  }

  /** Steps taken in all (including `completedSteps`). */
  get steps(): number {
    return this.#steps;
  }

  /** Smoothed training images per second; `NaN` until {@link ThroughputMeter.measured}. */
  get imagesPerSecond(): number {
    return this.#imagesPerSecond;
  }

  /** Smoothed seconds per step; `NaN` until {@link ThroughputMeter.measured}. */
  get secondsPerStep(): number {
    return this.#secondsPerStep;
  }

  /** Seconds that `steps` more steps take at the current rate. */
  secondsFor(steps: number): number {
    return Math.max(0, steps) * this.#secondsPerStep;
  }

  /** Seconds left in the run: the steps left of `totalSteps` at the current rate. */
  get etaSeconds(): number {
    return this.secondsFor(this.totalSteps - this.#steps);
  }
}
