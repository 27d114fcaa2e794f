/**
 * Batches of images on the GPU: the dataset's bytes are uploaded once, and each batch is one
 * small upload (the batch's image indices and random crop/flip/cutout draws) and one `augment`
 * kernel that writes the normalised float32 batch `[B, 3, 32, 32]`.
 *
 * @module
 */
import augmentSource from "../../kernels/augment.wgsl" with { type: "text" };
import { getDevice } from "../gpu/device.ts";
import { destroyBuffer, dispatch, flush, grid1d, kernel, writeBuffer } from "../gpu/dispatch.ts";
import { Generator } from "../random.ts";
import { Tensor } from "../tensor.ts";
import {
  checkImageDataset,
  CIFAR10_MEAN,
  CIFAR10_STD,
  IMAGE_BYTES,
  type ImageDataset,
} from "./cifar10.ts";

/**
 * The uniform fields of a kernel that normalizes uint8 RGB: `x / 255 * scale + bias` per channel
 * (see {@link normalizeParams}).
 */
export const NORMALIZE_PARAMS = [
  "scale_r",
  "scale_g",
  "scale_b",
  "bias_r",
  "bias_g",
  "bias_b",
] as const;

/** `(x / 255 - mean) / std` per channel as NORMALIZE_PARAMS' `scale` and `bias` of a byte `x`. */
export function normalizeParams(mean: readonly number[], std: readonly number[]) {
  return {
    scale_r: 1 / (255 * std[0]),
    scale_g: 1 / (255 * std[1]),
    scale_b: 1 / (255 * std[2]),
    bias_r: -mean[0] / std[0],
    bias_g: -mean[1] / std[1],
    bias_b: -mean[2] / std[2],
  };
}

const AUGMENT = kernel("augment", augmentSource, [
  "count",
  "chunk_images",
  ...NORMALIZE_PARAMS,
  "cutout",
]);
const WORKGROUP = 256;
/** Output vec4s per image: 3 channels x 32 rows x 8 groups of 4 pixels. */
const QUADS_PER_IMAGE = 3 * 32 * 8;
/** Chunk buffers the `augment` kernel binds at once. */
const MAX_CHUNKS = 4;
/** Side of the images, in pixels. */
const SIDE = 32;

const watchedDevices = new WeakSet<GPUDevice>();
const lostDevices = new WeakSet<GPUDevice>();

/** Remembers when `device` is lost, without keeping anything else alive. */
function watchLoss(device: GPUDevice): void {
  if (watchedDevices.has(device)) return;
  watchedDevices.add(device);
  device.lost.then(() => lostDevices.add(device));
}

/**
 * A dataset's images uploaded to the GPU once, as bytes (4 per u32), split into at most four
 * buffers so that each fits the adapter's largest storage binding (128 MiB on llvmpipe, less than
 * CIFAR-10's 153.6 MB). {@link DataLoader} uses one; use it directly to gather batches of your
 * own choosing.
 *
 * @example
 * ```ts
 * import { data, initGPU } from "@resnet/webgpu";
 * await initGPU();
 * const { test } = data.syntheticCifar({ trainCount: 0, testCount: 8 });
 * const store = new data.GpuImageStore(test);
 * // Images 3 and 5, the first uncropped, the second cropped at (0, 8) and flipped.
 * const x = store.gather(new Uint32Array([3, 5]), new Uint8Array([4, 4, 0, 0, 8, 1]));
 * console.log(x.shape); // [2, 3, 32, 32]
 * // The same with a 16x16 cutout centred at (10, 20) in the first, (31, 0) in the second.
 * const draws = new Uint8Array([4, 4, 0, 10, 20, 0, 8, 1, 31, 0]);
 * const cut = store.gather(new Uint32Array([3, 5]), draws, undefined, undefined, 16);
 * console.log(cut.shape); // [2, 3, 32, 32]
 * x.dispose();
 * cut.dispose();
 * store.dispose();
 * ```
 */
