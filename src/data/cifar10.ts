/**
 * The CIFAR-10 binary format and image datasets held as bytes on the CPU.
 *
 * A CIFAR-10 binary file is a sequence of 3073-byte records: one label byte, then 3072 pixel
 * bytes, the red, green and blue 32x32 planes one after the other, rows top to bottom. The folder
 * `cifar-10-batches-bin/` holds `data_batch_1.bin` … `data_batch_5.bin` (training set),
 * `test_batch.bin` (test set) and `batches.meta.txt` (class names, one per line).
 *
 * @module
 */

/** Bytes of one image: 3 channels of 32x32 pixels. */
export const IMAGE_BYTES = 3 * 32 * 32;
/** Bytes of one record: a label byte and an image. */
export const RECORD_BYTES = 1 + IMAGE_BYTES;

/** File names of the training set, in the order they are concatenated. */
export const CIFAR10_TRAIN_FILES: readonly string[] = Object.freeze(
  [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`),
);
/** File name of the test set. */
export const CIFAR10_TEST_FILE = "test_batch.bin";
/** File name of the class names. */
export const CIFAR10_META_FILE = "batches.meta.txt";

/**
 * Images with labels, as bytes on the CPU: the layout of CIFAR-10 and of every dataset the
 * {@link DataLoader} reads.
 */
export interface ImageDataset {
  /** Pixel bytes `[N, 3, 32, 32]`: per image the R, G and B planes, rows top to bottom. */
  images: Uint8Array;
  /** Class index of each image, `[N]`, each below `classes.length`. */
  labels: Uint8Array;
  /** Number of images `N`. */
  count: number;
  /** Class names; label `k` names `classes[k]`. */
  classes: string[];
  /** A name for messages and logs, e.g. `"cifar10-train"`. */
  name: string;
}

/**
 * The ten CIFAR-10 class names, in label order.
 *
 * @example
 * ```ts
 * import { CIFAR10_CLASSES } from "@resnet/webgpu/data";
 * console.log(CIFAR10_CLASSES[3]); // "cat"
 * ```
 */
export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
]);

/**
 * Per-channel mean of the CIFAR-10 training images (R, G, B), on the `[0, 1]` scale; the
 * `DataLoader`'s default normalization subtracts it.
 *
 * @example
 * ```ts
 * import { CIFAR10_MEAN, CIFAR10_STD } from "@resnet/webgpu/data";
 * const red = 200 / 255;
 * console.log(((red - CIFAR10_MEAN[0]) / CIFAR10_STD[0]).toFixed(3)); // "1.186"
 * ```
 */
export const CIFAR10_MEAN: readonly number[] = Object.freeze([0.4914, 0.4822, 0.4465]);
/**
 * Per-channel standard deviation of the CIFAR-10 training images (R, G, B), `[0, 1]` scale; the
 * `DataLoader`'s default normalization divides by it.
 *
 * @example
 * ```ts
 * import { CIFAR10_STD } from "@resnet/webgpu/data";
 * console.log(CIFAR10_STD.length); // 3
 * ```
 */
export const CIFAR10_STD: readonly number[] = Object.freeze([0.2470, 0.2435, 0.2616]);

/**
 * Splits the bytes of one CIFAR-10 binary file into labels and images. The images are copied
 * into their own `[N, 3, 32, 32]` array.
 *
 * @param bytes the file's contents: a whole number of 3073-byte records.
 * @param fileName how messages name the file.
 * @param classCount when given, every label must be below it.
 * @throws {Error} naming the file and its size when it is not a whole number of records, or the
 *   file, record and label when a label is out of range.
 * @example
 * ```ts
 * import { data } from "@resnet/webgpu";
 * const bytes = new Uint8Array(2 * 3073);
 * bytes[3073] = 7; // the second record's label
 * const { labels, count } = data.parseCifarRecords(bytes, "my_batch.bin", 10);
 * console.log(count, labels); // 2 Uint8Array [0, 7]
 * ```
 */
export function parseCifarRecords(
  bytes: Uint8Array,
  fileName: string,
  classCount?: number,
): { images: Uint8Array; labels: Uint8Array; count: number } {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`parseCifarRecords(): bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  if (bytes.length % RECORD_BYTES !== 0) {
    const whole = Math.floor(bytes.length / RECORD_BYTES);
    throw new Error(
      `CIFAR-10 file ${fileName} is ${bytes.length} bytes, not a whole number of ` +
        `${RECORD_BYTES}-byte records (${whole} records and ${bytes.length % RECORD_BYTES} ` +
        "bytes more): the file is truncated or not in the CIFAR-10 binary format",
    );
  }
  const count = bytes.length / RECORD_BYTES;
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const at = i * RECORD_BYTES;
    const label = bytes[at];
    if (classCount !== undefined && label >= classCount) {
      throw new Error(
        `CIFAR-10 file ${fileName}: record ${i} has label ${label}, but there are only ` +
          `${classCount} classes (labels 0 to ${classCount - 1})`,
      );
    }
    labels[i] = label;
    images.set(bytes.subarray(at + 1, at + RECORD_BYTES), i * IMAGE_BYTES);
  }
  return { images, labels, count };
}

