/**
 * `Optimizer`: the base of {@link SGD}, {@link Adam} and {@link AdamW}: the parameter list, the
 * learning rate, `zeroGrad()`, per-parameter state tensors and a state dict that round-trips
 * through a safetensors file (tensors) plus JSON metadata (hyperparameters).
 *
 * @module
 */
import { sizeClass } from "../gpu/buffer_pool.ts";
import { getDevice } from "../gpu/device.ts";
import { clearBuffer, writeBuffer } from "../gpu/dispatch.ts";
import {
  Arena,
  clearGradSlot,
  formatShape,
  moveIntoArena,
  setGradSlot,
  Tensor,
} from "../tensor.ts";

/** Elements of one parameter that one workgroup of a multi-tensor kernel updates at most. */
export const MULTI_CHUNK = 2048;

/**
 * The flat buffers of a multi-tensor step: the parameters' values, their gradients and each
 * state tensor (momentum buffers; exp_avg, exp_avg_sq) in buffers of one layout, parameter `i`
 * at `offsets[i]` bytes, aligned for a storage binding, zeros between.
 */
interface Flat {
  params: Arena;
  grads: Arena;
  /** One per state name, made (and cleared) on the first update that needs it. */
  states: (Arena | null)[];
  offsets: number[];
  bytes: number;
  /** Per state name, the parameters whose slice is known to hold zeros (never handed out). */
  zeroed: Set<number>[];
  /** The chunk table a multi-tensor dispatch reads, and what was last written into it. */
  table: Tensor | null;
  written: Uint32Array | null;
  /** The last {@link Optimizer.multiTable} call: what it was made from and what it returned. */
  lastTable: {
    key: number[];
    result: { table: GPUBufferBinding; first: number[]; chunks: number[] };
  } | null;
}

/** Whether two arrays hold the same numbers. */
function sameNumbers(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A hyperparameter value in {@link OptimizerStateDict.hyper}: JSON-safe. */
export type HyperValue = number | boolean | number[];

/**
 * An optimizer's state: per-parameter tensors under keys `"<index>.<name>"` (the parameter's
 * index in {@link Optimizer.params}, as PyTorch numbers them), such as `"0.momentum_buffer"`,
 * `"3.exp_avg"` and `"3.exp_avg_sq"`, and the hyperparameters (learning rate, step counts, …),
 * which `JSON.stringify` stores exactly (e.g. in a safetensors file's metadata).
 */
export interface OptimizerStateDict {
  /** State tensors by `"<param index>.<name>"`. */
  state: Map<string, Tensor>;
  /** Hyperparameters and step counts by name. */
  hyper: Record<string, HyperValue>;
}

/** Checks that `value` is a finite number `>= min`; names the optimizer and option. */
export function checkNonNegative(owner: string, option: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new RangeError(`${owner}: ${option} must be a finite number, got ${String(value)}`);
  }
  if (value < 0) throw new RangeError(`${owner}: invalid ${option} ${value}, must be >= 0`);
  return value;
}

/** Checks a coefficient in `[0, 1)`, like PyTorch's `betas` check. */
export function checkUnitInterval(owner: string, option: string, value: unknown): number {
  if (typeof value !== "number" || !(value >= 0 && value < 1)) {
    throw new RangeError(`${owner}: invalid ${option} ${String(value)}, must be in [0, 1)`);
  }
  return value;
}

// A one-element state tensor may be stored as [] or [1], as Module.loadStateDict allows.
function sameShape(a: Tensor, b: Tensor): boolean {
  if (a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i])) return true;
  return a.size === 1 && b.size === 1 && a.ndim <= 1 && b.ndim <= 1;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}

let stateOf: (optimizer: Optimizer) => readonly (readonly Tensor[] | null)[];

/**
 * The optimizer's per-parameter state tensors (null before a parameter's first update), the
 * optimizer's own array: a recorded step compares them with what it recorded. Internal: not
 * exported by mod.ts.
 */
export function optimizerState(optimizer: Optimizer): readonly (readonly Tensor[] | null)[] {
  return stateOf(optimizer);
}

/**
 * The base of every optimizer: one parameter group (all parameters share the hyperparameters),
 * like a PyTorch optimizer built from `model.parameters()`. Subclasses encode their update in
 * {@link Optimizer.step}; parameters whose `grad` is `null` are skipped, as in PyTorch.
 *
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * await initGPU();
 * const layer = new nn.Linear(4, 2);
 * const opt: optim.Optimizer = new optim.SGD(layer.parameters(), { lr: 0.1 });
 * opt.lr = 0.01;
 * console.log(opt.params.length, opt.lr); // 2 0.01
 * ```
 */
