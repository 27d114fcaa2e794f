/**
 * Fine-tunes a torchvision ResNet on a folder of images: loads a torchvision checkpoint (`.pth`
 * as torchvision publishes them, or `.safetensors`), replaces `fc` with a layer for the folder's
 * classes, optionally freezes the backbone, trains with SGD on GPU-augmented batches (random
 * resized crop, flip, ImageNet normalisation), and saves a `.pth` that torchvision's model loads
 * with `strict=True`.
 *
 * ```sh
 * deno task finetune --weights resnet18-f37072fd.pth --data flowers/train --val flowers/val \
 *   --epochs 5 --freeze-backbone --out flowers_resnet18.pth
 * ```
 *
 * Options: `--model resnet18|resnet34|resnet50|resnet101|resnet152` (default resnet18),
 * `--weights PATH` (without it: torchvision's random initialisation), `--data DIR` (required;
 * torchvision's ImageFolder layout), `--val DIR`, `--epochs N` (3), `--batch-size N` (32), `--lr X`
 * (0.01; SGD with momentum 0.9), `--size N` (input side, 224), `--side N` (stored side before
 * cropping, size * 256 / 224), `--freeze-backbone` (train `fc` only, batch norms on their loaded
 * statistics), `--out PATH` (default `finetuned.pth`), `--seed N` (0).
 *
 * @module
 */
import {
  correctCount,
  crossEntropy,
  data,
  initGPU,
  loadSafetensors,
  loadTorchCheckpoint,
  nn,
  noGrad,
  optim,
  type ResNet,
  resnet101,
  resnet152,
  resnet18,
  resnet34,
  resnet50,
  saveTorchCheckpoint,
  type Tensor,
  tidy,
} from "../mod.ts";

const MODELS = { resnet18, resnet34, resnet50, resnet101, resnet152 };

/** Options of {@link finetune}, as the command line's. */
export interface FinetuneOptions {
  /** Which torchvision ResNet; default "resnet18". */
  model?: keyof typeof MODELS;
  /** A torchvision checkpoint (`.pth` or `.safetensors`); none: random initialisation. */
  weights?: string;
  /** The training folder (one sub-folder per class). */
  data: string;
  /** A validation folder with the same classes. */
  val?: string;
  /** Epochs; default 3. */
  epochs?: number;
  /** Batch size; default 32. */
  batchSize?: number;
  /** SGD learning rate (momentum 0.9); default 0.01. */
  lr?: number;
  /** Input side; default 224. */
  size?: number;
  /** Side the images are stored at before cropping; default `round(size * 256 / 224)`. */
  side?: number;
  /** Train `fc` only, the backbone's batch norms in eval mode; default false. */
  freezeBackbone?: boolean;
  /** Where to save the fine-tuned state dict as `.pth`; default "finetuned.pth". */
  out?: string;
  /** Seed of `fc`'s initialisation, the shuffle and the crops; default 0. */
  seed?: number;
  /** Called with each line of progress; default console.log. */
  log?: (line: string) => void;
}

/** What {@link finetune} returns. */
export interface FinetuneResult {
  /** The fine-tuned model. */
  model: ResNet;
  /** The folder's classes, in `fc`'s order. */
  classes: string[];
  /** Mean training loss of each epoch. */
  losses: number[];
  /** Validation accuracy after the last epoch, or null without `val`. */
  valAccuracy: number | null;
}

/**
 * Fine-tunes a torchvision ResNet on an image folder and saves the result as a `.pth`.
 *
 * @example
 * ```ts ignore
 * import { finetune } from "./examples/finetune.ts";
 * const { valAccuracy } = await finetune({
 *   weights: "resnet18-f37072fd.pth",
 *   data: "flowers/train",
 *   val: "flowers/val",
 *   freezeBackbone: true,
 * });
 * ```
 */
