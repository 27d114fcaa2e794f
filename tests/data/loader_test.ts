import assert from "node:assert/strict";
import { CIFAR10_MEAN, CIFAR10_STD } from "../../src/data/cifar10.ts";
import { type Batch, DataLoader, GpuImageStore } from "../../src/data/loader.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { assertClose, gpuTest } from "../_gpu.ts";
import { augmentReference, randomDataset } from "./_augment_reference.ts";

const EXACT = { rtol: 0, atol: 1e-6, maxRelL2: 1e-6 };

gpuTest(
  "augment kernel matches the float64 reference for every crop corner and flip across chunks",
  async () => {
    const dataset = randomDataset(11, 1);
    const store = new GpuImageStore(dataset, 3); // chunks of 3, 3, 3, 2 images
    assert.equal(store.chunkImages, 3);
    const indices = new Uint32Array([0, 10, 5, 3, 9, 2, 6, 7, 1, 8, 4, 10]);
    const draws = new Uint8Array([
      0,
      0,
      0,
      8,
      8,
      1,
      0,
      8,
      1,
      8,
      0,
      0,
      4,
      4,
      0,
      4,
      4,
      1,
      1,
      7,
      0,
      7,
      1,
      1,
      3,
      5,
      0,
      5,
      3,
      1,
      2,
      6,
      1,
      6,
      2,
      0,
    ]);
    const x = store.gather(indices, draws);
    assert.deepEqual(x.shape, [12, 3, 32, 32]);
    const expected = augmentReference(dataset, indices, draws);
    assertClose(await x.toArray(), expected, { ...EXACT, what: "augment" });
    // Padded pixels are (0 - mean) / std: row 0 of the first image (dy = 0) is all padding.
    const values = await x.toArray();
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(values[c * 1024 + 5] - (0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]) < 1e-6);
    }
    // Other normalisation constants.
    const mean = [0.5, 0.25, 0];
    const std = [0.5, 1, 2];
    const y = store.gather(indices.subarray(0, 3), draws.subarray(0, 9), mean, std);
    assertClose(
      await y.toArray(),
      augmentReference(dataset, indices.subarray(0, 3), draws.subarray(0, 9), { mean, std }),
      EXACT,
    );
    assert.throws(() => store.gather(new Uint32Array([11]), new Uint8Array([4, 4, 0])), RangeError);
    assert.throws(() => store.gather(new Uint32Array([0]), new Uint8Array([9, 4, 0])), RangeError);
    assert.throws(() => store.gather(new Uint32Array([0]), new Uint8Array([4, 4])), RangeError);
    assert.throws(() => new GpuImageStore(randomDataset(9, 2), 2), /need 5 buffers .* at most 4/);
    x.dispose();
    y.dispose();
    store.dispose();
    assert.throws(() => store.gather(new Uint32Array([0]), new Uint8Array([4, 4, 0])), /dispose/);
  },
);

/** Every batch of one epoch, images read back when `read` is set, then disposed. */
async function epoch(loader: DataLoader, read = false, limit = Infinity) {
  const out: (Omit<Batch, "images"> & { values?: Float32Array; shape: readonly number[] })[] = [];
  for (const batch of loader.batches()) {
    const values = read ? await batch.images.toArray() : undefined;
    out.push({ ...batch, values, shape: batch.images.shape });
    batch.images.dispose();
    if (out.length >= limit) break;
  }
  return out;
}

gpuTest(
  "DataLoader batches match the reference with the draws it reports, adding no submit",
  async () => {
    const dataset = randomDataset(21, 3);
    const loader = new DataLoader(dataset, {
      batchSize: 8,
      seed: 5,
      augment: { crop: true, flip: true },
      maxChunkImages: 8,
    });
    assert.equal(loader.length, 3);
    const batches = await epoch(loader, true);
    assert.deepEqual(batches.map((b) => b.shape), [[8, 3, 32, 32], [8, 3, 32, 32], [5, 3, 32, 32]]);
    const all = new Set<number>();
    const seen = { dx: new Set<number>(), flip: new Set<number>() };
    for (const b of batches) {
      assertClose(b.values!, augmentReference(dataset, b.indices, b.draws), EXACT);
      assert.deepEqual(Array.from(b.labels), Array.from(b.indices, (i) => dataset.labels[i]));
      b.indices.forEach((i) => all.add(i));
      for (let i = 0; i < b.indices.length; i++) {
        seen.dx.add(b.draws[3 * i]);
        seen.flip.add(b.draws[3 * i + 2]);
        assert.ok(b.draws[3 * i] <= 8 && b.draws[3 * i + 1] <= 8);
      }
    }
    assert.equal(all.size, 21);
    assert.ok(seen.dx.size >= 5, "crop offsets vary");
    assert.deepEqual([...seen.flip].sort(), [0, 1]);
    assert.equal(loader.epoch, 1);

    // Without augmentation the kernel only normalises: draws are (4, 4, 0).
    const plain = new DataLoader(dataset, { batchSize: 21, shuffle: false });
    const [only] = await epoch(plain, true);
    assert.deepEqual(Array.from(only.indices), Array.from({ length: 21 }, (_, i) => i));
    assert.ok(only.draws.every((v, i) => v === (i % 3 === 2 ? 0 : 4)));
    assertClose(only.values!, augmentReference(dataset, only.indices, only.draws), EXACT);

    // A batch is encoded with the pending work: no submit of its own.
    const pending = new DataLoader(dataset, { batchSize: 4, augment: { crop: true, flip: true } });
    const iterator = pending.batches();
    iterator.next().value!.images.dispose(); // first batch: uploads the dataset
    const before = gpuCounters().submits;
    const second = iterator.next().value!;
    const third = iterator.next().value!;
    assert.equal(gpuCounters().submits, before);
    assert.equal((await third.images.toArray()).length, 4 * 3072);
    second.images.dispose();
    third.images.dispose();
    loader.dispose();
    plain.dispose();
    pending.dispose();
  },
);