export class GpuImageStore {
  /** Number of images. */
  readonly count: number;
  /** Images per chunk buffer. */
  readonly chunkImages: number;
  #images: Uint8Array;
  #chunks: GPUBuffer[] = [];
  #draws: GPUBuffer | null = null;
  #upload = new Uint32Array(0);
  #device: GPUDevice | null = null;
  #disposed = false;

  /**
   * Plans the chunks; the bytes are uploaded at the first {@link GpuImageStore.gather} (and again
   * if the GPU device was replaced).
   *
   * @param dataset the images, `[N, 3, 32, 32]` bytes.
   * @param maxChunkImages at most this many images per chunk buffer; default what the adapter's
   *   `maxStorageBufferBindingSize` allows (43,690 images on llvmpipe). Smaller values are for
   *   tests.
   * @throws {RangeError} when the dataset needs more than four chunks.
   */
  constructor(dataset: ImageDataset, maxChunkImages?: number) {
    checkImageDataset(dataset, "GpuImageStore");
    if (
      maxChunkImages !== undefined && (!Number.isInteger(maxChunkImages) || maxChunkImages < 1)
    ) {
      throw new RangeError(
        `GpuImageStore: maxChunkImages must be a positive integer, got ${maxChunkImages}`,
      );
    }
    this.count = dataset.count;
    this.#images = dataset.images;
    const limits = getDevice().limits;
    const bindable = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    const fit = Math.floor(bindable / IMAGE_BYTES);
    this.chunkImages = Math.max(1, Math.min(maxChunkImages ?? fit, fit));
    const chunks = Math.ceil(this.count / this.chunkImages);
    if (chunks > MAX_CHUNKS) {
      throw new RangeError(
        `GpuImageStore: dataset "${dataset.name}" has ${this.count} images, which need ` +
          `${chunks} buffers of at most ${this.chunkImages} images (this adapter binds at most ` +
          `${bindable} bytes per buffer); the augment kernel binds at most ${MAX_CHUNKS}: use ` +
          `a smaller dataset`,
      );
    }
  }

  /** Bytes the images take on the GPU. */
  get byteLength(): number {
    return this.count * IMAGE_BYTES;
  }