export async function finetune(options: FinetuneOptions): Promise<FinetuneResult> {
  const log = options.log ?? console.log;
  const size = options.size ?? 224;
  const side = options.side ?? Math.round((size * 256) / 224);
  const seed = options.seed ?? 0;
  const build = MODELS[options.model ?? "resnet18"];
  if (!build) throw new RangeError(`finetune: unknown model "${options.model}"`);
  await initGPU();

  const train = await data.loadImageFolder(options.data, { side });
  log(`${train.count} training images in ${train.classes.length} classes: ${train.classes}`);
  let model: ResNet;
  if (options.weights) {
    const state = options.weights.endsWith(".safetensors")
      ? await loadSafetensors(options.weights)
      : await loadTorchCheckpoint(options.weights);
    const fc = state.get("fc.weight");
    model = build({ numClasses: fc ? fc.shape[0] : 1000, seed });
    model.loadStateDict(state);
    for (const t of state.values()) t.dispose();
    log(`loaded ${options.weights}`);
  } else {
    model = build({ numClasses: train.classes.length, seed });
  }
  // A new head for the folder's classes (torchvision: model.fc = nn.Linear(in, classes)).
  model.getSubmodule("fc").dispose();
  model.setSubmodule("fc", new nn.Linear(model.numFeatures, train.classes.length, { seed }));

  const frozen = options.freezeBackbone ?? false;
  const trainable = model.namedParameters()
    .filter(([key]) => !frozen || key.startsWith("fc."))
    .map(([, p]) => p);
  if (frozen) {
    for (const [key, p] of model.namedParameters()) {
      if (!key.startsWith("fc.")) p.requiresGrad = false;
    }
  }
  const optimizer = new optim.SGD(trainable, { lr: options.lr ?? 0.01, momentum: 0.9 });
  const loader = new data.ImageFolderLoader(train, {
    batchSize: options.batchSize ?? 32,
    size,
    augment: true,
    seed,
  });

  const losses: number[] = [];
  for (let epoch = 1; epoch <= (options.epochs ?? 3); epoch++) {
    // Frozen: the backbone's batch norms keep the loaded running statistics (eval mode).
    if (frozen) model.eval();
    else model.train();
    const perBatch: Tensor[] = [];
    for (const batch of loader) {
      perBatch.push(tidy(() => {
        optimizer.zeroGrad();
        const loss = crossEntropy(model.call(batch.images), batch.labels);
        loss.backward();
        optimizer.step();
        return loss;
      }));
      batch.images.dispose();
    }
    let sum = 0;
    for (const loss of perBatch) {
      sum += await loss.item();
      loss.dispose();
    }
    losses.push(sum / perBatch.length);
    log(`epoch ${epoch}: training loss ${losses.at(-1)!.toFixed(4)}`);
  }

  let valAccuracy: number | null = null;
  if (options.val) {
    const val = await data.loadImageFolder(options.val, { side });
    if (val.classes.join() !== train.classes.join()) {
      throw new Error(`finetune: ${options.val} has classes ${val.classes}, not ${train.classes}`);
    }
    model.eval();
    let correct = 0;
    for (const batch of new data.ImageFolderLoader(val, { batchSize: 32, size })) {
      const count = noGrad(() => correctCount(model.call(batch.images), batch.labels));
      correct += await count.item();
      count.dispose();
      batch.images.dispose();
    }
    valAccuracy = correct / val.count;
    log(`validation accuracy ${(100 * valAccuracy).toFixed(1)}% (${correct}/${val.count})`);
  }
  const out = options.out ?? "finetuned.pth";
  await saveTorchCheckpoint(out, model.stateDict());
  log(
    `saved ${out}: torchvision.models.${options.model ?? "resnet18"}(num_classes=` +
      `${train.classes.length}).load_state_dict(torch.load("${out}"))`,
  );
  return { model, classes: train.classes, losses, valAccuracy };
}

function parse(args: string[]): FinetuneOptions {
  const o: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("--")) throw new Error(`finetune: unexpected argument "${a}"`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (key === "freezeBackbone" || key === "help") o[key] = true;
    else if (i + 1 < args.length) o[key] = args[++i];
    else throw new Error(`finetune: ${a} needs a value`);
  }
  if (o.help || !o.data) {
    console.log(
      "usage: deno task finetune --data DIR [--val DIR] [--weights FILE.pth] [--model resnet18]\n" +
        "  [--epochs 3] [--batch-size 32] [--lr 0.01] [--size 224] [--side 256]\n" +
        "  [--freeze-backbone] [--out finetuned.pth] [--seed 0]",
    );
    Deno.exit(o.help ? 0 : 2);
  }
  const num = (k: string) => (o[k] === undefined ? undefined : Number(o[k]));
  return {
    model: o.model as FinetuneOptions["model"],
    weights: o.weights as string | undefined,
    data: o.data as string,
    val: o.val as string | undefined,
    epochs: num("epochs"),
    batchSize: num("batchSize"),
    lr: num("lr"),
    size: num("size"),
    side: num("side"),
    freezeBackbone: o.freezeBackbone === true,
    out: o.out as string | undefined,
    seed: num("seed"),
  };
}

if (import.meta.main) await finetune(parse(Deno.args));
