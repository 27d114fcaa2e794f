/**
 * Predictions on image files: {@link loadClassifier} reads a checkpoint of `deno task train` (or
 * a PyTorch state dict saved as safetensors) into its model, and {@link predict} decodes PNG and
 * JPEG files, brings them to the model's input exactly as training did (32x32, normalized with
 * the training set's per-channel mean and standard deviation, on the GPU by the same kernel as the
 * training batches) and returns the top classes with their probabilities. `deno task predict`
 * (`examples/predict.ts`) is the command line around it.
 *
 * @example
 * ```ts
 * import { initGPU, resnet, saveSafetensors } from "@resnet/webgpu";
 * import { loadClassifier, predict } from "@resnet/webgpu/predict";
 * await initGPU();
 * // A fresh ResNet-8 stands in for a trained checkpoint here.
 * const checkpoint = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveSafetensors(checkpoint, resnet(8, { numClasses: 10, seed: 0 }).stateDict());
 * const classifier = await loadClassifier(checkpoint);
 * console.log(classifier.modelName); // "resnet8", told by the checkpoint's keys
 * const image = Uint8Array.from(atob(
 *   "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4XmP4z8AAAAMBAQAwOwdeAAAAAElFTkSuQmCC",
 * ), (c) => c.charCodeAt(0)); // a 1x1 red PNG
 * const [result] = await predict(classifier, [{ name: "red.png", bytes: image }], { top: 2 });
 * console.log(result.label, result.top.length); // one of CIFAR-10's classes, 2
 * await Deno.remove(checkpoint);
 * ```
 *
 * @module
 */
import { noGrad } from "./autograd.ts";
import { CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGE_BYTES } from "./data/cifar10.ts";
import { decodeImage, ImageDecodeError, type RgbImage, toPlanes } from "./data/image.ts";
import { DataLoader } from "./data/loader.ts";
import { SYNTHETIC_CLASSES } from "./data/synthetic.ts";
import type { Module } from "./nn/module.ts";
import { loadCheckpoint, type LoadedCheckpoint } from "./train/checkpoint.ts";
import { buildModel } from "./train/models.ts";

export { decodeImage, ImageDecodeError, type RgbImage, toPlanes };

/**
 * Bad input to {@link loadClassifier} or {@link predict}: a missing or unreadable file, a file
 * that is not an image or not a checkpoint, a checkpoint that does not fit the model, an unknown
 * model name. Its message is one line meant for the user; the command line exits with code 2.
 *
 * @example
 * ```ts
 * import { loadClassifier, PredictError } from "@resnet/webgpu/predict";
 * try {
 *   await loadClassifier("no-such-file.safetensors");
 * } catch (error) {
 *   console.log(error instanceof PredictError, (error as Error).message);
 *   // true 'checkpoint "no-such-file.safetensors" not found'
 * }
 * ```
 */
export class PredictError extends Error {
  /** `"PredictError"`. */
  override name = "PredictError";
}

/**
 * How images become model inputs, as a checkpoint's metadata records it (`extra.input`): resampled
 * to `size` x `size` (see {@link toPlanes}), scaled to `[0, 1]`, then `(x - mean) / std` per
 * channel; and the names of the classes the outputs stand for.
 */
export interface InputSpec {
  /** Width and height of the model's input images; 32. */
  size: number;
  /** Per-channel mean (R, G, B) on the `[0, 1]` scale. */
  mean: number[];
  /** Per-channel standard deviation (R, G, B) on the `[0, 1]` scale. */
  std: number[];
  /** Class names, output `k` names `classes[k]`. */
  classes: string[];
}

/** A model ready for {@link predict}, from {@link loadClassifier}. */
export interface Classifier {
  /** The model, in eval mode. */
  model: Module;
  /** Its name as `deno task train --model` takes it: `resnet<6n+2>` or `labml`. */
  modelName: string;
  /** How inputs are prepared and what the outputs mean. */
  input: InputSpec;
  /** The checkpoint it was loaded from. */
  path: string;
}

/** Options of {@link loadClassifier}. */
export interface LoadClassifierOptions {
  /**
   * The model to build: `resnet<6n+2>` or `labml`. Default: the one the checkpoint was trained
   * as (its `extra.flags.model`), else the one its keys describe.
   */
  model?: string;
}

/**
 * Reads a checkpoint into the model it was trained as and sets the model to eval mode. The input
 * preparation comes from the checkpoint's `extra.input` metadata; a checkpoint without it (a
 * PyTorch state dict, or one written by `train()` before it recorded it) gets what `train()`
 * uses: CIFAR-10's mean and standard deviation, 32x32, and the class names of the data set it
 * names (`extra.dataset`: the synthetic set's, else CIFAR-10's).
 *
 * @throws {PredictError} when the file is missing, is not a safetensors file, names an unknown
 *   model, or does not fit the model (one line: how many keys are missing or left over).
 * @example
 * ```ts
 * import { initGPU, resnet, saveSafetensors } from "@resnet/webgpu";
 * import { loadClassifier } from "@resnet/webgpu/predict";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveSafetensors(path, resnet(20, { seed: 0 }).stateDict());
 * const { modelName, input } = await loadClassifier(path);
 * console.log(modelName, input.size, input.classes[3]); // "resnet20" 32 "cat"
 * await Deno.remove(path);
 * ```
 */
