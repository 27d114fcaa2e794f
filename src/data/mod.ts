/**
 * Datasets and loading: CIFAR-10's binary format, its download (resumable, MD5-verified), a
 * synthetic stand-in, and a {@link DataLoader} that turns uint8 images into normalised, augmented
 * float32 batches on the GPU.
 *
 * @module
 */
export * from "./_in_memory.ts";
export { loadCifar10Folder } from "./cifar10.ts";
export {
  defaultDataDir,
  type DownloadProgress,
  ensureCifar10,
  type EnsureCifar10Options,
} from "./download.ts";
export {
  type ImageFolder,
  type ImageFolderBatch,
  ImageFolderLoader,
  type ImageFolderLoaderOptions,
  IMAGENET_MEAN,
  IMAGENET_STD,
  loadImageFolder,
  type LoadImageFolderOptions,
  type ResizedCropAugment,
} from "./image_folder.ts";
