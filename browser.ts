/**
 * The browser build of `@resnet/webgpu`: everything that runs on `navigator.gpu` without Deno —
 * tensors, ops, `nn` layers, the ResNet models, `optim` with its schedules, safetensors to and from
 * bytes, and the {@link DataLoader} fed from arrays. Files, environment variables, the CIFAR-10
 * download and the training CLI stay in `mod.ts`; no `Deno.*` call is reachable from here.
 * `deno task bundle` turns this module into `dist/resnet_webgpu.js`, one ES module with the WGSL
 * kernels inlined, for a `<script type="module">`.
 *
 * @example
 * ```ts
 * import {
 *   crossEntropy,
 *   encodeSafetensors,
 *   initGPU,
 *   optim,
 *   resnet,
 *   Tensor,
 *   tidy,
 * } from "@resnet/webgpu/browser";
 * await initGPU();
 * const model = resnet(8, { numClasses: 4, seed: 0 });
 * const opt = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
 * const x = Tensor.randn([2, 3, 16, 16], { seed: 1 });
 * const loss = tidy(() => {
 *   const loss = crossEntropy(model.forward(x), new Int32Array([1, 3]));
 *   loss.backward();
 *   opt.step();
 *   opt.zeroGrad();
 *   return loss;
 * });
 * console.log(await loss.item());
 * // A checkpoint as bytes, e.g. for a download link.
 * const state = [...model.stateDict()];
 * const values = await Promise.all(state.map(([, t]) => t.toArray()));
 * const bytes = encodeSafetensors(state.map(([name, t], i) => ({
 *   name,
 *   shape: t.shape,
 *   dtype: name.endsWith("num_batches_tracked") ? "I64" : "F32",
 *   data: name.endsWith("num_batches_tracked")
 *     ? BigInt64Array.from(values[i], (v) => BigInt(Math.round(v)))
 *     : values[i],
 * })));
 * console.log(bytes.length);
 * ```
 *
 * @module
 */
export { adapterDescription, getDevice, initGPU, type InitGPUOptions } from "./src/gpu/device.ts";
export { type MemoryStats, memoryStats, resetPeakMemory } from "./src/gpu/buffer_pool.ts";
export {
  gpuCounters,
  type KernelProfile,
  type KernelTime,
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
// The layers also at the top level, so that their types are public where ResNetBase names them.
export {
  AvgPool2d,
  type AvgPoolOptions,
  BatchNorm2d,
  type BatchNorm2dLayerOptions,
  Conv2d,
  type Conv2dLayerOptions,
  Flatten,
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
  Sequential,
} from "./src/nn/mod.ts";
export {
  BottleneckResidualBlock,
  ResidualBlock,
  resnet,
  ResNetBase,
  type ResNetBaseOptions,
  type ResNetOptions,
  ShortcutProjection,
} from "./src/nn/resnet.ts";
// Only the in-memory half of safetensors.ts: loadSafetensors and saveSafetensors use Deno's files.
export {
  type DecodedTensor,
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsEntry,
} from "./src/io/safetensors.ts";
export * as optim from "./src/optim/mod.ts";
export * from "./src/optim/mod.ts";
// Data at the top level only: src/data/mod.ts also holds the CIFAR-10 download and folder reader.
export {
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  type ImageDataset,
  parseCifarRecords,
} from "./src/data/cifar10.ts";
export {
  SYNTHETIC_CLASSES,
  syntheticCifar,
  type SyntheticCifarOptions,
} from "./src/data/synthetic.ts";
export {
  type AugmentOptions,
  type Batch,
  DataLoader,
  type DataLoaderOptions,
  type DataLoaderState,
  GpuImageStore,
} from "./src/data/loader.ts";