export abstract class Optimizer {
  /** The optimized tensors, in the order that numbers their state-dict keys. */
  readonly params: readonly Tensor[];
  /** The per-parameter state tensors' names, e.g. `["exp_avg", "exp_avg_sq"]`. */
  protected readonly stateNames: readonly string[];
  /** Each parameter's state tensors (in `stateNames` order), or null before its first update. */
  protected readonly state: (Tensor[] | null)[];
  /** The class name, for messages. */
  protected readonly owner: string;
  #lr = 0;
  #dummies: Tensor[] = [];
  #flat: Flat | null = null;

  static {
    stateOf = (optimizer) => optimizer.state;
  }

  /**
   * Takes the parameters (any iterable, e.g. `model.parameters()`) and the learning rate.
   *
   * @throws {TypeError} when `params` is not iterable or holds something other than a Tensor.
   * @throws {RangeError} when `params` is empty, repeats a tensor or holds a non-leaf tensor, or
   *   `lr` is negative.
   */
  protected constructor(
    owner: string,
    params: Iterable<Tensor>,
    lr: number,
    stateNames: readonly string[],
  ) {
    this.owner = owner;
    if (params === null || typeof params !== "object" || !(Symbol.iterator in params)) {
      throw new TypeError(
        `${owner}: params must be an iterable of Tensors such as model.parameters(), got ` +
          describe(params),
      );
    }
    const list = [...params];
    if (list.length === 0) {
      throw new RangeError(`${owner}: got an empty parameter list; pass model.parameters()`);
    }
    const seen = new Set<Tensor>();
    list.forEach((p, i) => {
      if (!(p instanceof Tensor)) {
        throw new TypeError(`${owner}: params[${i}] must be a Tensor, got ${describe(p)}`);
      }
      if (p.gradFn) {
        throw new RangeError(
          `${owner}: params[${i}] ${p} is not a leaf tensor (an op produced it); optimize the ` +
            "tensors the model owns",
        );
      }
      if (seen.has(p)) throw new RangeError(`${owner}: params[${i}] appears twice`);
      seen.add(p);
    });
    this.params = Object.freeze(list);
    this.stateNames = stateNames;
    this.state = list.map(() => null);
    this.lr = lr;
    this.#flat = flatten(list, stateNames.length);
  }

  /** The learning rate used by the next {@link Optimizer.step}; schedules set it. */
  get lr(): number {
    return this.#lr;
  }

  /** @throws {RangeError} when the value is negative or not finite. */
  set lr(value: number) {
    this.#lr = checkNonNegative(this.owner, "lr", value);
  }

  /**
   * Encodes one update of every parameter that has a gradient. Nothing is read back or
   * submitted; the update runs with the next readback. State tensors are created on a
   * parameter's first update and reused afterwards, so later steps allocate nothing.
   */
  abstract step(): void;

  /** The hyperparameters as stored in {@link OptimizerStateDict.hyper}. */
  protected abstract hyperParams(): Record<string, HyperValue>;

  /**
   * Checks `hyper` (already known to hold exactly the keys of {@link Optimizer.hyperParams}) and
   * returns the problems found, or applies it when `apply` is true.
   */
  protected abstract checkHyper(hyper: Record<string, HyperValue>, apply: boolean): string[];

