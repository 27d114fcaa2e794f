/**
 * PyTorch's default initialisation, drawn from a seedable generator.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { defaultGenerator, Generator } from "../random.ts";

/** Where a layer draws its initial weights from. */
export interface InitOptions {
  /** Seed for a fresh generator. */
  seed?: number;
  /** Generator to draw from (a model passes one to all its layers); default the global one. */
  generator?: Generator;
}

/** The generator named by `options`. */
export function generatorFor(options: InitOptions = {}): Generator {
  if (options.generator) return options.generator;
  return options.seed === undefined ? defaultGenerator : new Generator(options.seed);
}

/**
 * PyTorch's `kaiming_uniform_(w, a=sqrt(5))` for conv and linear weights: uniform in
 * ±1/sqrt(fan_in) (gain sqrt(2/(1+a²)) times sqrt(3/fan_in)).
 */
export function kaimingUniform(shape: number[], fanIn: number, generator: Generator): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return Tensor.rand(shape, { generator, low: -bound, high: bound });
}

/** PyTorch's bias initialisation for conv and linear layers: uniform in ±1/sqrt(fan_in). */
export function biasUniform(length: number, fanIn: number, generator: Generator): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return Tensor.rand([length], { generator, low: -bound, high: bound });
}
