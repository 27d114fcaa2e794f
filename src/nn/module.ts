/**
 * `Module`: the base of every layer, with PyTorch's registration order, dotted state-dict keys,
 * train/eval modes, forward hooks, module surgery by dotted path and a repr like PyTorch's.
 *
 * @module
 */
import { formatShape, sameShape, Tensor } from "../tensor.ts";
import { type Disposable, forwardScope, keep, markObserved } from "../scope.ts";

/** What {@link Module.loadStateDict} found: keys missing from and unexpected in the dict. */
export interface LoadStateDictResult {
  /** The module's keys that the dict lacked. */
  missingKeys: string[];
  /** The dict's keys that the module does not have. */
  unexpectedKeys: string[];
}

/**
 * A forward hook, as PyTorch's `register_forward_hook`: called by {@link Module.call} after the
 * module's `forward` with the module, the input (`call`'s first argument) and the output;
 * returning a tensor replaces the output.
 */
export type ForwardHook = (module: Module, input: Tensor, output: Tensor) => Tensor | void;

/** What {@link Module.registerForwardHook} returns: `remove()` unregisters the hook. */
export interface RemovableHandle {
  /** Unregisters the hook; calling it again does nothing. */
  remove(): void;
}

// Each module's forward hooks in registration order; read by hasForwardHooks.
const forwardHooks = new WeakMap<Module, Map<number, ForwardHook>>();
let nextHookId = 1;
// Bumped by every change of what a module tree runs: a hook added or removed, a submodule set.
let treeChanges = 0;

/**
 * A counter that every `setSubmodule`, `registerForwardHook` and hook `remove()` (on any
 * module) increases: a recorded step compares it to know the tree it recorded still runs.
 * Internal: not exported by mod.ts.
 */
export function moduleTreeVersion(): number {
  return treeChanges;
}

/**
 * Whether `module` has forward hooks: then its output must be computed (and passed to them)
 * as its own `forward` returns it, not fused with what follows. Internal: not exported by mod.ts.
 */
export function hasForwardHooks(module: Module): boolean {
  return (forwardHooks.get(module)?.size ?? 0) > 0;
}

/**
 * What a module's `call` does with its forward's intermediates (see forwardScope): with no
 * gradient recorded they are disposed now; otherwise the output's tape node owns them and the
 * backward that releases the tape disposes them, so a training loop without tidy() frees a
 * forward's activations at its backward, not when the garbage collector gets to them.
 */
function releaseIntermediates(output: unknown, intermediates: Disposable[]): void {
  const recorded = (t: unknown) => t instanceof Tensor && t.gradFn !== null;
  if (!recorded(output) && !intermediates.some(recorded)) {
    for (const t of intermediates) t.dispose();
    return;
  }
  if (recorded(output)) {
    const node = (output as Tensor).gradFn!;
    node.owned = node.owned ? [...node.owned, ...intermediates] : intermediates;
  }
}

/** Options of {@link Module.loadStateDict}. */
export interface LoadStateDictOptions {
  /**
   * Refuse a dict with missing, unexpected or wrongly shaped keys (default true). With false,
   * matching keys load and the others are reported; a wrong shape is an error either way.
   */
  strict?: boolean;
}

/**
 * The base class of all layers, like `torch.nn.Module`. Subclasses register their parameters,
 * buffers and children in declaration order in the constructor (as PyTorch does by attribute
 * assignment), which fixes the state-dict keys, and implement {@link Module.forward}.
 *
 * A module runs its children through {@link Module.call} (PyTorch's `module(x)`), which runs
 * `forward` and then the forward hooks; children are looked up by name when they run, so a child
 * replaced with {@link Module.setSubmodule} is the one that runs.
 *
 * @example
 * ```ts
 * import { initGPU, nn, relu, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * class TwoLayer extends nn.Module {
 *   fc1 = this.registerModule("fc1", new nn.Linear(4, 8));
 *   fc2 = this.registerModule("fc2", new nn.Linear(8, 2));
 *   forward(x: Tensor): Tensor {
 *     return this.fc2.call(relu(this.fc1.call(x)));
 *   }
 * }
 * const model = new TwoLayer();
 * console.log([...model.stateDict().keys()]); // ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
 * ```
 */
