/**
 * Adam (with L2 weight decay) and AdamW (with decoupled weight decay), as PyTorch 1.13's
 * `torch.optim.Adam` and `torch.optim.AdamW`.
 *
 * @module
 */
import adamStepSource from "../../kernels/adam_step.wgsl" with { type: "text" };
import adamMultiStepSource from "../../kernels/adam_multi_step.wgsl" with { type: "text" };
import adamPrepareSource from "../../kernels/adam_prepare.wgsl" with { type: "text" };
import { getDevice } from "../gpu/device.ts";
import { destroyBuffer, dispatch, grid1d, kernel, writeBuffer } from "../gpu/dispatch.ts";
import { markModified, Tensor } from "../tensor.ts";
import { checkNonNegative, checkUnitInterval, type HyperValue, Optimizer } from "./optimizer.ts";

const ADAM_STEP = kernel("adam_step", adamStepSource, [
  "n0",
  "n1",
  "beta1",
  "one_minus_beta1",
  "beta2",
  "one_minus_beta2",
  "eps",
  "l2",
  "decay",
]);

const ADAM_MULTI_STEP = kernel("adam_multi_step", adamMultiStepSource, [
  "first_chunk",
  "chunks",
  "beta1",
  "one_minus_beta1",
  "beta2",
  "one_minus_beta2",
  "eps",
  "l2",
  "decay",
]);

const ADAM_PREPARE = kernel("adam_prepare", adamPrepareSource, ["count", "lr", "table_base"]);

/**
 * How many future step counts each window of the bias-correction table holds: the table is
 * uploaded again when a parameter's next step count leaves its window. Internal; tests make it
 * small to cross refills quickly.
 */
export const adamTableWindow = { steps: 1024 };

/** Bytes between two parameters' factors, so that adam_step can bind one as a uniform. */
const FACTOR_STRIDE = 256;

/** The step counts and factors Adam keeps on the GPU (see adam_prepare.wgsl). */
interface DeviceSteps {
  /** u32: each parameter's cursor (its next step's table row), then the table from `params`. */
  steps: Tensor;
  /** The table rows `steps` has room for. */
  rows: number;
  /** u32: the indices of the parameters that take the step. */
  active: Tensor;
  /** What `active` holds, as last written. */
  activeWritten: number[];
  /** (step_size, bc2_sqrt, 0, 0) per parameter, FACTOR_STRIDE bytes apart. */
  factors: GPUBuffer;
  /** Per parameter, the last step count its table window covers (-1: none, refill due). */
  limit: number[];
}

/** Options of {@link Adam} and {@link AdamW}. */
export interface AdamOptions {
  /** Learning rate; default 1e-3. */
  lr?: number;
  /** Decay rates of the gradient's running average and of its square's; default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Added to the denominator for numerical stability; default 1e-8. */
  eps?: number;
  /**
   * Weight decay; default 0 for {@link Adam} (an L2 penalty added to the gradient) and 1e-2 for
   * {@link AdamW} (decoupled: `p *= 1 - lr * weightDecay` before the update).
   */
  weightDecay?: number;
}

interface AdamHyper {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * Adam exactly as PyTorch 1.13 (`torch/optim/adam.py`, amsgrad off): for each parameter with a
 * gradient, its step count `t` increases by one, `g = grad + weightDecay * p`,
 * `m = beta1 * m + (1 - beta1) * g`, `v = beta2 * v + (1 - beta2) * g²`, and
 * `p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`. The step counts, which
 * the state dict keeps in `hyper.step` (one per parameter), are kept on the GPU too, like
 * PyTorch's capturable Adam: each step, one small `adam_prepare` dispatch advances them and
 * computes `lr / (1 - beta1^t)` (in f32) and `sqrt(1 - beta2^t)` for every parameter it updates,
 * the bias corrections taken from a table computed on the CPU in float64 and uploaded once per
 * 1024 steps, so that a step at a constant learning rate uploads nothing and writes no uniforms.
 * `m` and `v` are the state tensors `"<i>.exp_avg"` and `"<i>.exp_avg_sq"`.
 *
 * The optimizer moves the parameters into one flat buffer (each parameter tensor keeps its
 * identity and becomes a slice of it) and gives them flat gradient, `exp_avg` and `exp_avg_sq`
 * buffers of the same layout; backward writes the gradients straight into their slices, and one
 * kernel dispatch updates every parameter whose gradient is there, whatever their step counts,
 * like PyTorch's foreach optimizers. Other parameters take one dispatch per two.
 *
 * @throws {RangeError} when `lr`, `eps` or `weightDecay` is negative or not finite, a beta is
 *   outside `[0, 1)`, or `params` is empty.
 * @throws {TypeError} when `params` holds something other than a Tensor.
 * @example
 * ```ts
 * import { crossEntropy, initGPU, nn, optim, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * const model = new nn.Linear(4, 3, { seed: 0 });
 * const opt = new optim.Adam(model.parameters(), { lr: 1e-3, weightDecay: 1e-4 });
 * const x = Tensor.randn([2, 4], { seed: 1 });
 * tidy(() => {
 *   crossEntropy(model.forward(x), new Int32Array([0, 2])).backward();
 *   opt.step();
 *   opt.zeroGrad();
 * });
 * console.log(opt.stateDict().hyper.step); // [1, 1]
 * ```
 */
export class Adam extends Optimizer {
  #hyper: AdamHyper;
  #steps: number[];
  #gpu: DeviceSteps | null = null;

