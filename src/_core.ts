/**
 * The exports `mod.ts` (Deno) and `browser.ts` (the browser bundle) share: the GPU, tensors,
 * autograd, ops, the `nn` layers, the ResNet models, `optim`, and safetensors to and from bytes.
 * Nothing here reaches a `Deno.*` API. Internal: import `@resnet/webgpu` or
 * `@resnet/webgpu/browser` instead.
 *
 * @module
 */
export {
  adapterDescription,
  getDevice,
  initGPU,
  type InitGPUOptions,
  type KernelFamily,
  kernelFamily,
} from "./gpu/device.ts";
export { type MemoryStats, memoryStats, resetPeakMemory } from "./gpu/buffer_pool.ts";
export {
  flush,
  type GpuCounters,
  gpuCounters,
  type KernelProfile,
  type KernelTime,
  MAX_PENDING_COMMANDS,
  profileKernels,
} from "./gpu/dispatch.ts";
export {
  type RandomOptions,
  type Shape,
  Tensor,
  type TensorData,
  type TensorOptions,
} from "./tensor.ts";
export {
  type BackwardOptions,
  type GradNode,
  isGradEnabled,
  noGrad,
  type PendingGradients,
} from "./autograd.ts";
export { type Disposable, keep, tidy } from "./scope.ts";
export { defaultGenerator, Generator, manualSeed } from "./random.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/shape.ts";
export * from "./ops/reduce.ts";
export * from "./ops/linear.ts";
export * from "./ops/loss.ts";
export { conv2d, type Conv2dOptions } from "./ops/conv2d.ts";
export { batchNorm2d, type BatchNorm2dOptions } from "./ops/batch_norm.ts";
export * from "./ops/conv2d_batch_norm.ts";
export * from "./ops/pool.ts";
export * as nn from "./nn/mod.ts";
export {
  BottleneckResidualBlock,
  fuseConvBn,
  ResidualBlock,
  ResidualBlockBase,
  resnet,
  ResNetBase,
  type ResNetBaseOptions,
  type ResNetOptions,
  ShortcutProjection,
} from "./nn/resnet.ts";
export {
  BasicBlock,
  Bottleneck,
  ResNet,
  resnet101,
  resnet152,
  resnet18,
  resnet34,
  resnet50,
  type TorchvisionBlock,
  type TorchvisionBlockOptions,
  type TorchvisionResNetOptions,
} from "./nn/torchvision.ts";
export {
  type DecodedTensor,
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsEntry,
} from "./io/safetensors.ts";
// optim as a namespace, as nn above (torch.optim, torch.nn); "@resnet/webgpu/optim" and
// "@resnet/webgpu/nn" export the same names one by one.
export * as optim from "./optim/mod.ts";
