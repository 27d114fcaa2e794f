/**
 * Elementwise ops: `add`, `mul`, `mulScalar`, `addScalar`, `relu`. Operands of binary ops must have
 * the same shape (no broadcasting). The kernels process four elements per invocation as vec4s.
 *
 * @module
 */
import addSource from "../../kernels/add.wgsl" with { type: "text" };
import mulSource from "../../kernels/mul.wgsl" with { type: "text" };
import scaleSource from "../../kernels/scale.wgsl" with { type: "text" };
import reluForwardSource from "../../kernels/relu_forward.wgsl" with { type: "text" };
import reluBackwardSource from "../../kernels/relu_backward.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel } from "../gpu/dispatch.ts";
import { formatShape, record, shouldRecord, Tensor } from "../tensor.ts";
import { checkNumber, checkTensor } from "./_check.ts";

const ADD = kernel("add", addSource, ["count4"]);
const MUL = kernel("mul", mulSource, ["count4"]);
const SCALE = kernel("scale", scaleSource, ["count4", "s", "t"]);
const RELU_FORWARD = kernel("relu_forward", reluForwardSource, ["count4"]);
const RELU_BACKWARD = kernel("relu_backward", reluBackwardSource, ["count4"]);

const WORKGROUP = 256;

function checkSameShape(op: string, a: Tensor, b: Tensor): void {
  checkTensor(op, "a", a);
  checkTensor(op, "b", b);
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new RangeError(
      `${op}: a and b must have the same shape (no broadcasting), got ${formatShape(a.shape)} ` +
        `and ${formatShape(b.shape)}`,
    );
  }
}

/** Encodes a two-input vec4 kernel (add, mul) into a fresh output of `a`'s shape. */
function binary(kernel: typeof ADD, a: Tensor, b: Tensor): Tensor {
  const out = Tensor.empty(a.shape);
  const count4 = Math.ceil(a.size / 4);
  dispatch(kernel, {
    buffers: [a.binding, b.binding, out.binding],
    params: { count4 },
    workgroups: grid1d(count4, WORKGROUP),
  });
  return out;
}

/** Encodes `x * s + t` into a fresh tensor. */
function affine(x: Tensor, s: number, t: number): Tensor {
  const out = Tensor.empty(x.shape);
  const count4 = Math.ceil(x.size / 4);
  dispatch(SCALE, {
    buffers: [x.binding, out.binding],
    params: { count4, s, t },
    workgroups: grid1d(count4, WORKGROUP),
  });
  return out;
}

/**
 * Elementwise sum of two tensors of the same shape (e.g. `[N, C, H, W]`), like `a + b` in PyTorch
 * without broadcasting.
 *
 * @throws {TypeError} when an operand is not a Tensor.
 * @throws {RangeError} when the shapes differ.
 * @example
 * ```ts
 * import { add, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const y = add(Tensor.from([1, 2], [2]), Tensor.from([10, 20], [2]));
 * console.log(await y.toArray()); // Float32Array [11, 22]
 * ```
 */
export function add(a: Tensor, b: Tensor): Tensor {
  checkSameShape("add()", a, b);
  const out = binary(ADD, a, b);
  // Saves nothing: both gradients are gy.
  if (shouldRecord(a, b)) {
    record(out, { name: "add", inputs: [a, b], backward: (gy) => addBackward(gy, a, b) });
  }
  return out;
}

function addBackward(gy: Tensor, a: Tensor, b: Tensor): (Tensor | null)[] {
  // gy may be handed back once; the second input gets a copy.
  const ga = a.requiresGrad ? gy : null;
  const gb = b.requiresGrad ? (ga ? gy.clone() : gy) : null;
  return [ga, gb];
}

/**
 * Elementwise product of two tensors of the same shape, like `a * b` in PyTorch without
 * broadcasting.
 *
 * @throws {TypeError} when an operand is not a Tensor.
 * @throws {RangeError} when the shapes differ.
 * @example
 * ```ts
 * import { initGPU, mul, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const y = mul(Tensor.from([1, 2], [2]), Tensor.from([3, 4], [2]));
 * console.log(await y.toArray()); // Float32Array [3, 8]
 * ```
 */
