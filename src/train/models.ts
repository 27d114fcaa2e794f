/**
 * The models `deno task train` knows by name: {@link buildModel}.
 *
 * @module
 */
import { Linear } from "../nn/linear.ts";
import { resnet, ResNetBase } from "../nn/resnet.ts";
import { Sequential } from "../nn/sequential.ts";

/** The seed's CIFAR-10 experiment: bottlenecks [8, 16, 16], blocks [6, 6, 6], channels 16/32/64. */
function labmlModel(seed: number): Sequential {
  const base = new ResNetBase([6, 6, 6], [16, 32, 64], {
    bottlenecks: [8, 16, 16],
    firstKernelSize: 3,
    seed,
  });
  return new Sequential(base, new Linear(64, 10, { seed: seed + 1 }));
}

/**
 * The deepest `resnet<6n+2>` that {@link buildModel} builds: the paper's ResNet-1202. Deeper
 * names are refused before anything is allocated.
 */
export const MAX_DEPTH = 1202;

/**
 * Builds a model by the name `deno task train --model` takes: `resnet<6n+2>` (the paper's CIFAR
 * network, `resnet(depth, { numClasses, seed })`) or `labml` (the seed's bottleneck experiment:
 * a {@link ResNetBase} with bottlenecks [8, 16, 16], blocks [6, 6, 6] and channels 16/32/64,
 * then a linear layer to 10 classes).
 *
 * @throws {RangeError} for other names, and depths beyond {@link MAX_DEPTH}.
 * @example
 * ```ts
 * import { buildModel } from "@resnet/webgpu/train";
 * import { initGPU } from "@resnet/webgpu";
 * await initGPU();
 * const model = buildModel("resnet20", 0);
 * console.log(model.parameters().reduce((n, p) => n + p.size, 0)); // 273258
 * ```
 */
export function buildModel(name: string, seed: number, numClasses = 10): Sequential {
  if (name === "labml") return labmlModel(seed);
  const match = typeof name === "string" ? /^resnet(\d{1,6})$/.exec(name) : null;
  const depth = match ? Number(match[1]) : NaN;
  if (!match || depth < 8 || depth > MAX_DEPTH || (depth - 2) % 6 !== 0) {
    const shown = String(name).length > 40 ? `${String(name).slice(0, 40)}…` : String(name);
    throw new RangeError(
      `Unknown model "${shown}": use resnet<6n+2> from resnet8 to resnet${MAX_DEPTH} ` +
        "(resnet8, resnet20, resnet32, resnet44, resnet56, resnet110, …) or labml",
    );
  }
  return resnet(depth, { numClasses, seed });
}