  /**
   * Drops every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`), returning its
   * buffer to the pool; the next `backward()` creates fresh ones.
   */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * The state tensors (the optimizer's own, not copies: `clone()` them to keep a snapshot) and
   * the hyperparameters. Save the tensors with `saveSafetensors` and the hyperparameters as JSON
   * metadata; {@link Optimizer.loadStateDict} restores both exactly.
   *
   * @example
   * ```ts
   * import { initGPU, nn, optim, saveSafetensors } from "@resnet/webgpu";
   * await initGPU();
   * const opt = new optim.Adam(new nn.Linear(3, 2).parameters());
   * const { state, hyper } = opt.stateDict();
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await saveSafetensors(path, state, { hyper: JSON.stringify(hyper) });
   * ```
   */
  stateDict(): OptimizerStateDict {
    const state = new Map<string, Tensor>();
    this.state.forEach((tensors, i) => {
      tensors?.forEach((t, k) => state.set(`${i}.${this.stateNames[k]}`, t));
    });
    return { state, hyper: this.hyperParams() };
  }

  /**
   * Restores state tensors (copied into the optimizer's own, so the caller may dispose the
   * given ones) and hyperparameters from {@link Optimizer.stateDict}'s output, e.g. tensors from
   * `loadSafetensors` and `JSON.parse` of the saved metadata. Everything is validated before
   * anything changes; one error lists every problem.
   *
   * @throws {Error} when keys are missing or unexpected, a shape differs from its parameter's, a
   *   parameter has only part of its state, or a hyperparameter is missing, unknown or invalid.
   * @example
   * ```ts
   * import {
   *   initGPU,
   *   loadSafetensors,
   *   nn,
   *   optim,
   *   readSafetensorsMetadata,
   *   saveSafetensors,
   * } from "@resnet/webgpu";
   * await initGPU();
   * const params = new nn.Linear(3, 2).parameters();
   * const saved = new optim.SGD(params, { lr: 0.1, momentum: 0.9 }).stateDict();
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await saveSafetensors(path, saved.state, { hyper: JSON.stringify(saved.hyper) });
   * const resumed = new optim.SGD(params, { lr: 1 });
   * const { hyper } = await readSafetensorsMetadata(path);
   * resumed.loadStateDict({ state: await loadSafetensors(path), hyper: JSON.parse(hyper) });
   * console.log(resumed.lr, resumed.momentum); // 0.1 0.9
   * ```
   */
  loadStateDict(dict: {
    state: Map<string, Tensor> | Record<string, Tensor>;
    hyper: Record<string, HyperValue>;
  }): void {
    const where = `${this.owner}.loadStateDict()`;
    if (dict === null || typeof dict !== "object" || !dict.state || !dict.hyper) {
      throw new TypeError(`${where}: expects { state, hyper } as stateDict() returns`);
    }
    const given = dict.state instanceof Map ? dict.state : new Map(Object.entries(dict.state));
    const problems: string[] = [];
    const found: (Map<number, Tensor> | undefined)[] = this.params.map(() => undefined);
    for (const [key, t] of given) {
      const match = /^(\d+)\.(.+)$/.exec(key);
      const index = match ? Number(match[1]) : -1;
      const name = match?.[2] ?? "";
      const k = this.stateNames.indexOf(name);
      if (!match || index >= this.params.length || k < 0) {
        problems.push(
          `unexpected key "${key}" (expected "<index>.<name>" with index < ` +
            `${this.params.length} and name one of ${this.stateNames.join(", ")})`,
        );
        continue;
      }
      const p = this.params[index];
      if (!(t instanceof Tensor)) {
        problems.push(`"${key}" must be a Tensor, got ${describe(t)}`);
      } else if (t.disposed) {
        problems.push(`"${key}" was disposed`);
      } else if (!sameShape(t, p)) {
        problems.push(
          `"${key}" has shape ${formatShape(t.shape)}, but parameter ${index} is ` +
            formatShape(p.shape),
        );
      }
      (found[index] ??= new Map()).set(k, t);
    }
    found.forEach((tensors, i) => {
      if (tensors && tensors.size !== this.stateNames.length) {
        const missing = this.stateNames.filter((_, k) => !tensors.has(k)).map((n) => `${i}.${n}`);
        problems.push(`missing keys ${missing.join(", ")} (parameter ${i} has part of its state)`);
      }
    });
    const hyper = dict.hyper;
    const expected = Object.keys(this.hyperParams());
    const missing = expected.filter((k) => !(k in hyper));
    const unknown = Object.keys(hyper).filter((k) => !expected.includes(k));
    if (missing.length) problems.push(`missing hyperparameters: ${missing.join(", ")}`);
    if (unknown.length) problems.push(`unknown hyperparameters: ${unknown.join(", ")}`);
    if (!missing.length && !unknown.length) {
      problems.push(...this.checkHyper(hyper, false));
      problems.push(...this.checkStateAgainstHyper(hyper, found.map((t) => t !== undefined)));
    }
    if (problems.length) {
      throw new Error(
        `${where} failed: ${problems.join("; ")}. Was the state saved from a ${this.owner} over ` +
          "the same parameters?",
      );
    }
    found.forEach((tensors, i) => {
      if (!tensors) {
        this.state[i]?.forEach((t) => t.dispose());
        this.state[i] = null;
        return;
      }
      const own = this.state[i] ??= this.makeState(i, false);
      own.forEach((t, k) => {
        const source = tensors.get(k)!;
        t.keep();
        if (source !== t) t.copyFrom(source);
      });
    });
    this.checkHyper(hyper, true);
  }

  /**
   * Problems between the hyperparameters being loaded and which parameters have state (Adam's
   * step counts must be positive exactly where state exists); none by default.
   */
  protected checkStateAgainstHyper(
    _hyper: Record<string, HyperValue>,
    _hasState: boolean[],
  ): string[] {
    return [];
  }

  /**
   * Parameters that have a gradient to apply, with their indices, checking that each gradient
   * matches its parameter. Empty parameters are skipped (nothing to update).
   */
  protected withGradients(): number[] {
    // Plain loops: a replayed step runs this again on every step (see CompiledTrainStep).
    const active: number[] = [];
    const params = this.params;
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      const g = p.grad;
      if (!g) continue;
      if (g.size !== p.size) {
        throw new RangeError(
          `${this.owner}.step(): parameter ${i} ${formatShape(p.shape)} has a gradient of shape ` +
            formatShape(g.shape),
        );
      }
      if (p.size > 0) active.push(i);
    }
    return active;
  }

