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
 * Layers, optimizers, data and the training loop also come one by one from the subpaths
 * `@resnet/webgpu/nn`, `@resnet/webgpu/optim`, `@resnet/webgpu/data` and `@resnet/webgpu/train`.
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
export * from "./src/ops/batch_norm.ts";
export * from "./src/ops/fused.ts";
export * from "./src/ops/pool.ts";
export * as nn from "./src/nn/mod.ts";
export {
  BottleneckResidualBlock,
  ResidualBlock,
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
  MAX_SAFETENSORS_TENSORS,
  readSafetensorsHeader,
  readSafetensorsMetadata,
  type SafetensorsEntry,
  type SafetensorsHeaderEntry,
  saveSafetensors,
} from "./src/io/safetensors.ts";
// optim and data as namespaces, as nn above (torch.optim, torch.utils.data, torch.nn). The subpaths
// "@resnet/webgpu/nn", "/optim" and "/data" export the same names one by one, and "/train" the
// training loop; types that signatures here name (ResNetBase extends nn.Module) are public there.
export * as optim from "./src/optim/mod.ts";
export * as data from "./src/data/mod.ts";
