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
// Deno only: before the adapter is requested, a private XDG_RUNTIME_DIR where none is set.
import "./src/gpu/_runtime_dir.ts";
// Deno only: initGPU() reads RESNET_WEBGPU_KERNELS and RESNET_WEBGPU_LIMITS.
import "./src/gpu/_environment.ts";
export * from "./src/_core.ts";
// Files: Deno only.
export {
  loadSafetensors,
  type LoadSafetensorsOptions,
  MAX_SAFETENSORS_TENSORS,
  readSafetensorsHeader,
  readSafetensorsMetadata,
  type SafetensorsHeaderEntry,
  saveSafetensors,
} from "./src/io/safetensors.ts";
export {
  decodeTorchCheckpoint,
  encodeTorchCheckpoint,
  loadTorchCheckpoint,
  saveTorchCheckpoint,
  TorchCheckpointError,
} from "./src/io/torch_checkpoint.ts";
// data as a namespace (torch.utils.data); "@resnet/webgpu/data" exports the same names one by one,
// and "@resnet/webgpu/train" the training loop.
export * as data from "./src/data/mod.ts";