export async function loadClassifier(
  path: string,
  options: LoadClassifierOptions = {},
): Promise<Classifier> {
  let checkpoint: LoadedCheckpoint;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw new PredictError(`checkpoint "${path}" is not a file`);
    checkpoint = await loadCheckpoint(path);
  } catch (error) {
    if (error instanceof PredictError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw new PredictError(`checkpoint "${path}" not found`);
    }
    // The reader's reason up to its first clause: enough to tell a truncated file from another.
    const reason = firstLine(error).split(/[;:] /).slice(0, 2).join(": ");
    throw new PredictError(`"${path}" is not a checkpoint (a safetensors file): ${reason}`);
  }
  try {
    const flags = checkpoint.extra?.flags as { model?: unknown } | undefined;
    const saved = typeof flags?.model === "string" ? flags.model : undefined;
    const name = options.model ?? saved ?? modelFromKeys(checkpoint.model);
    if (!name) {
      throw new PredictError(
        `checkpoint "${path}" does not say which model it holds and its keys fit none of ` +
          "resnet<6n+2> or labml",
      );
    }
    const head = checkpoint.model.get("1.weight");
    const numClasses = head?.shape.length === 2 ? head.shape[0] : 10;
    let model: Module;
    try {
      model = buildModel(name, 0, numClasses);
    } catch (error) {
      throw new PredictError(firstLine(error));
    }
    const mismatch = describeMismatch(model.stateDict(), checkpoint.model);
    if (mismatch) {
      const hint = options.model
        ? saved ? `; it was trained as ${saved}` : ""
        : "; pass the model it was trained as (--model resnet<6n+2> or labml)";
      throw new PredictError(
        `checkpoint "${path}" does not fit model ${name}: ${mismatch}${hint}`,
      );
    }
    try {
      model.loadStateDict(checkpoint.model);
    } catch (error) {
      throw new PredictError(
        `checkpoint "${path}" does not fit model ${name}: ${firstLine(error)}`,
      );
    }
    model.eval();
    return { model, modelName: name, input: inputSpec(checkpoint, numClasses), path };
  } finally {
    checkpoint.dispose();
  }
}

/** The paper's ResNet (`resnet<2 * blocks + 2>`) or the seed's bottleneck model, from the keys. */
function modelFromKeys(state: Map<string, unknown>): string | undefined {
  let blocks = 0;
  let bottleneck = false;
  for (const key of state.keys()) {
    const match = /^0\.blocks\.(\d+)\.(\w+)/.exec(key);
    if (!match) continue;
    blocks = Math.max(blocks, Number(match[1]) + 1);
    if (match[2] === "conv3") bottleneck = true;
  }
  if (blocks === 0) return undefined;
  if (bottleneck) return "labml";
  return blocks % 3 === 0 ? `resnet${2 * blocks + 2}` : undefined;
}

/** A one-line summary of how two state dicts differ, or "" when keys and shapes agree. */
function describeMismatch(
  own: Map<string, { shape: readonly number[] }>,
  given: Map<string, { shape: readonly number[] }>,
): string {
  const missing = [...own.keys()].filter((k) => !given.has(k));
  const unexpected = [...given.keys()].filter((k) => !own.has(k));
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  const reshaped = [...own].filter(([k, t]) => {
    const g = given.get(k);
    return g && g.shape.join() !== t.shape.join() && !(size(g.shape) === 1 && size(t.shape) === 1);
  }).map(([k]) => k);
  const counts = [
    missing.length && `${missing.length} of the model's tensors missing`,
    unexpected.length && `${unexpected.length} not in the model`,
    reshaped.length && `${reshaped.length} of other shapes`,
  ].filter(Boolean);
  const first = missing[0] ?? unexpected[0] ?? reshaped[0];
  return counts.length ? `${counts.join(", ")} (first "${first}")` : "";
}

function inputSpec(checkpoint: LoadedCheckpoint, numClasses: number): InputSpec {
  const saved = checkpoint.extra?.input as Partial<InputSpec> | undefined;
  const numbers = (v: unknown, n: number) =>
    Array.isArray(v) && v.length === n && v.every((x) => typeof x === "number" && isFinite(x));
  const dataset = checkpoint.extra?.dataset;
  let classes = Array.isArray(saved?.classes) && saved.classes.length === numClasses
    ? saved.classes.map(String)
    : [...(dataset === "synthetic" ? SYNTHETIC_CLASSES : CIFAR10_CLASSES)];
  if (classes.length !== numClasses) {
    classes = Array.from({ length: numClasses }, (_, k) => `class ${k}`);
  }
  return {
    size: 32,
    mean: numbers(saved?.mean, 3) ? [...saved!.mean!] : [...CIFAR10_MEAN],
    std: numbers(saved?.std, 3) && saved!.std!.every((s) => s > 0)
      ? [...saved!.std!]
      : [...CIFAR10_STD],
    classes,
  };
}