export abstract class Module {
  /** True in training mode (the default), false after {@link Module.eval}. */
  training = true;
  #parameters = new Map<string, Tensor | null>();
  #buffers = new Map<string, Tensor | null>();
  #children = new Map<string, Module>();

  /**
   * Computes the module's output for `input`. Override it; run a module with
   * {@link Module.call}, which also runs the forward hooks.
   */
  abstract forward(input: Tensor): Tensor;

  /** Registers a trainable tensor under `name` (sets `requiresGrad`); returns it. */
  protected registerParameter(name: string, tensor: Tensor): Tensor;
  /** Registers a parameter slot that may be empty (`bias: null`), as PyTorch's `None`. */
  protected registerParameter(name: string, tensor: Tensor | null): Tensor | null;
  protected registerParameter(name: string, tensor: Tensor | null): Tensor | null {
    this.#checkName(name);
    if (tensor) {
      tensor.requiresGrad = true;
      keep(tensor);
    }
    this.#parameters.set(name, tensor);
    return tensor;
  }

  /** Registers a state tensor that is not trained (running statistics) under `name`. */
  protected registerBuffer(name: string, tensor: Tensor): Tensor;
  /** Registers a buffer slot that may be empty (no running statistics). */
  protected registerBuffer(name: string, tensor: Tensor | null): Tensor | null;
  protected registerBuffer(name: string, tensor: Tensor | null): Tensor | null {
    this.#checkName(name);
    if (tensor) keep(tensor);
    this.#buffers.set(name, tensor);
    return tensor;
  }

  /** Registers a child module under `name`; returns it. */
  protected registerModule<M extends Module>(name: string, module: M): M {
    this.#checkName(name);
    if (!(module instanceof Module)) {
      throw new TypeError(`registerModule("${name}"): expected an nn.Module, got ${module}`);
    }
    this.#children.set(name, module);
    return module;
  }

