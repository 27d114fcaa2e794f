// trainStep() and evaluate() as the parts of a training loop written by hand.
import assert from "node:assert/strict";
import { syntheticCifar } from "../../src/data/synthetic.ts";
import { DataLoader } from "../../src/data/loader.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { mulScalar } from "../../src/ops/elementwise.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { evaluate } from "../../src/train/evaluate.ts";
import { trainStep } from "../../src/train/step.ts";
import { gpuTest } from "../_gpu.ts";

function batch(seed: number) {
  return {
    images: Tensor.randn([8, 3, 8, 8], { seed }),
    labels: Int32Array.from({ length: 8 }, (_, i) => (i + seed) % 4),
  };
}

gpuTest(
  "trainStep() updates the weights exactly as zeroGrad, forward, backward, step by hand",
  async () => {
    const ours = resnet(8, { numClasses: 4, seed: 3 });
    const theirs = resnet(8, { numClasses: 4, seed: 3 });
    const optOurs = new SGD(ours.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
    const optTheirs = new SGD(theirs.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
    for (const seed of [1, 2, 3]) {
      const b = batch(seed);
      const result = trainStep(ours, optOurs, b);
      const handLoss = tidy(() => {
        optTheirs.zeroGrad();
        const loss = crossEntropy(theirs.forward(b.images), b.labels);
        loss.backward();
        optTheirs.step();
        return loss;
      });
      assert.equal(await result.loss.item(), await handLoss.item());
      const correct = await result.correct.item();
      assert.ok(Number.isInteger(correct) && correct >= 0 && correct <= 8, `correct ${correct}`);
      result.loss.dispose();
      result.correct.dispose();
      handLoss.dispose();
      b.images.dispose();
    }
    const a = ours.stateDict();
    const b = theirs.stateDict();
    for (const [key, t] of a) assert.deepEqual(await t.toArray(), await b.get(key)!.toArray(), key);
  },
);

gpuTest("trainStep() takes another loss and leaves only its two results allocated", async () => {
  const model = resnet(8, { numClasses: 4, seed: 0 });
  const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
  const b = batch(5);
  // Warm up: gradients and momentum buffers exist from the first step on.
  const first = trainStep(model, optimizer, b);
  first.loss.dispose();
  first.correct.dispose();
  // Buffers taken from the pool after the mark and still held: unlike differences of
  // memoryStats().inUseBytes, this does not move when the garbage collector returns tensors that
  // earlier tests dropped.
  const mark = poolMark();
  const doubled = trainStep(model, optimizer, b, {
    loss: (output, labels) => mulScalar(crossEntropy(output, labels), 2),
  });
  const scalars = 2 * 4; // two float32 scalars, as the pool counts them
  assert.ok(inUseBytesSince(mark) <= scalars * 64, "a step left tensors behind");
  const value = await doubled.loss.item();
  assert.ok(Number.isFinite(value) && value > 0, `loss ${value}`);
  doubled.loss.dispose();
  doubled.correct.dispose();
  assert.equal(inUseBytesSince(mark), 0);
  b.images.dispose();
});

gpuTest("a loop of trainStep() and evaluate() written by hand trains a ResNet", async () => {
  const { train, test } = syntheticCifar({ trainCount: 320, testCount: 160, seed: 4 });
  const model = resnet(8, { numClasses: 10, seed: 4 });
  const optimizer = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  const loader = new DataLoader(train, {
    batchSize: 32,
    seed: 4,
    augment: { crop: false, flip: true },
  });
  const testLoader = new DataLoader(test, { batchSize: 80, shuffle: false });
  const before = await evaluate(model, testLoader);
  const lossSum = Tensor.zeros([]);
  const epochLosses: number[] = [];
  for (let epoch = 0; epoch < 3; epoch++) {
    lossSum.fill(0);
    for (const b of loader.batches()) {
      tidy(() => lossSum.accumulate(trainStep(model, optimizer, b).loss));
      b.images.dispose();
    }
    epochLosses.push((await lossSum.item()) / loader.length);
  }
  assert.equal(model.training, true);
  const after = await evaluate(model, testLoader);
  assert.equal(model.training, true, "evaluate() restores training mode");
  assert.ok(epochLosses[2] < epochLosses[0], `train loss per epoch ${epochLosses}`);
  // Ten classes: chance is 0.1 (the untrained model's accuracy here).
  assert.ok(after.accuracy > 0.25, `test accuracy ${before.accuracy} -> ${after.accuracy}`);
  // The same figures from the dataset itself, through a loader evaluate() makes and releases.
  const again = await evaluate(model, test, { batchSize: 64 });
  assert.ok(Math.abs(again.loss - after.loss) < 1e-4, `${again.loss} vs ${after.loss}`);
  assert.equal(again.accuracy, after.accuracy);
  lossSum.dispose();
  loader.dispose();
  testLoader.dispose();
});
