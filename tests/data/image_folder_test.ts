// The ImageFolder dataset and its GPU loader: torchvision's layout and class order, the center
// crop pixel for pixel, random resized crops and flips against a CPU bilinear reference, and
// torchvision's RandomResizedCrop bounds.
import assert from "node:assert/strict";
import {
  type ImageFolder,
  ImageFolderLoader,
  IMAGENET_MEAN,
  IMAGENET_STD,
  loadImageFolder,
} from "../../src/data/image_folder.ts";
import { gpuTest } from "../_gpu.ts";

const root = new URL("../fixtures/image_folder", import.meta.url).pathname;

Deno.test("loadImageFolder reads torchvision's layout: sorted classes, labels, center squares", async () => {
  const folder = await loadImageFolder(root, { side: 32 });
  assert.deepEqual(folder.classes, ["disc", "stripes"]);
  assert.equal(folder.count, 12);
  assert.deepEqual([...folder.labels], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
  assert.equal(folder.files[4], "disc/4.jpg");
  assert.equal(folder.images.length, 12 * 3 * 32 * 32);
});

/** CPU reference of the kernel: bilinear sample of image `planes` in `box`, normalised. */
function reference(
  planes: Uint8Array,
  side: number,
  size: number,
  [x0, y0, w, h, flip]: readonly number[] | Float32Array,
): Float64Array {
  const out = new Float64Array(3 * size * size);
  const px = (c: number, x: number, y: number) =>
    planes[
      c * side * side + Math.min(Math.max(y, 0), side - 1) * side +
      Math.min(Math.max(x, 0), side - 1)
    ];
  for (let c = 0; c < 3; c++) {
    for (let oy = 0; oy < size; oy++) {
      for (let ox = 0; ox < size; ox++) {
        const fx = flip ? size - 1 - ox : ox;
        const sx = x0 + (fx + 0.5) * w / size - 0.5;
        const sy = y0 + (oy + 0.5) * h / size - 0.5;
        const xl = Math.floor(sx), yl = Math.floor(sy);
        const ax = sx - xl, ay = sy - yl;
        const top = px(c, xl, yl) * (1 - ax) + px(c, xl + 1, yl) * ax;
        const bottom = px(c, xl, yl + 1) * (1 - ax) + px(c, xl + 1, yl + 1) * ax;
        const v = top * (1 - ay) + bottom * ay;
        out[c * size * size + oy * size + ox] = (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
      }
    }
  }
  return out;
}

function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

gpuTest(
  "ImageFolderLoader without augmentation: the center crop, normalised, pixel for pixel",
  async () => {
    const folder = await loadImageFolder(root, { side: 32 });
    const loader = new ImageFolderLoader(folder, { batchSize: 5, size: 24 });
    const batches = [...loader];
    assert.deepEqual(batches.map((b) => b.images.shape[0]), [5, 5, 2]);
    const plane = 3 * 32 * 32;
    for (const batch of batches) {
      const values = await batch.images.toArray();
      for (const [i, index] of batch.indices.entries()) {
        assert.deepEqual([...batch.boxes.subarray(5 * i, 5 * i + 5)], [4, 4, 24, 24, 0]);
        const expected = reference(
          folder.images.subarray(index * plane, (index + 1) * plane),
          32,
          24,
          [4, 4, 24, 24, 0],
        );
        const got = values.subarray(i * 3 * 24 * 24, (i + 1) * 3 * 24 * 24);
        assert.ok(maxError(got, expected) < 1e-5, `image ${index}`);
      }
      assert.deepEqual([...batch.labels], [...batch.indices].map((i) => folder.labels[i]));
      batch.images.dispose();
    }
  },
);

gpuTest(
  "ImageFolderLoader with augmentation: torchvision's crop bounds, flips, bilinear resampling",
  async () => {
    const side = 16;
    const count = 40;
    const images = new Uint8Array(count * 3 * side * side);
    for (let i = 0; i < images.length; i++) images[i] = (i * 37 + (i >> 5) * 11) % 256;
    const folder: ImageFolder = {
      classes: ["x"],
      count,
      labels: new Int32Array(count),
      files: [],
      side,
      images,
    };
    const loader = new ImageFolderLoader(folder, {
      batchSize: 20,
      size: 8,
      augment: true,
      seed: 3,
    });
    let flips = 0;
    const seen = new Set<number>();
    for (const batch of loader) {
      const values = await batch.images.toArray();
      for (const [i, index] of batch.indices.entries()) {
        seen.add(index);
        const box = batch.boxes.subarray(5 * i, 5 * i + 5);
        const [x0, y0, w, h, flip] = box;
        assert.ok(x0 >= 0 && y0 >= 0 && x0 + w <= side && y0 + h <= side, `box ${box}`);
        const area = (w * h) / (side * side);
        assert.ok(area >= 0.08 - 0.05 && area <= 1, `area fraction ${area}`);
        const ratio = w / h;
        assert.ok(ratio >= 0.5 && ratio <= 2, `aspect ratio ${ratio}`);
        flips += flip;
        const plane = 3 * side * side;
        const expected = reference(
          images.subarray(index * plane, (index + 1) * plane),
          side,
          8,
          box,
        );
        assert.ok(maxError(values.subarray(i * 192, (i + 1) * 192), expected) < 1e-4);
      }
      batch.images.dispose();
    }
    assert.equal(seen.size, count);
    assert.ok(flips > 5 && flips < 35, `${flips} of ${count} flipped`);
  },
);
