import type { Tensor } from "../tensor.ts";
import { Module } from "./module.ts";

/**
 * Runs its modules in order, like `torch.nn.Sequential`; children are named `"0"`, `"1"`, …, so
 * state-dict keys read `0.conv.weight`, `1.bias`.
 *
 * @example
 * ```ts
 * import { initGPU, nn, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const model = new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 2));
 * console.log(model.forward(Tensor.ones([3, 4])).shape); // [3, 2]
 * console.log(model.toString());
 * ```
 */
export class Sequential extends Module {
  /** Registers `modules` as children `"0"`, `"1"`, …. */
  constructor(...modules: Module[]) {
    super();
    modules.forEach((m, i) => this.registerModule(String(i), m));
  }

  /** Number of modules. */
  get length(): number {
    return this.children().length;
  }

  /** The module at `index` (negative counts from the end). */
  at(index: number): Module {
    const layers = this.children();
    const m = layers.at(index);
    if (!m) {
      throw new RangeError(
        `Sequential.at(${index}): index out of range for ${layers.length} modules`,
      );
    }
    return m;
  }

  /** Feeds `input` through every module in order, each with {@link Module.call}. */
  forward(input: Tensor): Tensor {
    let x = input;
    for (const m of this.children()) x = m.call(x);
    return x;
  }

  /** The modules in order. */
  [Symbol.iterator](): Iterator<Module> {
    return this.children()[Symbol.iterator]();
  }
}
