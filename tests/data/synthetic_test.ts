import assert from "node:assert/strict";
import { SYNTHETIC_CLASSES, syntheticCifar } from "../../src/data/synthetic.ts";

Deno.test("syntheticCifar() is deterministic by seed, balanced, in the CIFAR layout", () => {
  const a = syntheticCifar({ trainCount: 30, testCount: 12, seed: 3 });
  const b = syntheticCifar({ trainCount: 30, testCount: 12, seed: 3 });
  const c = syntheticCifar({ trainCount: 30, testCount: 12, seed: 4 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.train.images, c.train.images);
  assert.notDeepEqual(a.train.images.subarray(0, 12 * 3072), a.test.images);
  assert.equal(a.train.count, 30);
  assert.equal(a.train.images.length, 30 * 3 * 32 * 32);
  assert.deepEqual(Array.from(a.train.labels), Array.from({ length: 30 }, (_, i) => i % 10));
  assert.equal(a.test.count, 12);
  assert.equal(new Set(SYNTHETIC_CLASSES).size, 10);
  assert.deepEqual(a.train.classes, SYNTHETIC_CLASSES);
  assert.equal(a.train.name, "synthetic-train");
  // The test set does not depend on the size of the training set.
  assert.deepEqual(syntheticCifar({ trainCount: 5, testCount: 12, seed: 3 }).test, a.test);
  // Pixels span the range rather than sitting at one level.
  const values = new Set(a.train.images);
  assert.ok(values.size > 200);
  assert.throws(() => syntheticCifar({ trainCount: -1 }), RangeError);
  assert.throws(() => syntheticCifar({ testCount: 1.5 }), RangeError);
});

Deno.test("syntheticCifar() classes are distinguishable: class means differ, nearest mean works", () => {
  const { train, test } = syntheticCifar({ trainCount: 300, testCount: 100, seed: 0 });
  const D = 3072;
  const means = Array.from({ length: 10 }, () => new Float64Array(D));
  for (let i = 0; i < train.count; i++) {
    const m = means[train.labels[i]];
    for (let j = 0; j < D; j++) m[j] += train.images[i * D + j] / 30;
  }
  // Mean colour distance between classes, per pixel and channel, on the 0-255 scale.
  let closest = Infinity;
  for (let p = 0; p < 10; p++) {
    for (let q = p + 1; q < 10; q++) {
      let d = 0;
      for (let j = 0; j < D; j++) d += (means[p][j] - means[q][j]) ** 2;
      closest = Math.min(closest, Math.sqrt(d / D));
    }
  }
  assert.ok(closest > 5, `closest class means are ${closest.toFixed(2)} apart (RMS)`);
  let correct = 0;
  for (let i = 0; i < test.count; i++) {
    let best = -1;
    let bestDistance = Infinity;
    for (let k = 0; k < 10; k++) {
      let d = 0;
      for (let j = 0; j < D; j++) d += (test.images[i * D + j] - means[k][j]) ** 2;
      if (d < bestDistance) [best, bestDistance] = [k, d];
    }
    if (best === test.labels[i]) correct++;
  }
  // Chance is 10%; a convolutional network does far better (the shapes and stripes need it).
  assert.ok(correct >= 35, `nearest class mean classifies ${correct} of 100 test images`);
});
