/**
 * torchvision's `ImageFolder` layout (one sub-folder per class, PNG or JPEG files inside) as a
 * dataset of fixed-size uint8 images, and {@link ImageFolderLoader}, which turns them into
 * normalised float32 batches on the GPU with torchvision's ImageNet transforms: random resized
 * crop and horizontal flip for training, center crop for evaluation.
 *
 * @module
 */
import resizedCropSource from "../../kernels/resized_crop.wgsl" with { type: "text" };
import { dispatch, grid1d, kernel, writeBuffer } from "../gpu/dispatch.ts";
import { Generator } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { decodeImage, toPlanes } from "./image.ts";
import { NORMALIZE_PARAMS, normalizeParams } from "./loader.ts";

const RESIZED_CROP = kernel("resized_crop", resizedCropSource, [
  "count",
  "size",
  "side",
  ...NORMALIZE_PARAMS,
]);

/** ImageNet's per-channel mean (RGB, in [0, 1]), torchvision's `Normalize` default for its weights. */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** ImageNet's per-channel standard deviation (RGB). */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

const EXTENSIONS = [".png", ".jpg", ".jpeg"];

/** A folder of images in torchvision's `ImageFolder` layout, decoded and resized. */
export interface ImageFolder {
  /** Class names: the sub-folders, sorted as torchvision sorts them. */
  classes: string[];
  /** Number of images. */
  count: number;
  /** Each image's class index. */
  labels: Int32Array;
  /** Each image's path, relative to the root (`cat/0001.jpg`). */
  files: string[];
  /** Side of the stored images: the shorter side resized to it, then the center square. */
  side: number;
  /** `[count, 3, side, side]` bytes, RGB planes. */
  images: Uint8Array;
}

/** Options of {@link loadImageFolder}. */
export interface LoadImageFolderOptions {
  /**
   * Side the images are stored at (torchvision's `Resize(side)` then a center square); default
   * 256, as ImageNet's evaluation transform before its 224 center crop.
   */
  side?: number;
}

/**
 * Reads a folder in torchvision's `ImageFolder` layout: one sub-folder per class (sorted by name;
 * the index of a class is its position), each holding PNG or JPEG files (`.png`, `.jpg`,
 * `.jpeg`, any case; other files are skipped). Every image is decoded, its shorter side resized
 * to `side` with area averaging and its center square kept, as RGB planes.
 *
 * @throws {Error} when the folder has no class sub-folders or no images, or an image does not
 *   decode (`ImageDecodeError`, naming the file).
 * @example
 * ```ts ignore
 * import { data } from "@resnet/webgpu";
 * const folder = await data.loadImageFolder("flowers/train", { side: 256 });
 * console.log(folder.classes, folder.count);
 * ```
 */
export async function loadImageFolder(
  root: string,
  options: LoadImageFolderOptions = {},
): Promise<ImageFolder> {
  const side = options.side ?? 256;
  if (!Number.isInteger(side) || side < 1) {
    throw new RangeError(`loadImageFolder(): side must be a positive integer, got ${side}`);
  }
  const classes: string[] = [];
  for await (const entry of Deno.readDir(root)) {
    if (entry.isDirectory && !entry.name.startsWith(".")) classes.push(entry.name);
  }
  classes.sort();
  if (classes.length === 0) {
    throw new Error(
      `loadImageFolder(): "${root}" has no class sub-folders (expected root/<class>/<image>)`,
    );
  }
  const files: string[] = [];
  const labels: number[] = [];
  for (const [index, name] of classes.entries()) {
    const names: string[] = [];
    for await (const entry of Deno.readDir(`${root}/${name}`)) {
      const lower = entry.name.toLowerCase();
      if (entry.isFile && EXTENSIONS.some((e) => lower.endsWith(e))) names.push(entry.name);
    }
    for (const file of names.sort()) {
      files.push(`${name}/${file}`);
      labels.push(index);
    }
  }
  if (files.length === 0) {
    throw new Error(`loadImageFolder(): no PNG or JPEG files under "${root}"/<class>/`);
  }
  const plane = 3 * side * side;
  const images = new Uint8Array(files.length * plane);
  for (const [i, file] of files.entries()) {
    const bytes = await Deno.readFile(`${root}/${file}`);
    images.set(toPlanes(decodeImage(bytes, `${root}/${file}`), side), i * plane);
  }
  return { classes, count: files.length, labels: Int32Array.from(labels), files, side, images };
}

