/**
 * Gradient-norm clipping, as PyTorch's `torch.nn.utils.clip_grad_norm_`: {@link clipGradNorm}.
 *
 * @module
 */
import gradNormPartialSource from "../../kernels/grad_norm_partial.wgsl" with { type: "text" };
import gradNormTotalSource from "../../kernels/grad_norm_total.wgsl" with { type: "text" };
import gradScaleSource from "../../kernels/grad_scale.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { markModified, Tensor } from "../tensor.ts";

const SLOTS = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"] as const;
const GRAD_NORM_PARTIAL = kernel("grad_norm_partial", gradNormPartialSource, [
  ...SLOTS,
  "base",
  "chunks",
  "mode",
  "p",
]);
const GRAD_NORM_TOTAL = kernel("grad_norm_total", gradNormTotalSource, [
  "count",
  "mode",
  "p",
  "max_norm",
]);
const GRAD_SCALE = kernel("grad_scale", gradScaleSource, SLOTS);
/** Gradient tensors per dispatch: eight storage buffers per stage is WebGPU's guaranteed minimum. */
const PER_DISPATCH = SLOTS.length;
/** Elements one workgroup of `grad_norm_partial` reduces at least, before it splits a tensor. */
const ELEMENTS_PER_WORKGROUP = 4096;

/** Options of {@link clipGradNorm}. */
export interface ClipGradNormOptions {
  /** The norm's order: a positive number (2 by default, the Euclidean norm) or `Infinity`. */
  normType?: number;
}

/**
 * Clips the gradients of `parameters` in place so that their total norm is at most `maxNorm`,
 * exactly as PyTorch's `torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)`: the
 * total norm is the `normType`-norm of all the gradients together (the largest absolute value for
 * `Infinity`), and every gradient is multiplied by `min(1, maxNorm / (norm + 1e-6))`. Parameters
 * whose `grad` is `null` are skipped. Everything runs on the GPU, encoded with the rest of the
 * step: one reduction dispatch per seven gradients, one dispatch for the total, one scaling
 * dispatch per seven gradients; nothing is read back. Call it between `loss.backward()` and
 * `optimizer.step()`.
 *
 * A non-finite norm (an overflow, a NaN gradient) makes the gradients non-finite too, as in
 * PyTorch with its default `error_if_nonfinite=False`.
 *
 * @returns the total norm before clipping, a scalar tensor `[]` on the GPU that the caller owns
 *   (read it with `await norm.item()` now and then, or dispose it).
 * @throws {RangeError} when `maxNorm` is negative or not a number, or `normType` is not positive.
 * @throws {TypeError} when `parameters` holds something other than a Tensor.
 * @example
 * ```ts
 * import { crossEntropy, flatten, initGPU, nn, Tensor } from "@resnet/webgpu";
 * import { clipGradNorm, SGD } from "@resnet/webgpu/optim";
 * await initGPU();
 * const model = new nn.Conv2d(3, 4, 3, { padding: 1, seed: 0 });
 * const optimizer = new SGD(model.parameters(), { lr: 0.1 });
 * const x = Tensor.randn([2, 3, 5, 5], { seed: 1 }); // [N, C, H, W]
 * const logits = flatten(model.forward(x)); // [2, 4 * 5 * 5]
 * crossEntropy(logits, new Int32Array([3, 7])).backward();
 * const norm = clipGradNorm(model.parameters(), 0.5);
 * optimizer.step();
 * console.log(await norm.item() > 0); // true: the norm before clipping
 * ```
 */
export function clipGradNorm(
  parameters: Iterable<Tensor>,
  maxNorm: number,
  options: ClipGradNormOptions = {},
): Tensor {
  const normType = options.normType ?? 2;
  if (typeof maxNorm !== "number" || !(maxNorm >= 0)) {
    throw new RangeError(`clipGradNorm(): maxNorm must be a number >= 0, got ${String(maxNorm)}`);
  }
  if (typeof normType !== "number" || !(normType > 0)) {
    throw new RangeError(
      `clipGradNorm(): normType must be a positive number or Infinity, got ${String(normType)}`,
    );
  }
  const grads: Tensor[] = [];
  for (const p of parameters) {
    if (!(p instanceof Tensor)) {
      throw new TypeError(`clipGradNorm(): parameters must be Tensors, got ${String(p)}`);
    }
    if (p.grad && p.grad.size > 0) grads.push(p.grad);
  }
  if (grads.length === 0) return Tensor.zeros([]);

  const mode = normType === Infinity ? 2 : normType === 2 ? 1 : 0;
  const p = normType === Infinity ? 1 : normType;
  const largest = Math.max(...grads.map((g) => g.size));
  const chunks = Math.min(64, Math.max(1, Math.ceil(largest / ELEMENTS_PER_WORKGROUP)));
  const groups: Tensor[][] = [];
  for (let i = 0; i < grads.length; i += PER_DISPATCH) {
    groups.push(grads.slice(i, i + PER_DISPATCH));
  }
  const norm = Tensor.empty([]);
  const partials = Tensor.empty([groups.length * PER_DISPATCH * chunks]);
  const coef = Tensor.empty([1]);
  try {
    groups.forEach((group, d) => {
      dispatch(GRAD_NORM_PARTIAL, {
        buffers: [
          ...SLOTS.map((_, s) => (group[s] ?? group[0]).binding),
          partials.binding,
        ],
        params: {
          ...slotCounts(group),
          base: d * PER_DISPATCH * chunks,
          chunks,
          mode,
          p,
        },
        workgroups: [PER_DISPATCH, chunks, 1],
      });
    });
    dispatch(GRAD_NORM_TOTAL, {
      buffers: [partials.binding, norm.binding, coef.binding],
      params: { count: partials.size, mode, p, max_norm: maxNorm },
      workgroups: [1, 1, 1],
    });
    // Each gradient's values are scaled once, even if two parameters were to share them (the
    // same buffer at the same offset; gradients in an optimizer's flat buffer differ by offset).
    const seen = new Map<GPUBuffer, Set<number>>();
    const unique = grads.filter((g) => {
      let offsets = seen.get(g.buffer);
      if (!offsets) seen.set(g.buffer, offsets = new Set());
      if (offsets.has(g.byteOffset)) return false;
      offsets.add(g.byteOffset);
      return true;
    });
    for (const g of unique) markModified(g);
    for (let i = 0; i < unique.length; i += PER_DISPATCH) {
      const group = unique.slice(i, i + PER_DISPATCH);
      // Unused writable slots need distinct buffers: bindings must not alias a written buffer.
      const dummies = SLOTS.slice(group.length).map(() => Tensor.empty([1]));
      try {
        dispatch(GRAD_SCALE, {
          buffers: [
            coef.binding,
            ...group.map((g) => g.binding),
            ...dummies.map((t) => t.binding),
          ],
          params: slotCounts(group),
          workgroups: grid1d(group.reduce((s, g) => s + g.size, 0), 256),
        });
      } finally {
        for (const t of dummies) t.dispose();
      }
    }
  } finally {
    partials.dispose();
    coef.dispose();
  }
  return norm;
}

function slotCounts(group: readonly Tensor[]): Record<(typeof SLOTS)[number], number> {
  return Object.fromEntries(SLOTS.map((name, s) => [name, group[s]?.size ?? 0])) as Record<
    (typeof SLOTS)[number],
    number
  >;
}