/** Joins a folder and a name with `/`, which every platform Deno runs on accepts. */
export function joinPath(folder: string, name: string): string {
  return folder.endsWith("/") || folder.endsWith("\\") ? `${folder}${name}` : `${folder}/${name}`;
}

/**
 * The most records one file of a CIFAR-10 folder may hold (CIFAR-10's hold 10,000): a larger
 * file is refused before it is read.
 */
export const MAX_RECORDS_PER_FILE = 100_000;
/** The most bytes `batches.meta.txt` may have. */
const MAX_META_BYTES = 64 * 1024;

/**
 * Reads a file of the folder after checking that it is a regular file (a FIFO would block the
 * read forever, a link to `/dev/zero` would never end) whose size fits the layout: whole records,
 * at most {@link MAX_RECORDS_PER_FILE} of them (`records` true), or at most 64 KiB of text.
 */
async function readNamed(dir: string, name: string, records = true): Promise<Uint8Array> {
  const path = joinPath(dir, name);
  const cannot = (cause: unknown) => {
    if (cause instanceof Deno.errors.NotFound) {
      return new Error(
        `CIFAR-10 file ${name} is missing from the folder ${dir} (expected ${path}); a CIFAR-10 ` +
          `folder holds ${
            [...CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE].join(", ")
          }`,
        { cause },
      );
    }
    return new Error(`Cannot read CIFAR-10 file ${path}: ${(cause as Error).message}`, { cause });
  };
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (cause) {
    throw cannot(cause);
  }
  if (!info.isFile) {
    throw new Error(
      `CIFAR-10 file ${path} is not a regular file (it is a ` +
        `${info.isDirectory ? "folder" : "device, FIFO or socket"}); put the file itself there`,
    );
  }
  const max = records ? MAX_RECORDS_PER_FILE * RECORD_BYTES : MAX_META_BYTES;
  if (info.size > max) {
    throw new Error(
      `CIFAR-10 file ${path} is ${info.size} bytes, more than the ${max} bytes this layout ` +
        (records ? `allows (${MAX_RECORDS_PER_FILE} records of ${RECORD_BYTES} bytes)` : "allows") +
        "; it is not a CIFAR-10 file",
    );
  }
  if (records && info.size % RECORD_BYTES !== 0) {
    parseCifarRecords(new Uint8Array(info.size), path); // throws, naming the size
  }
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (cause) {
    throw cannot(cause);
  }
  try {
    // Checked again on the open file: the path may have been replaced since.
    const opened = await file.stat();
    if (!opened.isFile || opened.size !== info.size) {
      throw new Error(`CIFAR-10 file ${path} changed while it was being read; try again`);
    }
    const out = new Uint8Array(info.size);
    let filled = 0;
    while (filled < out.length) {
      const got = await file.read(out.subarray(filled));
      if (got === null) break;
      filled += got;
    }
    if (filled !== out.length) {
      throw new Error(`CIFAR-10 file ${path} ended after ${filled} of its ${out.length} bytes`);
    }
    return out;
  } finally {
    file.close();
  }
}

/** Class names from `batches.meta.txt`: one per line, blank lines ignored. */
export function parseClassNames(text: string, fileName: string): string[] {
  const classes = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "");
  if (classes.length === 0) {
    throw new Error(`CIFAR-10 file ${fileName} names no classes (it should hold one per line)`);
  }
  if (classes.length > 256) {
    throw new Error(
      `CIFAR-10 file ${fileName} names ${classes.length} classes; labels are bytes, so at most 256`,
    );
  }
  return classes;
}

function concat(
  parts: { images: Uint8Array; labels: Uint8Array; count: number }[],
): { images: Uint8Array; labels: Uint8Array; count: number } {
  if (parts.length === 1) return parts[0];
  const count = parts.reduce((n, p) => n + p.count, 0);
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Uint8Array(count);
  let at = 0;
  for (const p of parts) {
    images.set(p.images, at * IMAGE_BYTES);
    labels.set(p.labels, at);
    at += p.count;
  }
  return { images, labels, count };
}

