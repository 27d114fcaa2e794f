/**
 * Reverse-mode automatic differentiation over a tape of {@link GradNode}s. Knows no op by name:
 * each op records a node with its inputs, the tensors it saved and a backward function.
 *
 * @module
 */
import { invalidateRecording, isRecording, recordEffect } from "./gpu/dispatch.ts";
import type { Tensor } from "./tensor.ts";

/** One recorded op: how to turn the gradient of its output into gradients of its inputs. */
export interface GradNode {
  /** The op's name, for error messages and `toString()`. */
  readonly name: string;
  /** The op's tensor inputs, in the order `backward` returns their gradients. */
  readonly inputs: readonly Tensor[];
  /**
   * Encodes the gradient kernels and returns one gradient per input (`null` where an input needs
   * none). A returned tensor may be `gradOutput` itself; autograd then takes it over.
   *
   * `pending`, given when autograd already holds a gradient for some input (from the nodes that
   * ran before), lets the backward add that gradient in its own kernel instead of autograd adding
   * the two with a kernel of its own; a backward that ignores it is still right.
   */
  backward(gradOutput: Tensor, pending?: PendingGradients): (Tensor | null)[];
  /**
   * Tensors the op created only for its backward (batch statistics, arg-max indices): disposed
   * once the backward has used them.
   */
  readonly internals?: Tensor[];
  /** Set after the backward ran without `retainGraph`. */
  released?: boolean;
  /**
   * A module forward's intermediates, tied to the node of its output: disposed once a backward
   * without `retainGraph` has run through it (and every other node that could still need them).
   */
  owned?: { dispose(): void }[];
}

/**
 * The gradients autograd already holds for a node's inputs when the node's backward runs (see
 * {@link GradNode.backward}). A backward may fold `grads[i]` into the gradient it returns for
 * input i and then set `included[i]`: autograd takes that gradient as the input's whole gradient
 * and disposes `grads[i]`, with no addition of its own.
 */
export interface PendingGradients {
  /**
   * For input i: the gradient autograd holds for it, or null. Null also where the input requires
   * no gradient and at the second and later positions of an input listed twice (its held
   * gradient is offered once). Owned by autograd: the backward reads it, never writes or
   * disposes it.
   */
  readonly grads: readonly (Tensor | null)[];
  /**
   * Set by the backward: `included[i]` = the gradient returned for input i is its own plus
   * `grads[i]`. Ignored where `grads[i]` is null. That sum must carry `markZeroChannelSums` only
   * when both of its terms do, as `Tensor.accumulate` keeps it.
   */
  readonly included: boolean[];
}

let gradEnabled = true;

/**
 * Whether ops record the tape now (false inside {@link noGrad}).
 *
 * @example
 * ```ts
 * import { isGradEnabled, noGrad } from "@resnet/webgpu";
 * console.log(isGradEnabled(), noGrad(() => isGradEnabled())); // true false
 * ```
 */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Runs `fn` without recording gradients, like PyTorch's `torch.no_grad()`. Works with synchronous
 * and asynchronous functions; the previous mode returns when `fn` (or its promise) settles.
 *
 * @example
 * ```ts
 * import { initGPU, noGrad, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const layer = new nn.Linear(3, 2, { seed: 1 });
 * const y = noGrad(() => layer.forward(Tensor.ones([1, 3])));
 * console.log(y.requiresGrad); // false
 * ```
 */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  let result: T;
  try {
    result = fn();
  } catch (error) {
    gradEnabled = previous;
    throw error;
  }
  if (result instanceof Promise) {
    return result.finally(() => gradEnabled = previous) as T;
  }
  gradEnabled = previous;
  return result;
}

/** True when grad mode is on and any of `inputs` requires a gradient. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad);
}

/** Options of {@link Tensor.backward}. */
export interface BackwardOptions {
  /** Keep the tape and the saved tensors for another backward; default false. */
  retainGraph?: boolean;
}

/** Nodes reachable from `root`, ordered so that each comes after every node that consumes it. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [tensor, next] = top;
    const inputs = tensor.gradFn?.inputs ?? [];
    if (next < inputs.length) {
      top[1]++;
      const input = inputs[next];
      if (input.requiresGrad && !visited.has(input)) {
        visited.add(input);
        stack.push([input, 0]);
      }
    } else {
      stack.pop();
      order.push(tensor);
    }
  }
  return order.reverse();
}

/**
 * Propagates `seed` (the gradient of `root`, owned by this call) back through the tape and
 * accumulates into the `grad` of every leaf that requires one.
 */