/** torchvision's `RandomResizedCrop` and `RandomHorizontalFlip` settings. */
export interface ResizedCropAugment {
  /** Range of the crop's area as a fraction of the image's; default `[0.08, 1]`. */
  scale?: [number, number];
  /** Range of the crop's aspect ratio (width / height); default `[3/4, 4/3]`. */
  ratio?: [number, number];
  /** Mirror half of the images; default true. */
  flip?: boolean;
}

/** Options of {@link ImageFolderLoader}. */
export interface ImageFolderLoaderOptions {
  /** Images per batch. */
  batchSize: number;
  /** Side of the model's input; default 224. */
  size?: number;
  /** Shuffle each epoch; default true when augmenting, false otherwise. */
  shuffle?: boolean;
  /**
   * Training augmentation (random resized crop of `size`, flip): true or its settings. False (the
   * default): the center `size` x `size` crop of each stored image, as the evaluation transform
   * `Resize(side)`, `CenterCrop(size)`.
   */
  augment?: boolean | ResizedCropAugment;
  /** Per-channel mean; default {@link IMAGENET_MEAN}. */
  mean?: readonly [number, number, number];
  /** Per-channel standard deviation; default {@link IMAGENET_STD}. */
  std?: readonly [number, number, number];
  /** Seed of the shuffle and the crops; default 0. */
  seed?: number;
  /** Drop the last batch when it is short; default false. */
  dropLast?: boolean;
}

/** One batch from an {@link ImageFolderLoader}. */
export interface ImageFolderBatch {
  /** `[B, 3, size, size]` float32, normalised. The caller owns it: `dispose()` it. */
  images: Tensor;
  /** Class index of each image. */
  labels: Int32Array;
  /** Index of each image in the folder. */
  indices: Uint32Array;
  /** The crop of each image, `[B, 5]`: x0, y0, width, height in stored pixels, flip (0 or 1). */
  boxes: Float32Array;
}

/**
 * Batches of an {@link ImageFolder} on the GPU: each batch's stored images are uploaded as bytes
 * and one `resized_crop` kernel crops, resamples to `size` x `size` (bilinear), flips and
 * normalises them. With `augment`, crops are drawn as torchvision's `RandomResizedCrop` draws
 * them (ten tries at a random area and log-uniform aspect ratio, else the whole image clamped to
 * the ratio range); without, each image's center `size` crop is taken pixel for pixel.
 *
 * @example
 * ```ts
 * import { data, initGPU } from "@resnet/webgpu";
 * await initGPU();
 * const folder: data.ImageFolder = {
 *   classes: ["a", "b"],
 *   count: 2,
 *   labels: new Int32Array([0, 1]),
 *   files: ["a/0.png", "b/0.png"],
 *   side: 8,
 *   images: new Uint8Array(2 * 3 * 8 * 8).fill(128),
 * };
 * const loader = new data.ImageFolderLoader(folder, { batchSize: 2, size: 4, augment: true });
 * for (const batch of loader) {
 *   console.log(batch.images.shape, batch.labels); // [2, 3, 4, 4] Int32Array(2) [...]
 *   batch.images.dispose();
 * }
 * ```
 */
export class ImageFolderLoader {
  /** The folder. */
  readonly folder: ImageFolder;
  /** Images per batch. */
  readonly batchSize: number;
  /** Side of the batches' images. */
  readonly size: number;
  #augment: Required<ResizedCropAugment> | null;
  #shuffle: boolean;
  #mean: readonly number[];
  #std: readonly number[];
  #dropLast: boolean;
  #generator: Generator;