/**
 * Loads a folder laid out like `cifar-10-batches-bin/`: the training set from
 * `data_batch_1.bin` … `data_batch_5.bin` (concatenated in that order), the test set from
 * `test_batch.bin`, the class names from `batches.meta.txt`. Files may hold any number of records,
 * so subsets and other data in this layout load too.
 *
 * @param dir the folder, e.g. the path {@link ensureCifar10} returns.
 * @throws {Error} naming the file and the folder when a file is missing, naming the file when it
 *   is not a regular file (a FIFO, a link to a device), naming the file and its size when it is
 *   truncated, too large or the test set is empty, and naming the record when a label is not below
 *   the class count.
 * @example
 * ```ts
 * import { data } from "@resnet/webgpu";
 * const dir = await Deno.makeTempDir();
 * const record = new Uint8Array(3073); // one black image of class 0
 * for (const name of ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
 *   "data_batch_5", "test_batch"]) await Deno.writeFile(`${dir}/${name}.bin`, record);
 * await Deno.writeTextFile(`${dir}/batches.meta.txt`, "cat\ndog\n");
 * const { train, test } = await data.loadCifar10Folder(dir);
 * console.log(train.count, test.count, train.classes); // 5 1 ["cat", "dog"]
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadCifar10Folder(
  dir: string,
): Promise<{ train: ImageDataset; test: ImageDataset }> {
  if (typeof dir !== "string" || dir === "") {
    throw new TypeError(`loadCifar10Folder(): dir must be a folder path, got ${String(dir)}`);
  }
  const meta = await readNamed(dir, CIFAR10_META_FILE, false);
  const classes = parseClassNames(new TextDecoder().decode(meta), joinPath(dir, CIFAR10_META_FILE));
  const load = async (name: string) =>
    parseCifarRecords(await readNamed(dir, name), joinPath(dir, name), classes.length);
  const trainParts = [];
  for (const name of CIFAR10_TRAIN_FILES) trainParts.push(await load(name));
  const train = concat(trainParts);
  const test = await load(CIFAR10_TEST_FILE);
  if (test.count === 0) {
    throw new Error(
      `CIFAR-10 file ${joinPath(dir, CIFAR10_TEST_FILE)} is empty: the test set needs at least ` +
        `one ${RECORD_BYTES}-byte record (CIFAR-10's has 10000)`,
    );
  }
  if (train.count === 0) {
    throw new Error(
      `The training files of ${dir} (${CIFAR10_TRAIN_FILES.join(", ")}) are all empty: the ` +
        "training set needs at least one record",
    );
  }
  return {
    train: { ...train, classes: [...classes], name: "cifar10-train" },
    test: { ...test, classes: [...classes], name: "cifar10-test" },
  };
}

/**
 * Checks that `dataset` is a well-formed {@link ImageDataset}.
 *
 * @throws {TypeError} when a field has the wrong type; {@link RangeError} when sizes disagree or a
 *   label is not below the class count.
 */
export function checkImageDataset(dataset: ImageDataset, what: string): void {
  if (dataset === null || typeof dataset !== "object") {
    throw new TypeError(`${what}: expected an ImageDataset, got ${String(dataset)}`);
  }
  const { images, labels, count, classes } = dataset;
  if (!(images instanceof Uint8Array) || !(labels instanceof Uint8Array)) {
    throw new TypeError(`${what}: dataset.images and dataset.labels must be Uint8Arrays`);
  }
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`${what}: dataset.count must be a non-negative integer, got ${count}`);
  }
  if (!Array.isArray(classes) || classes.length === 0) {
    throw new TypeError(`${what}: dataset.classes must be a non-empty array of names`);
  }
  if (images.length !== count * IMAGE_BYTES || labels.length !== count) {
    throw new RangeError(
      `${what}: dataset "${dataset.name}" has count ${count}, so images must hold ` +
        `${count * IMAGE_BYTES} bytes ([N, 3, 32, 32]) and labels ${count}; got ` +
        `${images.length} and ${labels.length}`,
    );
  }
  for (let i = 0; i < count; i++) {
    if (labels[i] >= classes.length) {
      throw new RangeError(
        `${what}: dataset "${dataset.name}" image ${i} has label ${labels[i]}, but there are ` +
          `${classes.length} classes`,
      );
    }
  }
}