export function runBackward(root: Tensor, seed: Tensor, options: BackwardOptions = {}): void {
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, seed);
  const order = topologicalOrder(root);
  // Intermediates of module forwards whose nodes this backward releases; disposed at its end,
  // when no node that saved them is left to run.
  const released: { dispose(): void }[] = [];
  for (const tensor of order) {
    const gradOutput = grads.get(tensor);
    const node = tensor.gradFn;
    if (!node) continue; // a leaf: its gradient is assigned below
    grads.delete(tensor);
    if (!gradOutput) continue;
    if (node.released) {
      gradOutput.dispose();
      throw new Error(
        `backward() went through ${node.name}'s node a second time, after its saved tensors were ` +
          "released; pass { retainGraph: true } to the first backward() to keep them.",
      );
    }
    const pending = pendingFor(grads, node.inputs);
    const results = node.backward(gradOutput, pending);
    if (results.length !== node.inputs.length) {
      throw new Error(
        `${node.name} backward returned ${results.length} gradients for ${node.inputs.length} inputs`,
      );
    }
    // taken: now held in `grads`; produced: returned by the backward or copied here; replaced:
    // held gradients that a returned one already includes. Disposed after the loop unless taken:
    // a tensor added into one input's gradient may still be returned for another input.
    const taken = new Set<Tensor>();
    const produced = new Set<Tensor>();
    const replaced: Tensor[] = [];
    node.inputs.forEach((input, i) => {
      let grad = results[i];
      if (!grad) return;
      produced.add(grad);
      if (!input.requiresGrad) return;
      if (taken.has(grad)) {
        grad = grad.clone();
        produced.add(grad);
      }
      const held = grads.get(input);
      if (held && !(held === pending?.grads[i] && pending.included[i])) {
        held.accumulate(grad);
        return;
      }
      // No gradient yet, or the backward added the held one already: this one replaces it.
      if (held) replaced.push(held);
      grads.set(input, grad);
      taken.add(grad);
    });
    for (const grad of [...produced, ...replaced]) {
      if (!taken.has(grad) && grad !== gradOutput) grad.dispose();
    }
    if (!taken.has(gradOutput)) gradOutput.dispose();
    if (!options.retainGraph) {
      for (const saved of node.internals ?? []) saved.dispose();
      node.released = true;
      if (node.owned) released.push(...node.owned);
      node.owned = undefined;
    }
  }
  for (const intermediate of released) intermediate.dispose();
  for (const [tensor, grad] of grads) {
    if (tensor.gradFn) {
      grad.dispose();
      continue;
    }
    if (tensor.grad) {
      invalidateRecording(
        "backward() accumulated into existing gradients (call zeroGrad() inside the recorded step)",
      );
      tensor.grad.accumulate(grad);
      grad.dispose();
    } else {
      tensor.grad = grad.keep();
      if (isRecording()) recordEffect(regrantEffect!(tensor, grad));
    }
  }
}

/**
 * Makes the effect a recorded step replays to give `leaf` its recorded gradient `grad` again
 * (tensor.ts provides it: autograd knows tensors by type only).
 */
let regrantEffect: ((leaf: Tensor, grad: Tensor) => () => void) | null = null;

/** Installs {@link regrantEffect}; tensor.ts calls it once. Internal. */
export function setRegrantEffect(make: (leaf: Tensor, grad: Tensor) => () => void): void {
  regrantEffect = make;
}

/**
 * The gradients `grads` holds for `inputs` (see {@link PendingGradients}), or undefined when it
 * holds none, the common case.
 */
function pendingFor(
  grads: Map<Tensor, Tensor>,
  inputs: readonly Tensor[],
): PendingGradients | undefined {
  let pending: { grads: (Tensor | null)[]; included: boolean[] } | undefined;
  inputs.forEach((input, i) => {
    if (!input.requiresGrad || inputs.indexOf(input) !== i) return;
    const held = grads.get(input);
    if (!held) return;
    pending ??= { grads: inputs.map(() => null), included: inputs.map(() => false) };
    pending.grads[i] = held;
  });
  return pending;
}
