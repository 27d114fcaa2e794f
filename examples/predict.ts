/**
 * Loads a checkpoint (from `deno task train`, or a PyTorch state dict saved as safetensors) and
 * prints the predicted class and the class probabilities for the first test images.
 *
 * Usage:
 *   deno run --allow-read --allow-env --allow-net examples/predict.ts \
 *     --checkpoint runs/<date>/best.safetensors [--count 8] [--dataset cifar10|synthetic]
 *     [--model resnet20] [--data-dir DIR]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { initGPU, noGrad } from "../mod.ts";
import { DataLoader, defaultDataDir, type ImageDataset } from "../src/data/mod.ts";
import {
  buildModel,
  loadCheckpoint,
  ProgressReporter,
  type TrainConfig,
} from "../src/train/mod.ts";
// The CLI's data-set choice (CIFAR-10 or the synthetic fallback); not part of the library.
import { resolveDataset } from "../src/train/_dataset.ts";

const { values: flags } = parseArgs({
  options: {
    checkpoint: { type: "string" },
    model: { type: "string" },
    dataset: { type: "string" },
    "data-dir": { type: "string" },
    count: { type: "string", default: "8" },
    help: { type: "boolean", short: "h" },
  },
});
if (flags.help || !flags.checkpoint) {
  console.log(
    "Usage: examples/predict.ts --checkpoint FILE [--count 8] [--model resnet20] " +
      "[--dataset cifar10|synthetic] [--data-dir DIR]",
  );
  Deno.exit(flags.help ? 0 : 2);
}
const count = Number(flags.count);
if (!Number.isInteger(count) || count < 1) {
  console.error(`error: --count must be a positive integer, got "${flags.count}"`);
  Deno.exit(2);
}

await initGPU();
const checkpoint = await loadCheckpoint(flags.checkpoint);
const saved = checkpoint.extra?.flags as TrainConfig | undefined;
const modelName = flags.model ?? saved?.model ?? "resnet20";
const dataset = (flags.dataset ?? (checkpoint.extra?.dataset as string) ?? "auto") as
  | "auto"
  | "cifar10"
  | "synthetic";
const { test, name } = await resolveDataset(
  {
    ...(saved ?? {} as TrainConfig),
    dataset,
    dataDir: flags["data-dir"] ?? saved?.dataDir ?? defaultDataDir(),
    seed: saved?.seed ?? 0,
  },
  new ProgressReporter(),
);
const model = buildModel(modelName, 0, test.classes.length);
model.loadStateDict(checkpoint.model);
checkpoint.dispose();
model.eval();

const subset: ImageDataset = {
  ...test,
  count: Math.min(count, test.count),
  images: test.images.subarray(0, Math.min(count, test.count) * 3072),
  labels: test.labels.subarray(0, Math.min(count, test.count)),
};
const loader = new DataLoader(subset, { batchSize: subset.count, shuffle: false });
const [batch] = loader.batches();
const logits = await noGrad(() => model.forward(batch.images)).toArray();
const classes = test.classes.length;
console.log(`${modelName} from ${flags.checkpoint} on the ${name} test set:`);
for (let i = 0; i < subset.count; i++) {
  const row = logits.subarray(i * classes, (i + 1) * classes);
  const max = Math.max(...row);
  const exp = Array.from(row, (v) => Math.exp(v - max));
  const total = exp.reduce((a, b) => a + b, 0);
  const probabilities = exp.map((v) => v / total);
  const predicted = probabilities.indexOf(Math.max(...probabilities));
  const top = probabilities
    .map((p, c) => [p, c] as const)
    .sort((a, b) => b[0] - a[0])
    .slice(0, 3)
    .map(([p, c]) => `${test.classes[c]} ${(p * 100).toFixed(1)}%`)
    .join(", ");
  const truth = test.classes[batch.labels[i]];
  console.log(
    `#${i}: predicted ${test.classes[predicted]} (true: ${truth}) ${
      predicted === batch.labels[i] ? "✓" : "✗"
    }  top 3: ${top}`,
  );
}
loader.dispose();
