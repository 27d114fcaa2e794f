/**
 * Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
 * as PyTorch 1.13's `torch.optim.SGD`.
 *
 * @module
 */
import sgdStepSource from "../../kernels/sgd_step.wgsl" with { type: "text" };
import sgdMultiStepSource from "../../kernels/sgd_multi_step.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { markModified, type Tensor } from "../tensor.ts";
import { checkNonNegative, type HyperValue, Optimizer } from "./optimizer.ts";

const SGD_STEP = kernel("sgd_step", sgdStepSource, [
  "n0",
  "n1",
  "init0",
  "init1",
  "use_momentum",
  "nesterov",
  "lr",
  "momentum",
  "one_minus_dampening",
  "weight_decay",
]);

const SGD_MULTI_STEP = kernel("sgd_multi_step", sgdMultiStepSource, [
  "chunks",
  "use_momentum",
  "nesterov",
  "lr",
  "momentum",
  "one_minus_dampening",
  "weight_decay",
]);

/** Options of {@link SGD}. */
export interface SGDOptions {
  /** Learning rate (required, >= 0). */
  lr: number;
  /** Momentum factor; default 0 (plain SGD, no state). */
  momentum?: number;
  /** Dampening of the gradient's share in the momentum buffer; default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient (`g + weightDecay * p`); default 0. */
  weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0); default false. */
  nesterov?: boolean;
}

interface SGDHyper {
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/**
 * SGD exactly as PyTorch 1.13 (`torch/optim/sgd.py`): for each parameter with a gradient,
 * `d = g + weightDecay * p`; with momentum, `buf = d` on its first update, else
 * `buf = momentum * buf + (1 - dampening) * d`, and `d = nesterov ? d + momentum * buf : buf`;
 * then `p -= lr * d`. The momentum buffers are the state (`"<i>.momentum_buffer"`).
 *
 * The optimizer moves the parameters into one flat buffer (each parameter tensor keeps its
 * identity and becomes a slice of it) and gives them flat gradient and momentum buffers of the
 * same layout; backward writes the gradients straight into their slices, and one kernel dispatch
 * updates every parameter whose gradient is there, like PyTorch's foreach optimizers. Gradients
 * elsewhere (assigned by hand, accumulated over two backward passes) take one dispatch per two
 * parameters.
 *
 * @throws {RangeError} when an option is negative or not finite, or `nesterov` is set without
 *   momentum or with dampening (PyTorch's rule), or `params` is empty.
 * @throws {TypeError} when `params` holds something other than a Tensor.
 * @example
 * ```ts
 * import { crossEntropy, initGPU, nn, optim, Tensor, tidy } from "@resnet/webgpu";
 * await initGPU();
 * const model = new nn.Linear(4, 3, { seed: 0 });
 * const opt = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
 * const x = Tensor.randn([2, 4], { seed: 1 });
 * const loss = tidy(() => {
 *   const loss = crossEntropy(model.forward(x), new Int32Array([0, 2]));
 *   loss.backward();
 *   opt.step();
 *   opt.zeroGrad();
 *   return loss;
 * });
 * console.log(await loss.item());
 * ```
 */
export class SGD extends Optimizer {
  #hyper: SGDHyper;

