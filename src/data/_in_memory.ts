/**
 * The parts of `data` that need no files: CIFAR-10's constants and record parser, the synthetic
 * set and the {@link DataLoader}. The `data` namespace of the browser build. Internal: import
 * `@resnet/webgpu/browser` instead.
 *
 * @module
 */
export {
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  type ImageDataset,
  parseCifarRecords,
} from "./cifar10.ts";
export { SYNTHETIC_CLASSES, syntheticCifar, type SyntheticCifarOptions } from "./synthetic.ts";
export {
  type AugmentOptions,
  type Batch,
  DataLoader,
  type DataLoaderOptions,
  type DataLoaderState,
  GpuImageStore,
} from "./loader.ts";