  /**
   * Splits the parameters `active` (with gradients, from {@link Optimizer.withGradients}) into
   * those a multi-tensor kernel can update (the parameter, its gradient and its state in their
   * slices of the flat buffers) and the rest, which take the per-parameter kernels.
   */
  protected splitMulti(active: number[]): { multi: number[]; single: number[] } {
    const flat = this.#flat;
    if (!flat) return { multi: [], single: active };
    const multi: number[] = [];
    const single: number[] = [];
    const params = flat.params.buffer;
    const grads = flat.grads.buffer;
    for (const i of active) {
      const p = this.params[i];
      const g = p.grad!;
      const at = flat.offsets[i];
      let inPlace = p.buffer === params && p.byteOffset === at && g.buffer === grads &&
        g.byteOffset === at;
      const state = this.state[i];
      if (inPlace && state) {
        for (let k = 0; k < state.length; k++) {
          const t = state[k];
          if (t.buffer !== flat.states[k]?.buffer || t.byteOffset !== at) inPlace = false;
        }
      }
      (inPlace ? multi : single).push(i);
    }
    return { multi, single };
  }

  /**
   * Parameter `i`'s state tensors (in `stateNames` order) for its first update: slices of the
   * flat state buffers when the optimizer has them, else tensors of their own. With `zeros` they
   * hold zeros; else their values are undefined (the kernel writes them whole).
   */
  protected makeState(i: number, zeros: boolean): Tensor[] {
    const flat = this.#flat;
    const p = this.params[i];
    if (!flat) {
      return this.stateNames.map(() =>
        (zeros ? Tensor.zeros(p.shape) : Tensor.empty(p.shape)).keep()
      );
    }
    return this.stateNames.map((_, k) => {
      let arena = flat.states[k];
      if (!arena) {
        arena = flat.states[k] = new Arena(flat.bytes);
        // One clear for every parameter's state, instead of one per parameter.
        clearBuffer(arena.buffer, 0, flat.bytes);
        flat.zeroed[k] = new Set(this.params.map((_, j) => j));
      }
      const view = new Tensor(p.shape, { buffer: arena.buffer, offset: flat.offsets[i] }).keep();
      if (zeros && !flat.zeroed[k].has(i)) view.fill(0);
      flat.zeroed[k].delete(i);
      return view;
    });
  }