  /** Optimizes `params` (e.g. `model.parameters()`) with the given options; `lr` is required. */
  constructor(params: Iterable<Tensor>, options: SGDOptions) {
    if (options === null || typeof options !== "object" || options.lr === undefined) {
      throw new TypeError("SGD: options must give the learning rate, e.g. { lr: 0.1 }");
    }
    super("SGD", params, options.lr, ["momentum_buffer"]);
    this.#hyper = checkSGD({
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
    });
  }

  /** Momentum factor. */
  get momentum(): number {
    return this.#hyper.momentum;
  }

  /** Dampening of the gradient's share in the momentum buffer. */
  get dampening(): number {
    return this.#hyper.dampening;
  }

  /** L2 penalty added to the gradient. */
  get weightDecay(): number {
    return this.#hyper.weightDecay;
  }

  /** Whether the update uses Nesterov momentum. */
  get nesterov(): boolean {
    return this.#hyper.nesterov;
  }

  /**
   * Encodes the update of every parameter that has a gradient: one dispatch for those whose
   * gradients lie in the flat gradient buffer, one per two others; no readback, no submit. The
   * first update of a parameter creates its momentum buffer.
   */
  step(): void {
    const { multi, single } = this.splitMulti(this.withGradients());
    if (multi.length > 0) this.#stepMulti(multi);
    this.#stepSingle(single);
  }

  /** One sgd_multi_step dispatch over the parameters `active`, all in the flat buffers. */
  #stepMulti(active: number[]): void {
    const { momentum, dampening, weightDecay, nesterov } = this.#hyper;
    const useMomentum = momentum !== 0;
    const init = new Set<number>();
    for (const i of active) {
      if (useMomentum && !this.state[i]) {
        // Written whole by the kernel (init = 1), so no fill is needed.
        this.state[i] = this.makeState(i, false);
        init.add(i);
      }
      markModified(this.params[i]);
    }
    const { table, chunks: [chunks] } = this.multiTable([active], (i) => init.has(i) ? 1 : 0);
    const buffers: (GPUBuffer | GPUBufferBinding)[] = useMomentum
      ? this.flatBindings([0])
      : [...this.flatBindings([]), ...this.dummies(1)];
    buffers.push(table);
    dispatch(SGD_MULTI_STEP, {
      dynamicUniforms: true,
      buffers,
      params: {
        chunks,
        use_momentum: useMomentum ? 1 : 0,
        nesterov: nesterov ? 1 : 0,
        lr: this.lr,
        momentum,
        one_minus_dampening: 1 - dampening,
        weight_decay: weightDecay,
      },
      workgroups: grid1d(chunks * 256, 256),
    });
  }

  /** sgd_step dispatches over the parameters `active`, two per dispatch. */
  #stepSingle(active: number[]): void {
    const { momentum, dampening, weightDecay, nesterov } = this.#hyper;
    const useMomentum = momentum !== 0;
    for (let a = 0; a < active.length; a += 2) {
      const pair = active.slice(a, a + 2);
      const counts = [0, 0];
      const init = [0, 0];
      const buffers: (GPUBuffer | GPUBufferBinding)[] = [];
      pair.forEach((i, slot) => {
        const p = this.params[i];
        counts[slot] = p.size;
        let buf: GPUBuffer | GPUBufferBinding;
        if (useMomentum) {
          let state = this.state[i];
          if (!state) {
            // Written whole by the kernel (init = 1), so no fill is needed.
            state = this.state[i] = this.makeState(i, false);
            init[slot] = 1;
          }
          buf = state[0].binding;
        } else {
          // Unused by the kernel, but bound: one distinct dummy per slot (writable, no aliasing).
          buf = this.dummies(slot + 1)[slot];
        }
        buffers.push(p.binding, p.grad!.binding, buf);
        markModified(p);
      });
      if (pair.length === 1) {
        buffers.push(...this.dummies(useMomentum ? 3 : 4).slice(useMomentum ? 0 : 1));
      }
      dispatch(SGD_STEP, {
        dynamicUniforms: true,
        buffers,
        params: {
          n0: counts[0],
          n1: counts[1],
          init0: init[0],
          init1: init[1],
          use_momentum: useMomentum ? 1 : 0,
          nesterov: nesterov ? 1 : 0,
          lr: this.lr,
          momentum,
          one_minus_dampening: 1 - dampening,
          weight_decay: weightDecay,
        },
        workgroups: grid1d(counts[0] + counts[1], 256),
      });
    }
  }

  /** `{ lr, momentum, dampening, weightDecay, nesterov }`. */
  protected hyperParams(): Record<string, HyperValue> {
    return { lr: this.lr, ...this.#hyper };
  }

  /** Validates the hyperparameters as the constructor does; applies them when `apply`. */
  protected checkHyper(hyper: Record<string, HyperValue>, apply: boolean): string[] {
    try {
      checkNonNegative("SGD", "lr", hyper.lr);
      const checked = checkSGD({
        momentum: hyper.momentum as number,
        dampening: hyper.dampening as number,
        weightDecay: hyper.weightDecay as number,
        nesterov: hyper.nesterov as boolean,
      });
      if (apply) {
        this.lr = hyper.lr as number;
        this.#hyper = checked;
      }
      return [];
    } catch (error) {
      return [(error as Error).message];
    }
  }
}

function checkSGD(h: SGDHyper): SGDHyper {
  checkNonNegative("SGD", "momentum", h.momentum);
  checkNonNegative("SGD", "dampening", h.dampening);
  checkNonNegative("SGD", "weightDecay", h.weightDecay);
  if (typeof h.nesterov !== "boolean") {
    throw new TypeError(`SGD: nesterov must be a boolean, got ${String(h.nesterov)}`);
  }
  if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) {
    throw new RangeError(
      `SGD: Nesterov momentum requires a momentum and zero dampening (got momentum ` +
        `${h.momentum}, dampening ${h.dampening})`,
    );
  }
  return { ...h };
}
