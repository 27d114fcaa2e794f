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
 * Builds a model by the name `deno task train --model` takes: `resnet<6n+2>` (the paper's CIFAR
 * network, `resnet(depth, { numClasses, seed })`) or `labml` (the seed's bottleneck experiment:
 * a {@link ResNetBase} with bottlenecks [8, 16, 16], blocks [6, 6, 6] and channels 16/32/64,
 * then a linear layer to 10 classes).
 *
 * @throws {RangeError} for other names.
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
  const match = /^resnet(\d+)$/.exec(name);
  const depth = match ? Number(match[1]) : NaN;
  if (!match || depth < 8 || (depth - 2) % 6 !== 0) {
    throw new RangeError(
      `Unknown model "${name}": use resnet<6n+2> (resnet8, resnet20, resnet32, resnet44, ` +
        "resnet56, resnet110, …) or labml",
    );
  }
  return resnet(depth, { numClasses, seed });
}