  #checkName(name: string): void {
    if (!name || name.includes(".")) {
      throw new RangeError(`A module member name must be non-empty without ".", got "${name}"`);
    }
    if (this.#parameters.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new RangeError(`"${name}" is already registered on ${this.constructor.name}`);
    }
  }

  /**
   * Runs the module as PyTorch's `module(x)` does: {@link Module.forward} with these arguments,
   * then each forward hook in registration order (a hook that returns a tensor replaces the
   * output).
   *
   * @example
   * ```ts
   * import { initGPU, nn, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const relu = new nn.ReLU();
   * console.log(await relu.call(Tensor.from([-1, 2])).toArray()); // [0, 2]
   * ```
   */
  call(...args: Parameters<this["forward"]>): Tensor {
    let output = forwardScope(
      () => (this.forward as (...a: unknown[]) => Tensor)(...args),
      releaseIntermediates,
    );
    const hooks = forwardHooks.get(this);
    if (hooks) {
      markObserved(output);
      for (const hook of [...hooks.values()]) output = hook(this, args[0], output) ?? output;
    }
    return output;
  }

  /**
   * Registers `hook` to run after every {@link Module.call} of this module, as PyTorch's
   * `register_forward_hook`: `hook(module, input, output)`, whose returned tensor (if any)
   * replaces the output. A layer with hooks is never fused with the layers around it, so the hook
   * sees the output of its own `forward`.
   *
   * @example
   * ```ts
   * import { initGPU, nn, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const model = new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU());
   * const shapes: (readonly number[])[] = [];
   * const handle = model.at(0).registerForwardHook((_m, _input, output) => {
   *   shapes.push(output.shape);
   * });
   * model.call(Tensor.ones([2, 4]));
   * handle.remove();
   * console.log(shapes); // [[2, 8]]
   * ```
   */
  registerForwardHook(hook: ForwardHook): RemovableHandle {
    if (typeof hook !== "function") {
      throw new TypeError(`registerForwardHook(): hook must be a function, got ${typeof hook}`);
    }
    let hooks = forwardHooks.get(this);
    if (!hooks) forwardHooks.set(this, hooks = new Map());
    const id = nextHookId++;
    hooks.set(id, hook);
    treeChanges++;
    return {
      remove: () => {
        if (hooks.delete(id)) treeChanges++;
      },
    };
  }

  /**
   * The descendant at the dotted `path` (`""`: this module), as PyTorch's `get_submodule`.
   *
   * @throws {RangeError} naming the path and the missing segment.
   * @example
   * ```ts
   * import { initGPU, resnet } from "@resnet/webgpu";
   * await initGPU();
   * console.log(resnet(8).getSubmodule("0.blocks.1.act1").toString()); // "ReLU()"
   * ```
   */
  getSubmodule(path: string): Module {
    if (typeof path !== "string") {
      throw new TypeError(`getSubmodule(): path must be a string, got ${typeof path}`);
    }
    if (path === "") return this;
    let module = this as Module;
    const names = path.split(".");
    for (const [i, name] of names.entries()) {
      const child = module.#children.get(name);
      if (!child) {
        const at = i === 0 ? this.constructor.name : `"${names.slice(0, i).join(".")}"`;
        throw new RangeError(
          `getSubmodule("${path}"): ${at} (${module.constructor.name}) has no child "${name}"; ` +
            `its children are ${[...module.#children.keys()].join(", ") || "none"}`,
        );
      }
      module = child;
    }
    return module;
  }

  /**
   * Replaces the descendant at the dotted `path` with `module`, as PyTorch's `set_submodule`:
   * the parent runs the new child from then on, and the state-dict keys under `path` are the new
   * child's.
   *
   * @throws {RangeError} naming the path when a segment is missing.
   * @throws {TypeError} when `module` is not a Module.
   * @example
   * ```ts
   * import { initGPU, nn, resnet, Tensor } from "@resnet/webgpu";
   * await initGPU();
   * const model = resnet(8);
   * model.setSubmodule("0.blocks.1.act1", new nn.Identity());
   * console.log(model.forward(Tensor.randn([2, 3, 16, 16], { seed: 0 })).shape); // [2, 10]
   * ```
   */
  setSubmodule(path: string, module: Module): void {
    if (!(module instanceof Module)) {
      throw new TypeError(`setSubmodule("${path}"): expected an nn.Module, got ${module}`);
    }
    const cut = path.lastIndexOf(".");
    const parent = this.getSubmodule(cut < 0 ? "" : path.slice(0, cut));
    const name = path.slice(cut + 1);
    if (!parent.#children.has(name)) {
      throw new RangeError(
        `setSubmodule("${path}"): ${parent.constructor.name} has no child "${name}"; its ` +
          `children are ${[...parent.#children.keys()].join(", ") || "none"}`,
      );
    }
    parent.#children.set(name, module);
    treeChanges++;
  }

  /** The direct children with their names, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  /** The direct children, in registration order. */
  children(): Module[] {
    return [...this.#children.values()];
  }

  /** This module (named `""`) and every descendant, depth first, with dotted names. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.#children) {
      out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    }
    return out;
  }

  /** Every parameter with its dotted name, like `blocks.0.conv1.weight`. */
  namedParameters(): [string, Tensor][] {
    return this.#collect((m) => m.#parameters);
  }

  /**
   * Every parameter, in state-dict order.
   *
   * @example
   * ```ts
   * import { initGPU, nn } from "@resnet/webgpu";
   * await initGPU();
   * console.log(new nn.Linear(3, 2).parameters().map((p) => p.shape)); // [[2, 3], [2]]
   * ```
   */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Every buffer (running statistics) with its dotted name. */
  namedBuffers(): [string, Tensor][] {
    return this.#collect((m) => m.#buffers);
  }

  /** Every buffer, in state-dict order. */
  buffers(): Tensor[] {
    return this.namedBuffers().map(([, t]) => t);
  }

  #collect(pick: (m: Module) => Map<string, Tensor | null>): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, module] of this.namedModules()) {
      for (const [name, tensor] of pick(module)) {
        if (tensor) out.push([prefix ? `${prefix}.${name}` : name, tensor]);
      }
    }
    return out;
  }

  /**
   * Parameters and buffers under PyTorch's dotted keys, in PyTorch's order (each module's own
   * parameters, then its buffers, then its children). The tensors are the module's own: copy
   * them (`clone()`) to keep a snapshot.
   *
   * @example
   * ```ts
   * import { initGPU, nn } from "@resnet/webgpu";
   * await initGPU();
   * const bn = new nn.BatchNorm2d(4);
   * console.log([...bn.stateDict().keys()]);
   * // ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
   * ```
   */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const visit = (module: Module, prefix: string) => {
      for (const [name, t] of module.#parameters) if (t) out.set(prefix + name, t);
      for (const [name, t] of module.#buffers) if (t) out.set(prefix + name, t);
      for (const [name, child] of module.#children) visit(child, `${prefix}${name}.`);
    };
    visit(this, "");
    return out;
  }

  /**
   * Copies values from `stateDict` (a `Map` or plain object of tensors, e.g. from
   * `loadSafetensors`) into this module's parameters and buffers. Strict by default: one error
   * lists every missing, unexpected and wrongly shaped key, and nothing is copied.
   *
   * @throws {Error} when keys do not match (strict) or a shape differs.
   * @example
   * ```ts
   * import { initGPU, nn } from "@resnet/webgpu";
   * await initGPU();
   * const a = new nn.Linear(3, 2, { seed: 1 });
   * const b = new nn.Linear(3, 2, { seed: 2 });
   * b.loadStateDict(a.stateDict());
   * ```
   */
  loadStateDict(
    stateDict: Map<string, Tensor> | Record<string, Tensor>,
    options: LoadStateDictOptions = {},
  ): LoadStateDictResult {
    const strict = options.strict ?? true;
    const given = stateDict instanceof Map ? stateDict : new Map(Object.entries(stateDict));
    const own = this.stateDict();
    const missingKeys = [...own.keys()].filter((k) => !given.has(k));
    const unexpectedKeys = [...given.keys()].filter((k) => !own.has(k));
    const wrongShapes: string[] = [];
    for (const [key, target] of own) {
      const source = given.get(key);
      if (!source) continue;
      if (!(source instanceof Tensor)) {
        wrongShapes.push(`${key}: expected a Tensor, got ${typeof source}`);
      } else if (!sameShape(source.shape, target.shape) && !scalarLike(source, target)) {
        wrongShapes.push(
          `${key}: expected shape ${formatShape(target.shape)}, got ${formatShape(source.shape)}`,
        );
      }
    }
    const problems: string[] = [];
    if (strict && missingKeys.length) problems.push(`missing keys: ${missingKeys.join(", ")}`);
    if (strict && unexpectedKeys.length) {
      problems.push(`unexpected keys: ${unexpectedKeys.join(", ")}`);
    }
    if (wrongShapes.length) problems.push(`wrong shapes: ${wrongShapes.join("; ")}`);
    if (problems.length) {
      throw new Error(
        `loadStateDict() into ${this.constructor.name} failed: ${problems.join(". ")}. ` +
          "Check that the model was built with the same configuration as the checkpoint" +
          (strict ? ", or pass { strict: false } to load the matching keys only." : "."),
      );
    }
    for (const [key, target] of own) {
      const source = given.get(key);
      if (source && source !== target) target.copyFrom(source);
    }
    return { missingKeys, unexpectedKeys };
  }

  /**
   * Sets training mode (batch statistics in batch norm) on this module and its descendants.
   *
   * @example
   * ```ts
   * import { initGPU, nn } from "@resnet/webgpu";
   * await initGPU();
   * const model = new nn.Sequential(new nn.BatchNorm2d(3)).eval();
   * console.log(model.training); // false
   * model.train();
   * ```
   */
  train(mode = true): this {
    for (const [, module] of this.namedModules()) module.training = mode;
    return this;
  }

  /** Sets evaluation mode (running statistics in batch norm); same as `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /** Drops every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Releases the GPU memory of every parameter, buffer and gradient. */
  dispose(): void {
    for (const t of [...this.parameters(), ...this.buffers()]) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
  }

  /** The part of {@link Module.toString} inside the parentheses, like PyTorch's `extra_repr`. */
  extraRepr(): string {
    return "";
  }

  /** A repr like PyTorch's: the class, its settings, and its children indented. */
  toString(): string {
    const children = this.namedChildren();
    if (children.length === 0) return `${this.constructor.name}(${this.extraRepr()})`;
    const lines = children.map(([name, child]) =>
      `  (${name}): ${child.toString().replaceAll("\n", "\n  ")}`
    );
    const extra = this.extraRepr();
    return `${this.constructor.name}(${extra ? `\n  ${extra}` : ""}\n${lines.join("\n")}\n)`;
  }
}

// PyTorch stores num_batches_tracked with shape []; files that flattened it to [1] still load.
function scalarLike(a: Tensor, b: Tensor): boolean {
  return a.size === 1 && b.size === 1 && a.shape.length <= 1 && b.shape.length <= 1;
}
