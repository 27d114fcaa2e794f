import assert from "node:assert/strict";
import { noGrad } from "../../src/autograd.ts";
import { CIFAR10_CLASSES } from "../../src/data/cifar10.ts";
import { DataLoader } from "../../src/data/loader.ts";
import { SYNTHETIC_CLASSES, syntheticCifar } from "../../src/data/synthetic.ts";
import { saveSafetensors } from "../../src/io/safetensors.ts";
import { loadClassifier, predict, PredictError } from "../../src/predict.ts";
import { saveCheckpoint } from "../../src/train/checkpoint.ts";
import { buildModel } from "../../src/train/models.ts";
import { gpuTest } from "../_gpu.ts";

const fixtures = new URL("../fixtures/images/", import.meta.url);
const png = new URL("synthetic_test_0.png", fixtures).pathname;
const jpeg = new URL("synthetic_test_3.jpg", fixtures).pathname;

/** Softmax probabilities of `model` on synthetic test images `indices`, batched by a DataLoader. */
async function referenceProbabilities(
  model: ReturnType<typeof buildModel>,
  indices: number[],
  normalization: { mean?: number[]; std?: number[] } = {},
): Promise<number[][]> {
  const { test } = syntheticCifar({ trainCount: 10, testCount: 10, seed: 0 });
  const images = new Uint8Array(indices.length * 3072);
  indices.forEach((i, k) => images.set(test.images.subarray(i * 3072, (i + 1) * 3072), k * 3072));
  const subset = { ...test, images, labels: new Uint8Array(indices.length), count: indices.length };
  const loader = new DataLoader(subset, {
    batchSize: indices.length,
    shuffle: false,
    ...normalization,
  });
  const [batch] = loader.batches();
  model.eval();
  const logits = await noGrad(() => model.forward(batch.images)).toArray();
  loader.dispose();
  return indices.map((_, k) => {
    const row = Array.from(logits.subarray(k * 10, (k + 1) * 10));
    const max = Math.max(...row);
    const exp = row.map((v) => Math.exp(v - max));
    const total = exp.reduce((a, b) => a + b, 0);
    return exp.map((v) => v / total);
  });
}

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

gpuTest(
  "predict: a PNG file gets the probabilities the model gives the same image from the training data loader",
  async () => {
    await withTempDir(async (dir) => {
      const model = buildModel("resnet8", 3);
      const path = `${dir}/run.safetensors`;
      await saveCheckpoint(path, model, null, {
        epoch: 1,
        step: 2,
        extra: { flags: { model: "resnet8" }, dataset: "synthetic" },
      });
      const [expected] = await referenceProbabilities(model, [0]);
      const [result] = await predict(path, [png], { top: 10 });
      assert.equal(result.file, png);
      assert.equal(result.top.length, 10);
      for (const { index, label, probability } of result.top) {
        assert.equal(label, SYNTHETIC_CLASSES[index], "synthetic run: the synthetic class names");
        assert.ok(Math.abs(probability - expected[index]) < 1e-6, `class ${index}`);
      }
      const best = expected.indexOf(Math.max(...expected));
      assert.deepEqual([result.index, result.label], [best, SYNTHETIC_CLASSES[best]]);
      assert.equal(result.probability, result.top[0].probability);
    });
  },
);

gpuTest(
  "predict: the normalization and class names stored in the checkpoint's extra.input are the ones applied",
  async () => {
    await withTempDir(async (dir) => {
      const model = buildModel("resnet8", 4);
      const path = `${dir}/custom.safetensors`;
      const mean = [0.2, 0.5, 0.7];
      const std = [0.5, 0.25, 0.1];
      const classes = Array.from({ length: 10 }, (_, k) => `kind-${k}`);
      await saveCheckpoint(path, model, null, {
        epoch: 1,
        step: 1,
        extra: { flags: { model: "resnet8" }, input: { size: 32, mean, std, classes } },
      });
      const classifier = await loadClassifier(path);
      assert.deepEqual(classifier.input, { size: 32, mean, std, classes });
      const [expected] = await referenceProbabilities(model, [0], { mean, std });
      const [result] = await predict(classifier, [png], { top: 10 });
      for (const { index, label, probability } of result.top) {
        assert.equal(label, classes[index]);
        assert.ok(Math.abs(probability - expected[index]) < 1e-6, `class ${index}`);
      }
    });
  },
);