  #ensureUploaded(batchSize: number): GPUDevice {
    if (this.#disposed) {
      throw new Error("GpuImageStore: used after dispose()");
    }
    const device = getDevice();
    if (this.#device !== device) {
      // A replaced device invalidated the old buffers: upload again.
      for (const buffer of this.#chunks) buffer.destroy();
      this.#draws?.destroy();
      this.#chunks = [];
      this.#draws = null;
      for (let start = 0; start < this.count; start += this.chunkImages) {
        const bytes = this.#images.subarray(
          start * IMAGE_BYTES,
          Math.min(this.count, start + this.chunkImages) * IMAGE_BYTES,
        );
        const buffer = device.createBuffer({
          size: bytes.length,
          usage: GPUBufferUsage.STORAGE,
          mappedAtCreation: true,
          label: `images:${start}`,
        });
        new Uint8Array(buffer.getMappedRange()).set(bytes);
        buffer.unmap();
        this.#chunks.push(buffer);
      }
      this.#device = device;
      watchLoss(device);
    }
    if (!this.#draws || this.#draws.size < batchSize * 8) {
      if (this.#draws) {
        // Work encoded earlier may still read the old buffer: submit it before destroying.
        destroyBuffer(this.#draws);
      }
      this.#draws = device.createBuffer({
        size: Math.max(16, batchSize * 8),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        label: "augment-draws",
      });
      this.#upload = new Uint32Array(batchSize * 2);
    }
    return device;
  }

  /**
   * Encodes the gather of images `indices` into a fresh pooled tensor `[B, 3, 32, 32]` holding
   * `(crop(pad4(x)) / 255 - mean) / std` per channel, then with `cutout` > 0 a `cutout`-pixel
   * square set to 0 (the mean pixel, after normalisation, as DeVries & Taylor's Cutout does).
   * Nothing runs until the next readback or submit; the upload of `indices` and `draws` is ordered
   * with the work already encoded.
   *
   * @param indices `[B]` image indices, each below {@link GpuImageStore.count}.
   * @param draws per image: crop corner `dx`, `dy` in `[0, 8]` in the zero-padded 40x40 image
   *   (4, 4 is no crop) and a flip flag 0 or 1, `[B, 3]`; with `cutout` > 0 also the square's
   *   centre `cx`, `cy` in `[0, 31]`, `[B, 5]`. The square covers rows and columns
   *   `[c - floor(cutout / 2), c - floor(cutout / 2) + cutout)`, clipped at the borders.
   * @param mean per-channel mean (R, G, B) on the `[0, 1]` scale; default CIFAR-10's.
   * @param std per-channel standard deviation; default CIFAR-10's.
   * @param cutout side of the cutout square in pixels, an integer in `[0, 32]`; default 0 (none).
   * @returns a tensor the caller owns and must dispose.
   * @throws {RangeError} when an index or a draw is out of range or the sizes disagree.
   */
  gather(
    indices: Uint32Array,
    draws: Uint8Array,
    mean: readonly number[] = CIFAR10_MEAN,
    std: readonly number[] = CIFAR10_STD,
    cutout = 0,
  ): Tensor {
    if (!(indices instanceof Uint32Array) || !(draws instanceof Uint8Array)) {
      throw new TypeError(
        "GpuImageStore.gather(): indices must be a Uint32Array, draws a Uint8Array",
      );
    }
    const b = indices.length;
    checkCutout("GpuImageStore.gather()", cutout);
    const per = cutout > 0 ? 5 : 3;
    if (draws.length !== per * b) {
      throw new RangeError(
        `GpuImageStore.gather(): draws must be [B, ${per}] = ${per * b} bytes for ${b} indices` +
          `${cutout > 0 ? " with cutout" : ""}, got ${draws.length}`,
      );
    }
    checkNormalization("GpuImageStore.gather()", mean, std);
    if (b === 0) return Tensor.empty([0, 3, 32, 32]);
    this.#ensureUploaded(b);
    const upload = this.#upload;
    for (let i = 0; i < b; i++) {
      const index = indices[i];
      const dx = draws[per * i];
      const dy = draws[per * i + 1];
      const flip = draws[per * i + 2];
      const cx = cutout > 0 ? draws[per * i + 3] : 0;
      const cy = cutout > 0 ? draws[per * i + 4] : 0;
      if (index >= this.count || dx > 8 || dy > 8 || flip > 1 || cx >= SIDE || cy >= SIDE) {
        throw new RangeError(
          `GpuImageStore.gather(): item ${i} has index ${index} (count ${this.count}), dx ${dx}, ` +
            `dy ${dy}, flip ${flip}, cutout centre (${cx}, ${cy}); expected index < count, dx ` +
            "and dy in [0, 8], flip 0 or 1, the centre in [0, 31]",
        );
      }
      upload[2 * i] = index;
      // Unsigned: cy << 26 sets the sign bit of a 32-bit integer.
      upload[2 * i + 1] = (dx | (dy << 8) | (flip << 16) | (cx << 20) | (cy << 26)) >>> 0;
    }
    const out = Tensor.empty([b, 3, 32, 32]);
    const chunks = this.#chunks;
    writeBuffer(this.#draws!, upload.subarray(0, 2 * b));
    const quads = b * QUADS_PER_IMAGE;
    dispatch(AUGMENT, {
      buffers: [
        out.binding,
        this.#draws!,
        chunks[0],
        chunks[1] ?? chunks[0],
        chunks[2] ?? chunks[0],
        chunks[3] ?? chunks[0],
      ],
      params: {
        count: quads,
        chunk_images: this.chunkImages,
        ...normalizeParams(mean, std),
        cutout,
      },
      workgroups: grid1d(quads, WORKGROUP),
    });
    return out;
  }

  /** Frees the GPU buffers now, after submitting the work already encoded that reads them. */
  dispose(): void {
    if (this.#device && !lostDevices.has(this.#device)) {
      try {
        flush();
      } catch {
        // getDevice() keeps reporting a device error to the next op; nothing to submit here.
      }
    }
    for (const buffer of this.#chunks) destroyBuffer(buffer);
    if (this.#draws) destroyBuffer(this.#draws);
    this.#chunks = [];
    this.#draws = null;
    this.#device = null;
    this.#disposed = true;
  }
}

function checkCutout(what: string, cutout: unknown): void {
  if (!Number.isInteger(cutout) || (cutout as number) < 0 || (cutout as number) > SIDE) {
    throw new RangeError(
      `${what}: cutout must be an integer side in [0, ${SIDE}] pixels, got ${String(cutout)}`,
    );
  }
}

function checkNormalization(what: string, mean: readonly number[], std: readonly number[]): void {
  const ok = (v: readonly number[]) =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && isFinite(x));
  if (!ok(mean) || !ok(std) || std.some((s) => s <= 0)) {
    throw new RangeError(
      `${what}: mean and std must be 3 finite numbers (R, G, B) with std > 0, got mean ` +
        `${JSON.stringify(mean)}, std ${JSON.stringify(std)}`,
    );
  }
}

/** Random augmentations of {@link DataLoaderOptions.augment}. */
export interface AugmentOptions {
  /** Random 32x32 crop from the image zero-padded by 4 pixels. */
  crop: boolean;
  /** Random horizontal flip, with probability 1/2. */
  flip: boolean;
  /**
   * Cutout (DeVries & Taylor 2017): the side in pixels of a square, centred at a random pixel of
   * each image and clipped at its borders, set to 0 after normalisation (16 is the paper's
   * CIFAR-10 choice). Default 0: none.
   */
  cutout?: number;
}

/** Options of {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Images per batch. */
  batchSize: number;
  /** Visit the images in a new random order each epoch; default true. */
  shuffle?: boolean;
  /** Seed of the loader's generator (order and augmentations); default 0. */
  seed?: number;
  /** Random augmentations; default none (for test sets). */
  augment?: AugmentOptions;
  /** Per-channel mean (R, G, B) on the `[0, 1]` scale; default {@link CIFAR10_MEAN}. */
  mean?: readonly number[];
  /** Per-channel standard deviation; default {@link CIFAR10_STD}. */
  std?: readonly number[];
  /** Leave out the last batch when it would be smaller than `batchSize`; default false. */
  dropLast?: boolean;
  /** At most this many images per GPU buffer; default from the adapter's limits (for tests). */
  maxChunkImages?: number;
}

