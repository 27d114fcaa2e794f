/**
 * Train ResNets on the GPU from TypeScript: tensors with reverse-mode autograd, WGSL kernels run
 * through WebGPU (`navigator.gpu`), and modules that mirror PyTorch's `torch.nn`, with the same
 * state-dict keys, so checkpoints move between this library and PyTorch.
 *
 * @example
 * ```ts
 * import { crossEntropy, initGPU, resnet, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet(8, { numClasses: 10 });
 * const x = Tensor.randn([2, 3, 16, 16], { seed: 0 });
 * const loss = crossEntropy(model.forward(x), new Int32Array([3, 7]));
 * loss.backward();
 * console.log(await loss.item());
 * ```
 *
 * @module
 */
export { adapterDescription, getDevice, initGPU, type InitGPUOptions } from "./src/gpu/device.ts";
export { type MemoryStats, memoryStats, resetPeakMemory } from "./src/gpu/buffer_pool.ts";
export {
  flush,
  type GpuCounters,
  gpuCounters,
  type KernelProfile,
  type KernelTime,
  MAX_PENDING_COMMANDS,
  profileKernels,
} from "./src/gpu/dispatch.ts";
export {
  type RandomOptions,
  type Shape,
  Tensor,
  type TensorData,
  type TensorOptions,
} from "./src/tensor.ts";
export { type BackwardOptions, type GradNode, isGradEnabled, noGrad } from "./src/autograd.ts";
export { type Disposable, keep, tidy } from "./src/scope.ts";
export { defaultGenerator, Generator, manualSeed } from "./src/random.ts";
export * from "./src/ops/elementwise.ts";
export * from "./src/ops/shape.ts";
export * from "./src/ops/reduce.ts";
export * from "./src/ops/linear.ts";
export * from "./src/ops/loss.ts";
export * from "./src/ops/conv2d.ts";
export { batchNorm2d, type BatchNorm2dOptions } from "./src/ops/batch_norm.ts";
export * from "./src/ops/conv2d_batch_norm.ts";
export * from "./src/ops/pool.ts";
export * as nn from "./src/nn/mod.ts";
// The layers also at the top level, so that their types are public where ResNetBase names them.
export {
  AvgPool2d,
  type AvgPoolOptions,
  BatchNorm2d,
  type BatchNorm2dForwardOptions,
  type BatchNorm2dLayerOptions,
  Conv2d,
  type Conv2dLayerOptions,
  ConvBn2d,
  Flatten,
  type ForwardHook,
  Identity,
  type InitOptions,
  Linear,
  type LinearOptions,
  type LoadStateDictOptions,
  type LoadStateDictResult,
  MaxPool2d,
  Module,
  type PoolOptions,
  ReLU,
  type RemovableHandle,
  Sequential,
} from "./src/nn/mod.ts";
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
} from "./src/nn/resnet.ts";
export {
  type DecodedTensor,
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  type LoadSafetensorsOptions,
  readSafetensorsMetadata,
  type SafetensorsEntry,
  saveSafetensors,
} from "./src/io/safetensors.ts";
// optim and data as namespaces (PyTorch's torch.optim, torch.utils.data), and at the top level
// too, so that every type a public signature names is public.
export * as optim from "./src/optim/mod.ts";
export * from "./src/optim/mod.ts";
export * as data from "./src/data/mod.ts";
export * from "./src/data/mod.ts";
export * from "./src/train/mod.ts";