/** One class and its probability. */
export interface ClassScore {
  /** Class index (the model's output). */
  index: number;
  /** Class name. */
  label: string;
  /** Softmax probability, in `[0, 1]`. */
  probability: number;
}

/** The prediction for one image: its most likely class, and the `top` most likely classes. */
export interface Prediction extends ClassScore {
  /** The image's file name (or the name given with its bytes). */
  file: string;
  /** The most likely classes, most likely first. */
  top: ClassScore[];
}

/** An image given by its bytes rather than its path. */
export interface NamedImage {
  /** How results and messages name it. */
  name: string;
  /** The PNG or JPEG file's contents. */
  bytes: Uint8Array;
}

/** Options of {@link predict}. */
export interface PredictOptions {
  /** How many of the most likely classes each prediction lists; default 3. */
  top?: number;
  /** With a checkpoint path: the model to build (see {@link LoadClassifierOptions.model}). */
  model?: string;
  /** Images per forward pass; default 64. */
  batchSize?: number;
}

/**
 * Classifies image files (PNG or JPEG, any size): each is decoded, cut to its centred square and
 * resampled to 32x32 ({@link toPlanes}), normalized as in training, and run through the model in
 * eval mode; the result lists the most likely class and the `top` most likely classes with their
 * softmax probabilities, in the order the images were given.
 *
 * @param classifier a {@link Classifier} from {@link loadClassifier}, or a checkpoint's path.
 * @param images file paths, or names with the files' bytes.
 * @throws {PredictError} for a missing file, a file that is not a PNG or JPEG image, a bad `top`,
 *   and every error of {@link loadClassifier}.
 * @example
 * ```ts
 * import { initGPU, resnet, saveSafetensors } from "@resnet/webgpu";
 * import { predict } from "@resnet/webgpu/predict";
 * await initGPU();
 * const checkpoint = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveSafetensors(checkpoint, resnet(8, { seed: 0 }).stateDict());
 * const image = Uint8Array.from(atob(
 *   "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4XmP4z8AAAAMBAQAwOwdeAAAAAElFTkSuQmCC",
 * ), (c) => c.charCodeAt(0)); // a 1x1 red PNG
 * const [result] = await predict(checkpoint, [{ name: "red.png", bytes: image }]);
 * console.log(JSON.stringify(result)); // {"file":"red.png","index":…,"label":…,"top":[…]}
 * await Deno.remove(checkpoint);
 * ```
 */
export async function predict(
  classifier: Classifier | string,
  images: (string | NamedImage)[],
  options: PredictOptions = {},
): Promise<Prediction[]> {
  const top = options.top ?? 3;
  if (!Number.isInteger(top) || top < 1) {
    throw new PredictError(`top must be a positive integer, got ${top}`);
  }
  const batchSize = options.batchSize ?? 64;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new PredictError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  const inputs: { name: string; planes: Uint8Array }[] = [];
  // Decode every image before loading a checkpoint, so a bad file is reported at once.
  for (const image of images) {
    const { name, bytes } = typeof image === "string"
      ? { name: image, bytes: await readImageFile(image) }
      : image;
    try {
      inputs.push({ name, planes: toPlanes(decodeImage(bytes, `"${name}"`), 32) });
    } catch (error) {
      throw new PredictError(firstLine(error));
    }
  }
  const { model, input } = typeof classifier === "string"
    ? await loadClassifier(classifier, { model: options.model })
    : classifier;
  if (inputs.length === 0) return [];
  const count = inputs.length;
  const pixels = new Uint8Array(count * IMAGE_BYTES);
  inputs.forEach(({ planes }, i) => pixels.set(planes, i * IMAGE_BYTES));
  const loader = new DataLoader(
    {
      images: pixels,
      labels: new Uint8Array(count),
      count,
      classes: input.classes,
      name: "images",
    },
    { batchSize: Math.min(batchSize, count), shuffle: false, mean: input.mean, std: input.std },
  );
  const results: Prediction[] = [];
  const classes = input.classes.length;
  try {
    for (const batch of loader.batches()) {
      const logits = noGrad(() => model.call(batch.images));
      batch.images.dispose();
      const values = await logits.toArray();
      logits.dispose();
      for (let row = 0; row < batch.labels.length; row++) {
        const scores = softmax(values.subarray(row * classes, (row + 1) * classes))
          .map((probability, index) => ({ index, label: input.classes[index], probability }))
          .sort((a, b) => b.probability - a.probability);
        const file = inputs[batch.indices[row]].name;
        results.push({ file, ...scores[0], top: scores.slice(0, top) });
      }
    }
  } finally {
    loader.dispose();
  }
  return results;
}

async function readImageFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new PredictError(`image "${path}" not found`);
    if (error instanceof Deno.errors.IsADirectory) {
      throw new PredictError(`image "${path}" is a folder, not a file`);
    }
    throw new PredictError(`image "${path}" cannot be read: ${firstLine(error)}`);
  }
}

function softmax(logits: Float32Array): number[] {
  const max = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / total);
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}
