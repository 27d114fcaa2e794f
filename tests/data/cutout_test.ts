import assert from "node:assert/strict";
import { DataLoader, GpuImageStore } from "../../src/data/loader.ts";
import { Generator } from "../../src/random.ts";
import { assertClose, gpuTest } from "../_gpu.ts";
import { augmentReference, randomDataset } from "./_augment_reference.ts";

const EXACT = { rtol: 0, atol: 1e-6, maxRelL2: 1e-6 };

gpuTest(
  "augment kernel's cutout matches the float64 reference for odd sizes, edge centres, crops, flips",
  async () => {
    const dataset = randomDataset(13, 21);
    const store = new GpuImageStore(dataset, 5); // chunks of 5, 5, 3 images
    const g = new Generator(22);
    const b = 13;
    const indices = Uint32Array.from({ length: b }, () => g.nextUint32() % 13);
    for (const size of [1, 7, 16, 31, 32]) {
      const draws = new Uint8Array(5 * b);
      for (let n = 0; n < b; n++) {
        draws[5 * n] = g.nextUint32() % 9;
        draws[5 * n + 1] = g.nextUint32() % 9;
        draws[5 * n + 2] = g.nextUint32() % 2;
        // Corners and edges first, then random centres.
        const edges = [[0, 0], [31, 31], [0, 31], [31, 0], [15, 0]];
        const [cx, cy] = edges[n] ?? [g.nextUint32() % 32, g.nextUint32() % 32];
        draws[5 * n + 3] = cx;
        draws[5 * n + 4] = cy;
      }
      const x = store.gather(indices, draws, undefined, undefined, size);
      assertClose(await x.toArray(), augmentReference(dataset, indices, draws, { cutout: size }), {
        ...EXACT,
        what: `cutout ${size}`,
      });
      x.dispose();
    }
    // Cutout 0 with [B, 5] draws is refused: without cutout the draws are [B, 3].
    assert.throws(
      () => store.gather(indices, new Uint8Array(5 * b), undefined, undefined, 0),
      /\[B, 3\]/,
    );
    assert.throws(
      () =>
        store.gather(
          new Uint32Array([0]),
          new Uint8Array([4, 4, 0, 32, 0]),
          undefined,
          undefined,
          8,
        ),
      /centre in \[0, 31\]/,
    );
    store.dispose();
  },
);

gpuTest(
  "DataLoader with cutout: batches match the reference of its draws and resume bit for bit",
  async () => {
    const dataset = randomDataset(19, 23);
    const options = {
      batchSize: 5,
      seed: 3,
      augment: { crop: true, flip: true, cutout: 9 },
      maxChunkImages: 7,
    };
    const loader = new DataLoader(dataset, options);
    const first = loader.batches().next().value!;
    assert.equal(first.draws.length, 5 * 5);
    assertClose(
      await first.images.toArray(),
      augmentReference(dataset, first.indices, first.draws, { cutout: 9 }),
      EXACT,
    );
    first.images.dispose();
    const saved = JSON.parse(JSON.stringify(loader.stateDict()));
    const rest: { draws: number[]; values: Float32Array }[] = [];
    const centres = new Set<number>();
    for (const batch of loader.batches()) {
      const values = await batch.images.toArray();
      assertClose(
        values,
        augmentReference(dataset, batch.indices, batch.draws, { cutout: 9 }),
        EXACT,
      );
      rest.push({ draws: Array.from(batch.draws), values });
      for (let i = 0; i < batch.indices.length; i++) centres.add(batch.draws[5 * i + 3]);
      batch.images.dispose();
    }
    assert.ok(centres.size >= 5, "cutout centres vary");

    const resumed = new DataLoader(dataset, { ...options, seed: 99 });
    resumed.loadStateDict(saved);
    const again = [];
    for (const batch of resumed.batches()) {
      again.push({ draws: Array.from(batch.draws), values: await batch.images.toArray() });
      batch.images.dispose();
    }
    assert.deepEqual(again, rest);

    // Without cutout a seed's crop and flip draws are those of a loader that never had the option.
    const plain = new DataLoader(dataset, { ...options, augment: { crop: true, flip: true } });
    const zero = new DataLoader(dataset, {
      ...options,
      augment: { crop: true, flip: true, cutout: 0 },
    });
    const p = plain.batches().next().value!;
    const z = zero.batches().next().value!;
    assert.deepEqual(z.draws, p.draws);
    assert.equal(p.draws.length, 3 * 5);
    p.images.dispose();
    z.images.dispose();
    for (const l of [loader, resumed, plain, zero]) l.dispose();
  },
);

gpuTest("DataLoader refuses a cutout that is not an integer side in [0, 32]", () => {
  const dataset = randomDataset(3, 24);
  for (const cutout of [-1, 33, 2.5, NaN]) {
    assert.throws(
      () =>
        new DataLoader(dataset, { batchSize: 2, augment: { crop: false, flip: false, cutout } }),
      /cutout must be an integer side in \[0, 32\]/,
    );
  }
});