/** One batch from {@link DataLoader.batches}. */
export interface Batch {
  /**
   * The normalised, augmented images `[B, 3, 32, 32]`, from the buffer pool. The caller owns
   * them: `dispose()` them after the step.
   */
  images: Tensor;
  /** Class index of each image, `[B]`, as the loss functions take them. */
  labels: Int32Array;
  /** Dataset index of each image, `[B]`. */
  indices: Uint32Array;
  /**
   * The random draws applied, `[B, 3]`: crop corner `dx`, `dy` in `[0, 8]` in the zero-padded
   * 40x40 image (4, 4 without cropping) and the flip flag; with cutout `[B, 5]`, the cutout
   * square's centre `cx`, `cy` in `[0, 31]` after them.
   */
  draws: Uint8Array;
}

/**
 * Where a {@link DataLoader} stands, to save in a checkpoint and resume exactly: plain numbers,
 * JSON-serialisable.
 */
export interface DataLoaderState {
  /** Completed epochs. */
  epoch: number;
  /** Batches of the current epoch already handed out. */
  position: number;
  /** The generator's state at the start of the current epoch. */
  generator: number[];
  /** Images in the dataset, checked when loading. */
  count: number;
  /** The batch size, checked when loading. */
  batchSize: number;
}

/**
 * Iterates over a dataset in batches of normalised float32 images on the GPU, like PyTorch's
 * `DataLoader` with torchvision's `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`,
 * `ToTensor()` and `Normalize(mean, std)`, and optionally Cutout after them. The images are uploaded to the GPU once (at the first
 * batch); each batch then uploads only its indices and random draws and runs one kernel, encoded
 * in order with the training step, so it adds no submit. Each epoch's order and draws are drawn
 * from the seeded generator when the epoch starts, so a seed reproduces every batch and
 * {@link DataLoader.stateDict} resumes exactly mid-epoch.
 *
 * @example
 * ```ts
 * import { data, initGPU } from "@resnet/webgpu";
 * await initGPU();
 * const { train } = data.syntheticCifar({ trainCount: 40, testCount: 0 });
 * const loader = new data.DataLoader(train, {
 *   batchSize: 16,
 *   augment: { crop: true, flip: true, cutout: 16 },
 * });
 * console.log(loader.length); // 3
 * for (const { images, labels } of loader.batches()) {
 *   console.log(images.shape, labels.length); // [16, 3, 32, 32] 16, …, [8, 3, 32, 32] 8
 *   images.dispose();
 * }
 * console.log(loader.epoch); // 1
 * loader.dispose();
 * ```
 */