  /**
   * The chunk table of multi-tensor dispatches, one per group of parameter indices: per chunk of
   * at most {@link MULTI_CHUNK} elements of one parameter, `(first element in the flat buffers,
   * element count, flags(i), 0)` as u32, the groups one after the other. Written into its buffer
   * only when it differs from what was last written. Returns its binding and each group's first
   * chunk and chunk count.
   */
  protected multiTable(
    groups: number[][],
    flags: (i: number) => number,
  ): { table: GPUBufferBinding; first: number[]; chunks: number[] } {
    const flat = this.#flat!;
    // What the table is made from: each group's length, then (index, flags) per parameter. The
    // same as last time (every step but the first few), the table and its counts are too.
    const key: number[] = [];
    for (const group of groups) {
      key.push(group.length);
      for (const i of group) key.push(i, flags(i));
    }
    const last = flat.lastTable;
    if (last && sameNumbers(last.key, key)) return last.result;
    const first: number[] = [];
    const chunks: number[] = [];
    let total = 0;
    for (const group of groups) {
      let n = 0;
      for (const i of group) n += Math.ceil(this.params[i].size / MULTI_CHUNK);
      first.push(total);
      chunks.push(n);
      total += n;
    }
    const words = new Uint32Array(4 * total);
    let c = 0;
    for (const group of groups) {
      for (const i of group) {
        const size = this.params[i].size;
        const first = flat.offsets[i] / 4;
        const f = flags(i);
        for (let start = 0; start < size; start += MULTI_CHUNK, c++) {
          words[4 * c] = first + start;
          words[4 * c + 1] = Math.min(MULTI_CHUNK, size - start);
          words[4 * c + 2] = f;
        }
      }
    }
    if (!flat.table) {
      let most = 0;
      for (const p of this.params) most += Math.ceil(p.size / MULTI_CHUNK);
      flat.table = Tensor.empty([4 * Math.max(1, most)]).keep();
    }
    const written = flat.written;
    if (!written || !sameNumbers(written, words)) {
      writeBuffer(flat.table.buffer, words, flat.table.byteOffset);
      flat.written = words;
    }
    const result = { table: flat.table.binding, first, chunks };
    flat.lastTable = { key, result };
    return result;
  }

  /**
   * Bindings of the whole flat buffers: the parameters, the gradients, then the state tensors
   * named `stateNames[k]` for each `k` of `states`.
   */
  protected flatBindings(states: number[]): GPUBufferBinding[] {
    const flat = this.#flat!;
    const whole = (a: Arena) => ({ buffer: a.buffer, offset: 0, size: flat.bytes });
    return [whole(flat.params), whole(flat.grads), ...states.map((k) => whole(flat.states[k]!))];
  }

  /**
   * Small placeholder buffers bound in a dispatch's unused second slot (never read or written:
   * its element count is 0). Distinct buffers, since writable bindings must not alias.
   */
  protected dummies(count: number): GPUBuffer[] {
    while (this.#dummies.length < count) this.#dummies.push(Tensor.empty([4]).keep());
    return this.#dummies.slice(0, count).map((t) => t.buffer);
  }

  /**
   * Releases the state tensors' GPU memory; the optimizer starts from scratch if stepped again.
   * The parameters and their gradients are not touched.
   */
  dispose(): void {
    this.state.forEach((tensors, i) => {
      tensors?.forEach((t) => t.dispose());
      this.state[i] = null;
    });
    for (const t of this.#dummies) t.dispose();
    this.#dummies = [];
    const flat = this.#flat;
    if (flat) {
      // The parameters (and gradients in their slots) keep their slices, and with them the flat
      // buffers, alive: each holds a reference on its arena. Later steps use the per-parameter
      // kernels.
      this.params.forEach((p) => clearGradSlot(p, flat.grads));
      flat.params.release();
      flat.grads.release();
      for (const arena of flat.states) arena?.release();
      flat.table?.dispose();
      this.#flat = null;
    }
  }
}

/**
 * Moves `params` into one flat buffer (each at an offset aligned for a storage binding) and gives
 * each a gradient slot at the same offset of a flat gradient buffer, so that backward writes the
 * gradients there and one dispatch can update every parameter. Null when the buffer would exceed
 * the device's largest storage binding (the optimizer then keeps the per-parameter kernels).
 */
function flatten(params: readonly Tensor[], states: number): Flat | null {
  const device = getDevice();
  const align = Math.max(256, device.limits.minStorageBufferOffsetAlignment);
  const offsets: number[] = [];
  let bytes = 0;
  for (const p of params) {
    offsets.push(bytes);
    bytes += Math.ceil(sizeClass(p.size * 4) / align) * align;
  }
  if (bytes > device.limits.maxStorageBufferBindingSize) return null;
  const flat: Flat = {
    params: new Arena(bytes),
    grads: new Arena(bytes),
    states: Array.from({ length: states }, () => null),
    offsets,
    bytes,
    zeroed: Array.from({ length: states }, () => new Set<number>()),
    table: null,
    written: null,
    lastTable: null,
  };
  // The padding between parameters is never read by a kernel; zeros keep its bytes defined.
  clearBuffer(flat.params.buffer, 0, bytes);
  clearBuffer(flat.grads.buffer, 0, bytes);
  params.forEach((p, i) => {
    moveIntoArena(p, flat.params, offsets[i]);
    setGradSlot(p, flat.grads, offsets[i]);
  });
  return flat;
}