  /** Optimizes `params` (e.g. `model.parameters()`) with the given options or the defaults. */
  constructor(params: Iterable<Tensor>, options: AdamOptions = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError(`${new.target.name}: options must be an object, got ${options}`);
    }
    super(new.target.name, params, options.lr ?? 1e-3, ["exp_avg", "exp_avg_sq"]);
    this.#hyper = checkAdam(this.owner, {
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? this.defaultWeightDecay(),
    });
    this.#steps = this.params.map(() => 0);
  }

  /** Whether weight decay is decoupled from the gradient (AdamW) rather than an L2 term. */
  protected decoupled(): boolean {
    return false;
  }

  /** The weight decay when the options give none. */
  protected defaultWeightDecay(): number {
    return 0;
  }

  /** The decay rates `[beta1, beta2]`. */
  get betas(): [number, number] {
    return [this.#hyper.beta1, this.#hyper.beta2];
  }

  /** The denominator's stabilizing term. */
  get eps(): number {
    return this.#hyper.eps;
  }

  /** Weight decay (L2 for Adam, decoupled for AdamW). */
  get weightDecay(): number {
    return this.#hyper.weightDecay;
  }

  /** How many updates each parameter has taken (PyTorch's per-parameter `state["step"]`). */
  get steps(): readonly number[] {
    return [...this.#steps];
  }

  /**
   * Encodes the update of every parameter that has a gradient: one adam_prepare dispatch that
   * advances their step counts on the GPU and computes their step-dependent factors, then one
   * adam_multi_step dispatch for those whose gradients lie in the flat gradient buffer and one
   * adam_step per two others; no readback, no submit. Uploads (the bias-correction table when a
   * step count leaves its window, the list of parameters when it changes) come before the first
   * dispatch, so that a replay's restage may perform them. The first update of a parameter
   * creates its zero-filled `exp_avg` and `exp_avg_sq`.
   */
  step(): void {
    const active = this.withGradients();
    if (active.length === 0) return;
    const { multi, single } = this.splitMulti(active);
    const gpu = this.#deviceSteps();
    this.#refillIfDue(gpu, active);
    if (
      gpu.activeWritten.length !== active.length ||
      !gpu.activeWritten.every((i, k) => i === active[k])
    ) {
      writeBuffer(gpu.active.buffer, new Uint32Array(active), gpu.active.byteOffset);
      gpu.activeWritten = [...active];
    }
    const multiTable = multi.length > 0 ? this.multiTable([multi], (i) => i) : null;
    for (const i of active) {
      this.state[i] ??= this.makeState(i, true);
      this.#steps[i]++;
      markModified(this.params[i]);
    }
    dispatch(ADAM_PREPARE, {
      dynamicUniforms: true,
      buffers: [gpu.active.binding, gpu.steps.binding, gpu.factors],
      params: { count: active.length, lr: this.lr, table_base: this.params.length },
      workgroups: [1, 1, 1],
    });
    if (multiTable) this.#stepMulti(multiTable, gpu);
    this.#stepSingle(single, gpu);
  }

  /** The GPU step counts and factors, made on the first step (with every refill due). */
  #deviceSteps(): DeviceSteps {
    if (this.#gpu) return this.#gpu;
    const n = this.params.length;
    const factors = getDevice().createBuffer({
      size: n * FACTOR_STRIDE,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: `${this.owner} factors`,
    });
    return this.#gpu = {
      steps: Tensor.empty([n]).keep(),
      rows: 0,
      active: Tensor.empty([n]).keep(),
      activeWritten: [],
      factors,
      limit: this.params.map(() => -1),
    };
  }

  /**
   * When the next step count of a parameter in `active` is outside its table window, uploads a
   * new table: one window of {@link adamTableWindow} rows per distinct step count among all the
   * parameters (one in the usual case), `1 - beta1^t` and `sqrt(1 - beta2^t)` computed in
   * float64 for the window's next counts, and each parameter's cursor at the first row of its
   * count's window. One upload.
   */
  #refillIfDue(gpu: DeviceSteps, active: number[]): void {
    if (active.every((i) => this.#steps[i] < gpu.limit[i])) return;
    const { beta1, beta2 } = this.#hyper;
    const window = adamTableWindow.steps;
    const n = this.params.length;
    const counts = [...new Set(this.#steps)];
    const rows = counts.length * window;
    const words = new Uint32Array(n + 2 * rows);
    const table = new Float32Array(words.buffer, 4 * n);
    counts.forEach((t, w) => {
      for (let r = 0; r < window; r++) {
        table[2 * (w * window + r)] = 1 - beta1 ** (t + 1 + r);
        table[2 * (w * window + r) + 1] = Math.sqrt(1 - beta2 ** (t + 1 + r));
      }
    });
    this.#steps.forEach((t, i) => {
      words[i] = counts.indexOf(t) * window;
      gpu.limit[i] = t + window;
    });
    if (gpu.rows < rows) {
      gpu.steps.dispose();
      gpu.steps = Tensor.empty([n + 2 * rows]).keep();
      gpu.rows = rows;
    }
    writeBuffer(gpu.steps.buffer, words, gpu.steps.byteOffset);
  }

  /** One adam_multi_step dispatch over the chunk table of the flat buffers' active parameters. */
  #stepMulti(
    { table, first, chunks }: { table: GPUBufferBinding; first: number[]; chunks: number[] },
    gpu: DeviceSteps,
  ): void {
    const { beta1, beta2, eps, weightDecay } = this.#hyper;
    const decoupled = this.decoupled();
    dispatch(ADAM_MULTI_STEP, {
      dynamicUniforms: true,
      buffers: [...this.flatBindings([0, 1]), table, gpu.factors],
      params: {
        first_chunk: first[0],
        chunks: chunks[0],
        beta1,
        one_minus_beta1: 1 - beta1,
        beta2,
        one_minus_beta2: 1 - beta2,
        eps,
        l2: decoupled ? 0 : weightDecay,
        decay: decoupled ? 1 - this.lr * weightDecay : 1,
      },
      workgroups: grid1d(chunks[0] * 256, 256),
    });
  }

  /** adam_step dispatches over the parameters `active`, two per dispatch. */
  #stepSingle(active: number[], gpu: DeviceSteps): void {
    const { beta1, beta2, eps, weightDecay } = this.#hyper;
    const decoupled = this.decoupled();
    for (let a = 0; a < active.length; a += 2) {
      const pair = active.slice(a, a + 2);
      const counts = [0, 0];
      const buffers: (GPUBuffer | GPUBufferBinding)[] = [];
      pair.forEach((i, slot) => {
        const p = this.params[i];
        const state = this.state[i]!;
        counts[slot] = p.size;
        buffers.push(p.binding, p.grad!.binding, state[0].binding, state[1].binding);
      });
      if (pair.length === 1) buffers.push(...this.dummies(4));
      const factor = (i: number) => ({ buffer: gpu.factors, offset: i * FACTOR_STRIDE, size: 16 });
      buffers.push(factor(pair[0]), factor(pair[1] ?? pair[0]));
      dispatch(ADAM_STEP, {
        dynamicUniforms: true,
        buffers,
        params: {
          n0: counts[0],
          n1: counts[1],
          beta1,
          one_minus_beta1: 1 - beta1,
          beta2,
          one_minus_beta2: 1 - beta2,
          eps,
          l2: decoupled ? 0 : weightDecay,
          decay: decoupled ? 1 - this.lr * weightDecay : 1,
        },
        workgroups: grid1d(counts[0] + counts[1], 256),
      });
    }
  }

  /** `{ lr, betas, eps, weightDecay, step }`, `step` holding each parameter's step count. */
  protected hyperParams(): Record<string, HyperValue> {
    const { beta1, beta2, eps, weightDecay } = this.#hyper;
    return { lr: this.lr, betas: [beta1, beta2], eps, weightDecay, step: [...this.#steps] };
  }

  /** Validates the hyperparameters and step counts; applies them when `apply`. */
  protected checkHyper(hyper: Record<string, HyperValue>, apply: boolean): string[] {
    try {
      checkNonNegative(this.owner, "lr", hyper.lr);
      const checked = checkAdam(this.owner, {
        betas: hyper.betas as unknown as [number, number],
        eps: hyper.eps as number,
        weightDecay: hyper.weightDecay as number,
      });
      const steps = hyper.step;
      if (
        !Array.isArray(steps) || steps.length !== this.params.length ||
        !steps.every((s) => Number.isSafeInteger(s) && s >= 0)
      ) {
        throw new RangeError(
          `step must hold ${this.params.length} non-negative integers (one per parameter), ` +
            `got ${JSON.stringify(steps)}`,
        );
      }
      if (apply) {
        this.lr = hyper.lr as number;
        this.#hyper = checked;
        this.#steps = [...steps];
        // The GPU's cursors and table follow at the next step (an upload).
        this.#gpu?.limit.fill(-1);
      }
      return [];
    } catch (error) {
      return [(error as Error).message];
    }
  }

  /** State must exist exactly for the parameters whose step count is positive. */
  protected override checkStateAgainstHyper(
    hyper: Record<string, HyperValue>,
    hasState: boolean[],
  ): string[] {
    const steps = hyper.step;
    if (!Array.isArray(steps)) return [];
    const wrong = hasState.flatMap((has, i) => has === steps[i] > 0 ? [] : [i]);
    if (wrong.length === 0) return [];
    return [
      `parameters ${wrong.join(", ")}: exp_avg and exp_avg_sq must be given exactly for the ` +
      "parameters whose step count is positive",
    ];
  }

  /** Releases the state tensors and resets every step count. */
  override dispose(): void {
    super.dispose();
    this.#steps = this.params.map(() => 0);
    const gpu = this.#gpu;
    if (gpu) {
      gpu.steps.dispose();
      gpu.active.dispose();
      destroyBuffer(gpu.factors);
      this.#gpu = null;
    }
  }
}

/**
 * AdamW exactly as PyTorch 1.13 (`torch/optim/adamw.py`, amsgrad off): Adam whose weight decay
 * is decoupled from the gradient, `p *= 1 - lr * weightDecay` first, then the Adam update of the
 * raw gradient. Default `weightDecay` 1e-2. State and state dict as {@link Adam}.
 *
 * @throws {RangeError} when `lr`, `eps` or `weightDecay` is negative or not finite, a beta is
 *   outside `[0, 1)`, or `params` is empty.
 * @throws {TypeError} when `params` holds something other than a Tensor.
 * @example
 * ```ts
 * import { crossEntropy, initGPU, nn, optim, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * const model = new nn.Linear(4, 3, { seed: 0 });
 * const opt = new optim.AdamW(model.parameters(), { lr: 1e-3, weightDecay: 1e-2 });
 * const x = Tensor.randn([2, 4], { seed: 1 });
 * tidy(() => {
 *   crossEntropy(model.forward(x), new Int32Array([0, 2])).backward();
 *   opt.step();
 *   opt.zeroGrad();
 * });
 * ```
 */
export class AdamW extends Adam {
  /** True: AdamW decays the weights directly instead of adding an L2 term to the gradient. */
  protected override decoupled(): boolean {
    return true;
  }

  /** 1e-2, PyTorch's AdamW default. */
  protected override defaultWeightDecay(): number {
    return 1e-2;
  }
}

function checkAdam(
  owner: string,
  h: { betas: readonly [number, number]; eps: number; weightDecay: number },
): AdamHyper {
  if (!Array.isArray(h.betas) || h.betas.length !== 2) {
    throw new RangeError(
      `${owner}: betas must be [beta1, beta2] such as [0.9, 0.999], got ${JSON.stringify(h.betas)}`,
    );
  }
  const beta1 = checkUnitInterval(owner, "beta parameter at index 0", h.betas[0]);
  const beta2 = checkUnitInterval(owner, "beta parameter at index 1", h.betas[1]);
  const eps = checkNonNegative(owner, "eps", h.eps);
  const weightDecay = checkNonNegative(owner, "weightDecay", h.weightDecay);
  return { beta1, beta2, eps, weightDecay };
}