export class DataLoader {
  /** The dataset iterated over. */
  readonly dataset: ImageDataset;
  /** Images per batch. */
  readonly batchSize: number;
  #shuffle: boolean;
  #augment: Required<AugmentOptions>;
  #mean: readonly number[];
  #std: readonly number[];
  #dropLast: boolean;
  #maxChunkImages?: number;
  #store: GpuImageStore | null = null;
  #generator: Generator;
  #epoch = 0;
  #position = 0;
  /** Generator state when the current epoch started; null until it is planned. */
  #epochState: number[] | null = null;
  #order: Uint32Array | null = null;
  #draws: Uint8Array | null = null;

  /**
   * Checks the dataset and options; the images are uploaded at the first batch.
   *
   * @throws {TypeError} when the dataset is malformed; {@link RangeError} for a bad option.
   */
  constructor(dataset: ImageDataset, options: DataLoaderOptions) {
    checkImageDataset(dataset, "DataLoader");
    const {
      batchSize,
      shuffle = true,
      seed = 0,
      augment = { crop: false, flip: false },
      mean = CIFAR10_MEAN,
      std = CIFAR10_STD,
      dropLast = false,
      maxChunkImages,
    } = options ?? {} as DataLoaderOptions;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    }
    if (!Number.isFinite(seed)) {
      throw new RangeError(`DataLoader: seed must be a finite number, got ${seed}`);
    }
    if (augment === null || typeof augment !== "object") {
      throw new TypeError(
        `DataLoader: augment must be { crop: boolean, flip: boolean, cutout?: number }, got ` +
          String(augment),
      );
    }
    checkCutout("DataLoader", augment.cutout ?? 0);
    checkNormalization("DataLoader", mean, std);
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.#shuffle = Boolean(shuffle);
    this.#augment = {
      crop: Boolean(augment.crop),
      flip: Boolean(augment.flip),
      cutout: augment.cutout ?? 0,
    };
    this.#mean = [...mean];
    this.#std = [...std];
    this.#dropLast = Boolean(dropLast);
    this.#maxChunkImages = maxChunkImages;
    this.#generator = new Generator(seed);
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.dataset.count / this.batchSize;
    return this.#dropLast ? Math.floor(n) : Math.ceil(n);
  }

  /** Completed epochs. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Batches of the current epoch already handed out. */
  get position(): number {
    return this.#position;
  }

  /** Draws the current epoch's order and augmentations, once per epoch. */
  #plan(): { order: Uint32Array; draws: Uint8Array } {
    if (this.#order && this.#draws) return { order: this.#order, draws: this.#draws };
    const g = this.#generator;
    this.#epochState = g.getState();
    const n = this.dataset.count;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    if (this.#shuffle) {
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(g.uniform() * (i + 1));
        const t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
    }
    const { crop, flip, cutout } = this.#augment;
    // Without cutout the draws (and so a seed's batches) are those of a loader without it.
    const per = cutout ? 5 : 3;
    const draws = new Uint8Array(per * n);
    for (let i = 0; i < n; i++) {
      draws[per * i] = crop ? Math.floor(g.uniform() * 9) : 4;
      draws[per * i + 1] = crop ? Math.floor(g.uniform() * 9) : 4;
      draws[per * i + 2] = flip && g.uniform() < 0.5 ? 1 : 0;
      if (cutout) {
        draws[per * i + 3] = Math.floor(g.uniform() * SIDE);
        draws[per * i + 4] = Math.floor(g.uniform() * SIDE);
      }
    }
    this.#order = order;
    this.#draws = draws;
    return { order, draws };
  }

  /**
   * The remaining batches of the current epoch (all of them unless the loader was resumed or an
   * earlier loop stopped early); when they run out, the epoch counter advances. Each batch's
   * upload and kernel are encoded when the loop asks for it, so they join that step's submit.
   * Dispose each batch's `images` after its step.
   */
  *batches(): IterableIterator<Batch> {
    const { order, draws } = this.#plan();
    const n = this.dataset.count;
    const per = this.#augment.cutout ? 5 : 3;
    while (this.#position < this.length) {
      const start = this.#position * this.batchSize;
      const end = Math.min(n, start + this.batchSize);
      const indices = order.slice(start, end);
      const batchDraws = draws.slice(per * start, per * end);
      const labels = new Int32Array(indices.length);
      for (let i = 0; i < indices.length; i++) labels[i] = this.dataset.labels[indices[i]];
      this.#store ??= new GpuImageStore(this.dataset, this.#maxChunkImages);
      const images = this.#store.gather(
        indices,
        batchDraws,
        this.#mean,
        this.#std,
        this.#augment.cutout,
      );
      this.#position++;
      yield { images, labels, indices, draws: batchDraws };
    }
    this.#epoch++;
    this.#position = 0;
    this.#order = null;
    this.#draws = null;
    this.#epochState = null;
  }

  /**
   * The loader's position (epoch, batches handed out in it, generator state at the epoch's
   * start), to store with a checkpoint.
   *
   * @example
   * ```ts
   * import { data } from "@resnet/webgpu";
   * const { train } = data.syntheticCifar({ trainCount: 10, testCount: 0 });
   * const loader = new data.DataLoader(train, { batchSize: 4, seed: 1 });
   * const saved = JSON.stringify(loader.stateDict());
   * const again = new data.DataLoader(train, { batchSize: 4 });
   * again.loadStateDict(JSON.parse(saved));
   * ```
   */
  stateDict(): DataLoaderState {
    return {
      epoch: this.#epoch,
      position: this.#position,
      generator: [...(this.#epochState ?? this.#generator.getState())],
      count: this.dataset.count,
      batchSize: this.batchSize,
    };
  }

  /**
   * Restores a position from {@link DataLoader.stateDict}: the next {@link DataLoader.batches}
   * continues with exactly the batches the saved loader would have produced next (with the same
   * dataset and options).
   *
   * @throws {RangeError} when the state is malformed or was saved for another dataset size or
   *   batch size.
   */
  loadStateDict(state: DataLoaderState): void {
    const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
    if (
      state === null || typeof state !== "object" || !isCount(state.epoch) ||
      !isCount(state.position) || !Array.isArray(state.generator) ||
      state.generator.length !== 4 || !state.generator.every(isCount)
    ) {
      throw new RangeError(
        `DataLoader.loadStateDict(): expected { epoch, position, generator: [4 integers], count, ` +
          `batchSize }, got ${JSON.stringify(state)}`,
      );
    }
    if (state.count !== this.dataset.count || state.batchSize !== this.batchSize) {
      throw new RangeError(
        `DataLoader.loadStateDict(): the state was saved for ${state.count} images in batches of ` +
          `${state.batchSize}, this loader has ${this.dataset.count} in batches of ` +
          `${this.batchSize}`,
      );
    }
    if (state.position > this.length) {
      throw new RangeError(
        `DataLoader.loadStateDict(): position ${state.position} is past the ${this.length} ` +
          "batches of an epoch",
      );
    }
    this.#generator.setState(state.generator);
    this.#epoch = state.epoch;
    this.#position = state.position;
    this.#order = null;
    this.#draws = null;
    this.#epochState = null;
  }

  /** Frees the dataset's GPU buffers; a later batch uploads them again. */
  dispose(): void {
    this.#store?.dispose();
    this.#store = null;
  }
}