export function mul(a: Tensor, b: Tensor): Tensor {
  checkSameShape("mul()", a, b);
  const out = binary(MUL, a, b);
  // Saves the inputs a and b (ga = gy * b, gb = gy * a).
  if (shouldRecord(a, b)) {
    record(out, { name: "mul", inputs: [a, b], backward: (gy) => mulBackward(gy, a, b) });
  }
  return out;
}

function mulBackward(gy: Tensor, a: Tensor, b: Tensor): (Tensor | null)[] {
  return [
    a.requiresGrad ? binary(MUL, gy, b) : null,
    b.requiresGrad ? binary(MUL, gy, a) : null,
  ];
}

/**
 * Multiplies every element by the number `s`, like `x * s` in PyTorch.
 *
 * @throws {TypeError} when `x` is not a Tensor or `s` not a number.
 * @example
 * ```ts
 * import { initGPU, mulScalar, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(await mulScalar(Tensor.from([1, -2], [2]), 3).toArray()); // Float32Array [3, -6]
 * ```
 */
export function mulScalar(x: Tensor, s: number): Tensor {
  checkTensor("mulScalar()", "x", x);
  checkNumber("mulScalar()", "the scalar", s);
  const out = affine(x, s, 0);
  // Saves nothing but the number s: gx = gy * s.
  if (shouldRecord(x)) {
    record(out, { name: "mulScalar", inputs: [x], backward: (gy) => [affine(gy, s, 0)] });
  }
  return out;
}

/**
 * Adds the number `s` to every element, like `x + s` in PyTorch.
 *
 * @throws {TypeError} when `x` is not a Tensor or `s` not a number.
 * @example
 * ```ts
 * import { addScalar, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(await addScalar(Tensor.from([1, -2], [2]), 0.5).toArray()); // [1.5, -1.5]
 * ```
 */
export function addScalar(x: Tensor, s: number): Tensor {
  checkTensor("addScalar()", "x", x);
  checkNumber("addScalar()", "the scalar", s);
  const out = affine(x, 1, s);
  // Saves nothing: gx = gy.
  if (shouldRecord(x)) {
    record(out, { name: "addScalar", inputs: [x], backward: (gy) => [gy] });
  }
  return out;
}

/**
 * Rectified linear unit `max(x, 0)` elementwise, for any shape such as `[N, C, H, W]`. Its
 * gradient is 0 where `x <= 0` (PyTorch's convention at 0); NaN inputs stay NaN.
 *
 * @throws {TypeError} when `x` is not a Tensor.
 * @example
 * ```ts
 * import { initGPU, relu, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * console.log(await relu(Tensor.from([-1, 2], [2])).toArray()); // Float32Array [0, 2]
 * ```
 */
export function relu(x: Tensor): Tensor {
  checkTensor("relu()", "x", x);
  const y = Tensor.empty(x.shape);
  const count4 = Math.ceil(x.size / 4);
  dispatch(RELU_FORWARD, {
    buffers: [x.binding, y.binding],
    params: { count4 },
    workgroups: grid1d(count4, WORKGROUP),
  });
  // Saves the output y (its own output, so not an internal): gx = gy * (y > 0).
  if (shouldRecord(x)) {
    record(y, { name: "relu", inputs: [x], backward: (gy) => [reluBackward(gy, y)] });
  }
  return y;
}

function reluBackward(gy: Tensor, y: Tensor): Tensor {
  const gx = Tensor.empty(y.shape);
  const count4 = Math.ceil(y.size / 4);
  dispatch(RELU_BACKWARD, {
    buffers: [y.binding, gy.binding, gx.binding],
    params: { count4 },
    workgroups: grid1d(count4, WORKGROUP),
  });
  return gx;
}