gpuTest(
  "DataLoader shuffles deterministically by seed, covering every index once per epoch",
  async () => {
    const dataset = randomDataset(23, 4);
    const make = (seed: number, dropLast = false) =>
      new DataLoader(dataset, {
        batchSize: 5,
        seed,
        dropLast,
        augment: { crop: true, flip: false },
      });
    const a = make(7);
    const b = make(7);
    const c = make(8);
    const orders: number[][] = [];
    for (let e = 0; e < 2; e++) {
      const ea = await epoch(a);
      const eb = await epoch(b);
      const ec = await epoch(c);
      assert.deepEqual(ea.map((x) => Array.from(x.indices)), eb.map((x) => Array.from(x.indices)));
      assert.deepEqual(ea.map((x) => Array.from(x.draws)), eb.map((x) => Array.from(x.draws)));
      assert.notDeepEqual(
        ea.map((x) => Array.from(x.indices)),
        ec.map((x) => Array.from(x.indices)),
      );
      const order = ea.flatMap((x) => Array.from(x.indices));
      assert.deepEqual([...order].sort((p, q) => p - q), Array.from({ length: 23 }, (_, i) => i));
      assert.deepEqual(ea.map((x) => x.indices.length), [5, 5, 5, 5, 3]);
      assert.ok(ea.every((x) => x.draws.every((v, i) => i % 3 !== 2 || v === 0)), "no flips");
      orders.push(order);
    }
    assert.notDeepEqual(orders[0], orders[1], "each epoch has its own order");
    assert.equal(a.epoch, 2);

    const dropping = make(7, true);
    assert.equal(dropping.length, 4);
    const dropped = await epoch(dropping);
    assert.deepEqual(dropped.map((x) => x.indices.length), [5, 5, 5, 5]);
    // The same seed draws the same order; only the short last batch is left out.
    const firstFour = [0, 1, 2, 3].map((k) => orders[0].slice(5 * k, 5 * k + 5));
    assert.deepEqual(dropped.map((x) => Array.from(x.indices)), firstFour);
    for (const l of [a, b, c, dropping]) l.dispose();
  },
);

gpuTest(
  "DataLoader resumed from stateDict() mid-epoch gives the identical remaining batches",
  async () => {
    const dataset = randomDataset(17, 5);
    const options = { batchSize: 4, seed: 11, augment: { crop: true, flip: true } };
    const original = new DataLoader(dataset, options);
    await epoch(original);
    const head = await epoch(original, false, 2); // stops after 2 batches of epoch 1
    assert.equal(head.length, 2);
    assert.equal(original.epoch, 1);
    assert.equal(original.position, 2);
    const saved = JSON.parse(JSON.stringify(original.stateDict()));
    const rest = await epoch(original, true);
    const next = await epoch(original);
    assert.equal(rest.length, 3);

    const resumed = new DataLoader(dataset, { ...options, seed: 999 });
    resumed.loadStateDict(saved);
    assert.equal(resumed.epoch, 1);
    const restAgain = await epoch(resumed, true);
    const nextAgain = await epoch(resumed);
    const strip = (bs: typeof rest) => bs.map((b) => [Array.from(b.indices), Array.from(b.draws)]);
    assert.deepEqual(strip(restAgain), strip(rest));
    assert.deepEqual(strip(nextAgain), strip(next));
    restAgain.forEach((b, i) => assert.deepEqual(b.values, rest[i].values));
    assert.deepEqual(
      restAgain.map((b) => Array.from(b.labels)),
      rest.map((b) => Array.from(b.labels)),
    );

    assert.throws(
      () => new DataLoader(dataset, { ...options, batchSize: 5 }).loadStateDict(saved),
      /saved for 17 images in batches of 4/,
    );
    assert.throws(() => resumed.loadStateDict({ ...saved, generator: [1, 2] }), RangeError);
    assert.throws(() => resumed.loadStateDict({ ...saved, position: 6 }), /past the 5 batches/);
    original.dispose();
    resumed.dispose();
  },
);

gpuTest("DataLoader rejects bad options and malformed datasets", () => {
  const dataset = randomDataset(3, 6);
  assert.throws(() => new DataLoader(dataset, { batchSize: 0 }), /batchSize must be a positive/);
  assert.throws(() => new DataLoader(dataset, { batchSize: 2, mean: [0.5, 0.5] }), /mean and std/);
  assert.throws(() => new DataLoader(dataset, { batchSize: 2, std: [1, 0, 1] }), /std > 0/);
  assert.throws(
    () => new DataLoader({ ...dataset, count: 4 }, { batchSize: 2 }),
    /count 4, so images must hold 12288 bytes/,
  );
  assert.throws(
    () => new DataLoader({ ...dataset, classes: ["a"] }, { batchSize: 2 }),
    /image 1 has label 1, but there are 1 classes/,
  );
  assert.throws(
    () => new DataLoader({ ...dataset, images: [] as unknown as Uint8Array }, { batchSize: 2 }),
    TypeError,
  );
  const empty = new DataLoader(randomDataset(0, 0), { batchSize: 2 });
  assert.equal(empty.length, 0);
  assert.equal([...empty.batches()].length, 0);
  assert.equal(empty.epoch, 1);
});
