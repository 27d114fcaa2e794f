/**
 * Learning-rate schedules stepped once per iteration: {@link MultiStepLR} (the ResNet paper's
 * divide-by-10 at fixed iterations), {@link CosineLR} (linear warm-up, then cosine annealing) and
 * {@link OneCycleLR} (PyTorch's one-cycle policy). Each sets the optimizer's `lr` for iteration 0
 * when constructed and for the next iteration at each `step()`; call `step()` after
 * `optimizer.step()`, as in PyTorch.
 *
 * @module
 */

/** Anything with a learning rate a schedule can set: every {@link Optimizer}. */
export interface LrTarget {
  /** The learning rate used by the next update. */
  lr: number;
}

/** A schedule's state: the iteration it has reached, and the base learning rate it scales. */
export interface ScheduleState {
  /** Number of `step()` calls so far. */
  iteration: number;
  /** The learning rate the schedule starts from (absent for {@link OneCycleLR}). */
  baseLr?: number;
}

function checkTarget(owner: string, optimizer: LrTarget): void {
  if (optimizer === null || typeof optimizer !== "object" || typeof optimizer.lr !== "number") {
    throw new TypeError(`${owner}: expects an optimizer (an object with a numeric lr)`);
  }
}

function checkCount(owner: string, option: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`${owner}: ${option} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

function checkRate(owner: string, option: string, value: unknown, positive = false): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (positive && !value)) {
    throw new RangeError(
      `${owner}: ${option} must be a finite number ${positive ? "> 0" : ">= 0"}, got ` +
        String(value),
    );
  }
  return value;
}

/**
 * The base of the learning-rate schedules: the iteration counter, `step()` and the state dict.
 * A subclass gives the learning rate of each iteration in {@link Schedule.lrAt}.
 *
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * await initGPU();
 * const opt = new optim.SGD(new nn.Linear(4, 2).parameters(), { lr: 0.1 });
 * const schedule: optim.Schedule = new optim.CosineLR(opt, { totalSteps: 10 });
 * schedule.step();
 * console.log(schedule.iteration, opt.lr === schedule.lrAt(1)); // 1 true
 * ```
 */
export abstract class Schedule {
  /** The optimizer whose `lr` this schedule sets. */
  readonly optimizer: LrTarget;
  #iteration = 0;

  /** Binds the schedule to `optimizer`; `owner` names the subclass in messages. */
  constructor(owner: string, optimizer: LrTarget) {
    checkTarget(owner, optimizer);
    this.optimizer = optimizer;
  }

  /** The learning rate for `iteration` (0 is the first update). */
  abstract lrAt(iteration: number): number;

  /** The number of `step()` calls so far: the iteration whose learning rate is set now. */
  get iteration(): number {
    return this.#iteration;
  }

  /** Advances one iteration, sets `optimizer.lr` for it and returns that learning rate. */
  step(): number {
    const lr = this.lrAt(this.#iteration + 1);
    this.#iteration++;
    this.optimizer.lr = lr;
    return lr;
  }

  /** The iteration reached (and the base learning rate), for a checkpoint. */
  stateDict(): ScheduleState {
    return { iteration: this.#iteration };
  }

  /**
   * Resumes at `state.iteration` and sets `optimizer.lr` for it.
   *
   * @throws {RangeError} when the iteration is not a non-negative integer or out of range.
   */
  loadStateDict(state: ScheduleState): void {
    if (state === null || typeof state !== "object") {
      throw new TypeError(`${this.constructor.name}.loadStateDict(): expects { iteration }`);
    }
    const iteration = checkCount(this.constructor.name, "iteration", state.iteration, 0);
    const lr = this.lrAt(iteration);
    this.#iteration = iteration;
    this.optimizer.lr = lr;
  }

  /** Throws a RangeError unless `iteration` is a non-negative integer. */
  protected checkIteration(iteration: number): void {
    checkCount(`${this.constructor.name}.lrAt()`, "iteration", iteration, 0);
  }
}

/** Options of {@link MultiStepLR}. */
export interface MultiStepLROptions {
  /** Iterations at which the learning rate is multiplied by `gamma` (non-negative integers). */
  milestones: readonly number[];
  /** The factor; default 0.1. */
  gamma?: number;
}

/**
 * The learning rate `baseLr * gamma^k`, k the number of milestones `<=` the iteration, like
 * PyTorch's `MultiStepLR` stepped per iteration. The base is the optimizer's `lr` when the
 * schedule is created. The ResNet paper's CIFAR schedule: lr 0.1, ÷10 at 32k and 48k iterations.
 *
 * @throws {RangeError} when a milestone is not a non-negative integer or gamma is not > 0.
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * await initGPU();
 * const opt = new optim.SGD(new nn.Linear(4, 2).parameters(), { lr: 0.1, momentum: 0.9 });
 * const schedule = new optim.MultiStepLR(opt, { milestones: [32000, 48000] });
 * console.log(schedule.lrAt(40000)); // 0.010000000000000002 (0.1 × 0.1)
 * // each iteration: opt.step(); schedule.step();
 * ```
 */
export class MultiStepLR extends Schedule {
  /** The sorted milestones. */
  readonly milestones: readonly number[];
  /** The factor applied at each milestone. */
  readonly gamma: number;
  #baseLr: number;

  /** Scales `optimizer.lr` (read now as the base rate) and sets it for iteration 0. */
  constructor(optimizer: LrTarget, options: MultiStepLROptions) {
    super("MultiStepLR", optimizer);
    if (options === null || typeof options !== "object" || !Array.isArray(options.milestones)) {
      throw new TypeError(
        "MultiStepLR: options must give milestones, e.g. { milestones: [32000] }",
      );
    }
    options.milestones.forEach((m) => checkCount("MultiStepLR", "each milestone", m, 0));
    this.milestones = Object.freeze([...options.milestones].sort((a, b) => a - b));
    this.gamma = checkRate("MultiStepLR", "gamma", options.gamma ?? 0.1, true);
    this.#baseLr = optimizer.lr;
    optimizer.lr = this.lrAt(0);
  }

  /** The learning rate the milestones scale. */
  get baseLr(): number {
    return this.#baseLr;
  }

  /** `baseLr * gamma^k`, k the number of milestones `<= iteration`. */
  lrAt(iteration: number): number {
    this.checkIteration(iteration);
    let k = 0;
    while (k < this.milestones.length && this.milestones[k] <= iteration) k++;
    return this.#baseLr * this.gamma ** k;
  }

  /** `{ iteration, baseLr }`: the base rate too, since the optimizer's lr has moved on. */
  override stateDict(): ScheduleState {
    return { iteration: this.iteration, baseLr: this.#baseLr };
  }

  /** Resumes at `state.iteration`, with `state.baseLr` when given. */
  override loadStateDict(state: ScheduleState): void {
    const previous = this.#baseLr;
    if (state?.baseLr !== undefined) {
      this.#baseLr = checkRate("MultiStepLR.loadStateDict()", "baseLr", state.baseLr);
    }
    try {
      super.loadStateDict(state);
    } catch (error) {
      this.#baseLr = previous;
      throw error;
    }
  }
}

/** Options of {@link CosineLR}. */
export interface CosineLROptions {
  /** Iterations of the whole schedule (warm-up included); the rate is `minLr` from then on. */
  totalSteps: number;
  /** Iterations of linear warm-up; default 0. */
  warmupSteps?: number;
  /** The final learning rate; default 0. */
  minLr?: number;
}

/**
 * Linear warm-up then cosine annealing: for iteration `t < warmupSteps`, `baseLr * (t + 1) /
 * warmupSteps` (from `baseLr / warmupSteps` up to `baseLr`); then
 * `minLr + (baseLr - minLr) * (1 + cos(pi * (t - warmupSteps) / (totalSteps - warmupSteps))) / 2`,
 * which reaches `minLr` at `totalSteps` and stays there. The base is the optimizer's `lr` when
 * the schedule is created.
 *
 * @throws {RangeError} when `totalSteps` is not a positive integer, `warmupSteps` not an integer
 *   in `[0, totalSteps)`, or `minLr` negative.
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * await initGPU();
 * const opt = new optim.SGD(new nn.Linear(4, 2).parameters(), { lr: 0.1 });
 * const schedule = new optim.CosineLR(opt, { totalSteps: 1000, warmupSteps: 100 });
 * console.log(opt.lr); // 0.001 (iteration 0 of the warm-up)
 * console.log(schedule.lrAt(550)); // ≈ 0.05, half way through the annealing
 * ```
 */
export class CosineLR extends Schedule {
  /** Iterations of the whole schedule. */
  readonly totalSteps: number;
  /** Iterations of linear warm-up. */
  readonly warmupSteps: number;
  /** The final learning rate. */
  readonly minLr: number;
  #baseLr: number;

  /** Anneals from `optimizer.lr` (read now as the base rate) and sets it for iteration 0. */
  constructor(optimizer: LrTarget, options: CosineLROptions) {
    super("CosineLR", optimizer);
    if (options === null || typeof options !== "object") {
      throw new TypeError("CosineLR: options must give totalSteps, e.g. { totalSteps: 64000 }");
    }
    this.totalSteps = checkCount("CosineLR", "totalSteps", options.totalSteps, 1);
    this.warmupSteps = checkCount("CosineLR", "warmupSteps", options.warmupSteps ?? 0, 0);
    if (this.warmupSteps >= this.totalSteps) {
      throw new RangeError(
        `CosineLR: warmupSteps (${this.warmupSteps}) must be less than totalSteps ` +
          `(${this.totalSteps})`,
      );
    }
    this.minLr = checkRate("CosineLR", "minLr", options.minLr ?? 0);
    this.#baseLr = optimizer.lr;
    optimizer.lr = this.lrAt(0);
  }

  /** The learning rate reached at the end of the warm-up. */
  get baseLr(): number {
    return this.#baseLr;
  }

  /** The warm-up or cosine rate of `iteration`; `minLr` from `totalSteps` on. */
  lrAt(iteration: number): number {
    this.checkIteration(iteration);
    if (iteration < this.warmupSteps) return this.#baseLr * (iteration + 1) / this.warmupSteps;
    const progress = Math.min(
      1,
      (iteration - this.warmupSteps) / (this.totalSteps - this.warmupSteps),
    );
    return this.minLr + (this.#baseLr - this.minLr) * (1 + Math.cos(Math.PI * progress)) / 2;
  }

  /** `{ iteration, baseLr }`: the base rate too, since the optimizer's lr has moved on. */
  override stateDict(): ScheduleState {
    return { iteration: this.iteration, baseLr: this.#baseLr };
  }

  /** Resumes at `state.iteration`, with `state.baseLr` when given. */
  override loadStateDict(state: ScheduleState): void {
    const previous = this.#baseLr;
    if (state?.baseLr !== undefined) {
      this.#baseLr = checkRate("CosineLR.loadStateDict()", "baseLr", state.baseLr);
    }
    try {
      super.loadStateDict(state);
    } catch (error) {
      this.#baseLr = previous;
      throw error;
    }
  }
}

/** Options of {@link OneCycleLR}. */
export interface OneCycleLROptions {
  /** The peak learning rate. */
  maxLr: number;
  /** Iterations of the cycle; stepping beyond it is an error, as in PyTorch. */
  totalSteps: number;
  /** Fraction of the cycle spent increasing the rate; default 0.3. */
  pctStart?: number;
  /** The initial rate is `maxLr / divFactor`; default 25. */
  divFactor?: number;
  /** The final rate is `maxLr / divFactor / finalDivFactor`; default 1e4. */
  finalDivFactor?: number;
}

/**
 * PyTorch's `OneCycleLR` with cosine annealing (`anneal_strategy="cos"`, two phases), learning
 * rate only (no momentum cycling), same formula: from `maxLr / divFactor` up to `maxLr` over the
 * first `pctStart * totalSteps - 1` iterations, then down to `maxLr / divFactor /
 * finalDivFactor` at iteration `totalSteps - 1`. Ignores the optimizer's initial `lr`.
 *
 * @throws {RangeError} when `maxLr`, `divFactor` or `finalDivFactor` is not > 0, `totalSteps` not
 *   a positive integer, or `pctStart` outside `[0, 1)` or making the first phase empty.
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * await initGPU();
 * const opt = new optim.SGD(new nn.Linear(4, 2).parameters(), { lr: 0.1, momentum: 0.9 });
 * const schedule = new optim.OneCycleLR(opt, { maxLr: 0.1, totalSteps: 1000 });
 * console.log(opt.lr); // ≈ 0.004 (0.1 / 25)
 * console.log(schedule.lrAt(299)); // 0.1, the peak
 * ```
 */
export class OneCycleLR extends Schedule {
  /** The peak learning rate. */
  readonly maxLr: number;
  /** Iterations of the cycle. */
  readonly totalSteps: number;
  /** Fraction of the cycle spent increasing the rate. */
  readonly pctStart: number;
  /** The initial rate's divisor. */
  readonly divFactor: number;
  /** The final rate's divisor (after `divFactor`). */
  readonly finalDivFactor: number;

  /** Sets `optimizer.lr` to `maxLr / divFactor`, the rate of iteration 0. */
  constructor(optimizer: LrTarget, options: OneCycleLROptions) {
    super("OneCycleLR", optimizer);
    if (options === null || typeof options !== "object") {
      throw new TypeError("OneCycleLR: options must give maxLr and totalSteps");
    }
    this.maxLr = checkRate("OneCycleLR", "maxLr", options.maxLr, true);
    this.totalSteps = checkCount("OneCycleLR", "totalSteps", options.totalSteps, 1);
    const pct = options.pctStart ?? 0.3;
    if (typeof pct !== "number" || !(pct >= 0 && pct < 1) || pct * this.totalSteps === 1) {
      throw new RangeError(
        `OneCycleLR: pctStart must be in [0, 1) with pctStart * totalSteps != 1 (an empty ` +
          `warm-up phase), got ${String(pct)}`,
      );
    }
    this.pctStart = pct;
    this.divFactor = checkRate("OneCycleLR", "divFactor", options.divFactor ?? 25, true);
    this.finalDivFactor = checkRate(
      "OneCycleLR",
      "finalDivFactor",
      options.finalDivFactor ?? 1e4,
      true,
    );
    optimizer.lr = this.lrAt(0);
  }

  /**
   * The learning rate for `iteration`, as PyTorch's `get_lr` for `last_epoch = iteration`.
   *
   * @throws {RangeError} beyond `totalSteps`, as PyTorch refuses to step past it.
   */
  lrAt(iteration: number): number {
    this.checkIteration(iteration);
    if (iteration > this.totalSteps) {
      throw new RangeError(
        `OneCycleLR: tried to step ${iteration + 1} times; the schedule has totalSteps ` +
          `${this.totalSteps}`,
      );
    }
    const initialLr = this.maxLr / this.divFactor;
    const minLr = initialLr / this.finalDivFactor;
    const phases = [
      { end: this.pctStart * this.totalSteps - 1, from: initialLr, to: this.maxLr },
      { end: this.totalSteps - 1, from: this.maxLr, to: minLr },
    ];
    let start = 0;
    for (let i = 0; i < phases.length; i++) {
      const { end, from, to } = phases[i];
      if (iteration <= end || i === phases.length - 1) {
        const pct = (iteration - start) / (end - start);
        return to + (from - to) / 2 * (Math.cos(Math.PI * pct) + 1);
      }
      start = end;
    }
    throw new Error("unreachable");
  }
}