gpuTest(
  "loadClassifier: a plain PyTorch-style state dict is recognised by its keys (resnet20, labml) and gets CIFAR-10's classes",
  async () => {
    await withTempDir(async (dir) => {
      for (const name of ["resnet20", "labml"]) {
        const path = `${dir}/${name}.safetensors`;
        await saveSafetensors(path, buildModel(name, 0).stateDict());
        const classifier = await loadClassifier(path);
        assert.equal(classifier.modelName, name);
        assert.deepEqual(classifier.input.classes, [...CIFAR10_CLASSES]);
      }
    });
  },
);

gpuTest(
  "predict: several images, PNG and JPEG, come back in the order given, batched or not",
  async () => {
    await withTempDir(async (dir) => {
      const model = buildModel("resnet8", 5);
      const path = `${dir}/m.safetensors`;
      await saveSafetensors(path, model.stateDict());
      const classifier = await loadClassifier(path);
      const files = [jpeg, png, jpeg];
      const together = await predict(classifier, files, { top: 1 });
      const oneByOne = await predict(classifier, files, { top: 1, batchSize: 1 });
      assert.deepEqual(together.map((r) => r.file), files);
      for (let i = 0; i < files.length; i++) {
        assert.equal(together[i].index, oneByOne[i].index);
        assert.ok(Math.abs(together[i].probability - oneByOne[i].probability) < 1e-5);
      }
      assert.deepEqual(together[0], { ...together[2], file: jpeg });
    });
  },
);

/** Asserts that `promise` rejects with a PredictError whose one-line message matches `pattern`. */
async function rejectsWithLine(promise: Promise<unknown>, pattern: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof PredictError, `a PredictError, got ${error}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), "one line");
    assert.ok(error.message.length < 300, `short: ${error.message}`);
    return true;
  });
}

gpuTest(
  "loadClassifier and predict: a missing file, a non-image, a non-checkpoint, the wrong --model and an unknown model each give one short line",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/resnet8.safetensors`;
      await saveCheckpoint(path, buildModel("resnet8", 0), null, {
        epoch: 1,
        step: 1,
        extra: { flags: { model: "resnet8" } },
      });
      const text = `${dir}/notes.txt`;
      await Deno.writeTextFile(text, "not an image");
      await rejectsWithLine(
        loadClassifier(`${dir}/none.safetensors`),
        /^checkpoint ".*" not found$/,
      );
      await rejectsWithLine(loadClassifier(text), /is not a checkpoint \(a safetensors file\)/);
      await rejectsWithLine(
        loadClassifier(path, { model: "resnet20" }),
        /does not fit model resnet20: \d+ of the model's tensors missing, .*; it was trained as resnet8$/,
      );
      await rejectsWithLine(loadClassifier(path, { model: "vgg" }), /^Unknown model "vgg"/);
      await rejectsWithLine(predict(path, [`${dir}/none.png`]), /^image ".*none\.png" not found$/);
      await rejectsWithLine(predict(path, [text]), /notes\.txt" is not a PNG or JPEG image$/);
      await rejectsWithLine(predict(path, [dir]), /is a folder, not a file$/);
      await rejectsWithLine(predict(path, [png], { top: 0 }), /^top must be a positive integer/);
      // A safetensors file of something else than a ResNet.
      const other = `${dir}/other.safetensors`;
      const head = [...buildModel("resnet8", 0).stateDict()].filter(([k]) => !k.startsWith("0."));
      await saveSafetensors(other, new Map(head));
      await rejectsWithLine(loadClassifier(other), /does not say which model it holds/);
    });
  },
);
