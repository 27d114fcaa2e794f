/**
 * Datasets and loading: CIFAR-10's binary format, its download (resumable, MD5-verified), a
 * synthetic stand-in, and a {@link DataLoader} that turns uint8 images into normalised, augmented
 * float32 batches on the GPU.
 *
 * @module
 */
export {
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  type ImageDataset,
  loadCifar10Folder,
  parseCifarRecords,
} from "./cifar10.ts";
export {
  defaultDataDir,
  type DownloadProgress,
  ensureCifar10,
  type EnsureCifar10Options,
} from "./download.ts";
export { SYNTHETIC_CLASSES, syntheticCifar, type SyntheticCifarOptions } from "./synthetic.ts";
export {
  type AugmentOptions,
  type Batch,
  DataLoader,
  type DataLoaderOptions,
  type DataLoaderState,
  GpuImageStore,
} from "./loader.ts";