  /** A loader over `folder`. */
  constructor(folder: ImageFolder, options: ImageFolderLoaderOptions) {
    this.folder = folder;
    this.batchSize = options.batchSize;
    this.size = options.size ?? 224;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) {
      throw new RangeError(`ImageFolderLoader: batchSize must be >= 1, got ${this.batchSize}`);
    }
    if (!Number.isInteger(this.size) || this.size < 1) {
      throw new RangeError(`ImageFolderLoader: size must be a positive integer, got ${this.size}`);
    }
    const a = options.augment ?? false;
    this.#augment = a === false ? null : {
      scale: (a === true ? undefined : a.scale) ?? [0.08, 1],
      ratio: (a === true ? undefined : a.ratio) ?? [3 / 4, 4 / 3],
      flip: (a === true ? undefined : a.flip) ?? true,
    };
    if (!this.#augment && this.size > folder.side) {
      throw new RangeError(
        `ImageFolderLoader: a center crop of ${this.size} does not fit images stored at ` +
          `${folder.side}; load the folder with a larger side`,
      );
    }
    this.#shuffle = options.shuffle ?? this.#augment !== null;
    this.#mean = options.mean ?? IMAGENET_MEAN;
    this.#std = options.std ?? IMAGENET_STD;
    this.#dropLast = options.dropLast ?? false;
    this.#generator = new Generator(options.seed ?? 0);
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.folder.count / this.batchSize;
    return this.#dropLast ? Math.floor(n) : Math.ceil(n);
  }

  /** One epoch of batches (a new shuffle each time when shuffling). */
  *[Symbol.iterator](): Iterator<ImageFolderBatch> {
    const order = Array.from({ length: this.folder.count }, (_, i) => i);
    if (this.#shuffle) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(this.#generator.uniform() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    }
    for (let b = 0; b < this.length; b++) {
      const indices = Uint32Array.from(order.slice(b * this.batchSize, (b + 1) * this.batchSize));
      yield this.batch(indices);
    }
  }

  /** The batch of the images at `indices`, with this loader's crops (random when augmenting). */
  batch(indices: Uint32Array): ImageFolderBatch {
    const { side, images } = this.folder;
    const plane = 3 * side * side;
    const boxes = new Float32Array(indices.length * 5);
    indices.forEach((index, i) => {
      if (!(index < this.folder.count)) {
        throw new RangeError(`ImageFolderLoader.batch(): index ${index} is out of range`);
      }
      boxes.set(this.#box(), i * 5);
    });
    const bytes = new Uint8Array(Math.ceil((indices.length * plane) / 4) * 4);
    indices.forEach((index, i) => {
      bytes.set(images.subarray(index * plane, (index + 1) * plane), i * plane);
    });
    return {
      images: resizedCrop(bytes, boxes, indices.length, side, this.size, this.#mean, this.#std),
      labels: Int32Array.from(indices, (i) => this.folder.labels[i]),
      indices,
      boxes,
    };
  }

  /** One crop: [x0, y0, w, h, flip], as torchvision's RandomResizedCrop.get_params draws it. */
  #box(): number[] {
    const side = this.folder.side;
    const a = this.#augment;
    if (!a) {
      const x0 = Math.round((side - this.size) / 2);
      return [x0, x0, this.size, this.size, 0];
    }
    const g = this.#generator;
    const flip = a.flip && g.uniform() < 0.5 ? 1 : 0;
    const area = side * side;
    const [lo, hi] = [Math.log(a.ratio[0]), Math.log(a.ratio[1])];
    for (let attempt = 0; attempt < 10; attempt++) {
      const target = area * (a.scale[0] + (a.scale[1] - a.scale[0]) * g.uniform());
      const ratio = Math.exp(lo + (hi - lo) * g.uniform());
      const w = Math.round(Math.sqrt(target * ratio));
      const h = Math.round(Math.sqrt(target / ratio));
      if (w > 0 && w <= side && h > 0 && h <= side) {
        const x0 = Math.floor(g.uniform() * (side - w + 1));
        const y0 = Math.floor(g.uniform() * (side - h + 1));
        return [x0, y0, w, h, flip];
      }
    }
    // Fallback: the whole (square) image, its ratio 1 clamped into the range.
    const ratio = Math.min(Math.max(1, a.ratio[0]), a.ratio[1]);
    const w = ratio < 1 ? Math.round(side * ratio) : side;
    const h = ratio > 1 ? Math.round(side / ratio) : side;
    return [(side - w) / 2, (side - h) / 2, w, h, flip];
  }
}

/**
 * Encodes the `resized_crop` kernel: `[count, 3, size, size]` float32 from `bytes` (`count`
 * images of `[3, side, side]`) and their `boxes` (`[count, 5]`).
 */
function resizedCrop(
  bytes: Uint8Array,
  boxes: Float32Array,
  count: number,
  side: number,
  size: number,
  mean: readonly number[],
  std: readonly number[],
): Tensor {
  const source = Tensor.empty([bytes.length / 4]);
  writeBuffer(source.buffer, bytes);
  const crops = Tensor.from(boxes, [count, 5]);
  const out = Tensor.empty([count, 3, size, size]);
  const total = out.size;
  dispatch(RESIZED_CROP, {
    buffers: [out.binding, source.binding, crops.binding],
    params: {
      count: total,
      size,
      side,
      ...normalizeParams(mean, std),
    },
    workgroups: grid1d(total, 256),
  });
  source.dispose();
  crops.dispose();
  return out;
}
