/**
 * A seedable pseudo-random generator (xoshiro128**), used for initialisation and `randn`, so that
 * a seed reproduces the same weights on every machine.
 *
 * @module
 */

/**
 * A seeded random number generator.
 *
 * @example
 * ```ts
 * import { Generator } from "@resnet/webgpu";
 * const g = new Generator(42);
 * console.log(g.uniform() < 1, Number.isFinite(g.normal()));
 * ```
 */
export class Generator {
  #s = new Uint32Array(4);

  /** Seeds the generator; the same seed gives the same sequence. */
  constructor(seed: number = Date.now()) {
    this.seed(seed);
  }

  /** Re-seeds the generator (splitmix32 expands the seed into the 128-bit state). */
  seed(seed: number): void {
    let x = (Math.floor(seed) >>> 0) ^ Math.floor(seed / 4294967296);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.#s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A float in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** A standard normal sample (Box–Muller). */
  normal(): number {
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** The generator's state, to save in a checkpoint. */
  getState(): number[] {
    return Array.from(this.#s);
  }

  /** Restores a state from {@link Generator.getState}. */
  setState(state: readonly number[]): void {
    if (state.length !== 4) {
      throw new RangeError(`Generator.setState() expects 4 numbers, got ${state.length}`);
    }
    this.#s.set(state.map((v) => v >>> 0));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * The generator used when no seed or generator is given; `manualSeed` reseeds it.
 *
 * @example
 * ```ts
 * import { defaultGenerator, manualSeed } from "@resnet/webgpu";
 * manualSeed(1);
 * const a = defaultGenerator.uniform();
 * manualSeed(1);
 * console.log(defaultGenerator.uniform() === a); // true
 * ```
 */
export const defaultGenerator: Generator = new Generator(0x5eed);

/**
 * Seeds the default generator, like PyTorch's `torch.manual_seed`.
 *
 * @example
 * ```ts
 * import { manualSeed } from "@resnet/webgpu";
 * manualSeed(0);
 * ```
 */
export function manualSeed(seed: number): void {
  defaultGenerator.seed(seed);
}
