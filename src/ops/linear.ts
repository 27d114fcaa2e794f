/**
 * Matrix products: `matmul` and `linear` (PyTorch's `F.linear`), both on one register-blocked
 * kernel whose transposes are override constants.
 *
 * @module
 */
import matmulSource from "../../kernels/matmul.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { formatShape, gradDestination, record, shouldRecord, Tensor } from "../tensor.ts";
import { checkTensor, optionalTensor } from "./_check.ts";
import { sumInto } from "./reduce.ts";

const MATMUL = kernel("matmul", matmulSource, ["M", "N", "K", "has_bias"]);

/**
 * Encodes `op(a) op(b) (+ bias)` into `c` (a fresh `[m, n]` tensor by default), where `op(a)` is `[m, k]` (stored
 * `[k, m]` when `transA`) and `op(b)` is `[k, n]` (stored `[n, k]` when `transB`).
 */
function encodeMatmul(
  a: Tensor,
  b: Tensor,
  bias: Tensor | null,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  c: Tensor = Tensor.empty([m, n]),
): Tensor {
  dispatch(MATMUL, {
    // Without a bias the binding still needs a buffer: a read-only one already bound is fine.
    buffers: [a.binding, b.binding, (bias ?? a).binding, c.binding],
    params: { M: m, N: n, K: k, has_bias: bias ? 1 : 0 },
    workgroups: grid1d(Math.ceil(m / 4) * Math.ceil(n / 4), 64),
    constants: { TRANS_A: transA ? 1 : 0, TRANS_B: transB ? 1 : 0 },
  });
  return c;
}

/**
 * Matrix product of `a` `[M, K]` and `b` `[K, N]`, giving `[M, N]`, like `torch.mm`.
 *
 * @throws {TypeError} when an operand is not a Tensor.
 * @throws {RangeError} when an operand is not 2-D or the inner sizes differ.
 * @example
 * ```ts
 * import { initGPU, matmul, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const a = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
 * const b = Tensor.from([1, 0, 0, 1, 1, 1], [3, 2]);
 * console.log(await matmul(a, b).toArray()); // Float32Array [4, 5, 10, 11]
 * ```
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkTensor("matmul()", "a", a);
  checkTensor("matmul()", "b", b);
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== b.shape[0]) {
    throw new RangeError(
      `matmul(): expected a [M, K] and b [K, N], got a ${formatShape(a.shape)} and b ` +
        formatShape(b.shape),
    );
  }
  const [m, k] = a.shape;
  const n = b.shape[1];
  const out = encodeMatmul(a, b, null, m, n, k, false, false);
  // Saves the inputs a and b: ga = gy b^T, gb = a^T gy.
  if (shouldRecord(a, b)) {
    record(out, {
      name: "matmul",
      inputs: [a, b],
      backward: (gy) => [
        a.requiresGrad ? encodeMatmul(gy, b, null, m, k, n, false, true) : null,
        b.requiresGrad ? encodeMatmul(a, gy, null, k, n, m, true, false) : null,
      ],
    });
  }
  return out;
}

/**
 * Affine map `y = x W^T + b` of `input` `[N, in]` with `weight` `[out, in]` and an optional `bias`
 * `[out]`, giving `[N, out]`, like PyTorch's `F.linear` (the layer of `nn.Linear`).
 *
 * @throws {TypeError} when an operand is not a Tensor (the bias may be null or omitted).
 * @throws {RangeError} when the shapes do not fit together.
 * @example
 * ```ts
 * import { initGPU, linear, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.from([1, 2], [1, 2]);
 * const w = Tensor.from([1, 1, 1, -1, 0, 2], [3, 2]);
 * const b = Tensor.from([0, 0, 1], [3]);
 * console.log(await linear(x, w, b).toArray()); // Float32Array [3, -1, 5]
 * ```
 */
export function linear(input: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  checkTensor("linear()", "input", input);
  checkTensor("linear()", "weight", weight);
  const b = optionalTensor("linear()", "bias", bias);
  if (weight.ndim !== 2) {
    throw new RangeError(`linear(): weight must be [out, in], got ${formatShape(weight.shape)}`);
  }
  const [outFeatures, inFeatures] = weight.shape;
  if (input.ndim !== 2 || input.shape[1] !== inFeatures) {
    throw new RangeError(
      `linear(): input must be [N, in] with in = ${inFeatures} (weight is ` +
        `${formatShape(weight.shape)}), got ${formatShape(input.shape)}`,
    );
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== outFeatures)) {
    throw new RangeError(
      `linear(): bias must be [out] = [${outFeatures}] (weight is ${formatShape(weight.shape)}), ` +
        `got ${formatShape(b.shape)}`,
    );
  }
  const n = input.shape[0];
  const y = encodeMatmul(input, weight, b, n, outFeatures, inFeatures, false, true);
  // Saves the inputs x and W: gx = gy W, gW = gy^T x, gb = gy summed over N.
  if (shouldRecord(input, weight, b)) {
    record(y, {
      name: "linear",
      inputs: b ? [input, weight, b] : [input, weight],
      backward: (gy) => {
        const grads = [
          input.requiresGrad
            ? encodeMatmul(gy, weight, null, n, inFeatures, outFeatures, false, false)
            : null,
          weight.requiresGrad
            ? encodeMatmul(
              gy,
              input,
              null,
              outFeatures,
              inFeatures,
              n,
              true,
              false,
              gradDestination(weight),
            )
            : null,
        ];
        if (b) grads.push(b.requiresGrad ? sumInto(gy, [true, false], gradDestination(b)) : null);
        return grads;
      },
    });
  }
  return y;
}
