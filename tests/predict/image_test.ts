// deno-lint-ignore-file no-import-prefix -- the encoders of the versions src/data/image.ts decodes with
import assert from "node:assert/strict";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import { decodeImage, ImageDecodeError, toPlanes } from "../../src/data/image.ts";
import { syntheticCifar } from "../../src/data/synthetic.ts";

const fixtures = new URL("../fixtures/images/", import.meta.url);
const { test } = syntheticCifar({ trainCount: 10, testCount: 10, seed: 0 });
const testImage = (i: number) => test.images.subarray(i * 3072, (i + 1) * 3072);

Deno.test("decodeImage + toPlanes: the PNG fixture gives back the synthetic test image it was written from, byte for byte", async () => {
  const image = decodeImage(await Deno.readFile(new URL("synthetic_test_0.png", fixtures)));
  assert.equal(image.width, 32);
  assert.equal(image.height, 32);
  assert.deepEqual(toPlanes(image), testImage(0));
});

Deno.test("decodeImage + toPlanes: the 64x64 JPEG fixture (quality 95) comes back to its 32x32 source within JPEG's loss", async () => {
  const image = decodeImage(await Deno.readFile(new URL("synthetic_test_3.jpg", fixtures)));
  assert.equal(image.width, 64);
  assert.equal(image.height, 64);
  const planes = toPlanes(image);
  const source = testImage(3);
  let sum = 0;
  for (let i = 0; i < planes.length; i++) sum += Math.abs(planes[i] - source[i]);
  const meanError = sum / planes.length;
  assert.ok(meanError < 4, `mean absolute error ${meanError.toFixed(2)} of 255`);
});

Deno.test("decodeImage: grey, grey+alpha, 16-bit RGBA and palette PNGs all decode to the same RGB", () => {
  // Two pixels: grey 10 and grey 250 (alpha 0 and 255 where there is alpha: alpha is dropped).
  const expected = new Uint8Array([10, 10, 10, 250, 250, 250]);
  const variants = {
    grey8: { data: new Uint8Array([10, 250]), channels: 1, depth: 8 },
    greyAlpha8: { data: new Uint8Array([10, 0, 250, 255]), channels: 2, depth: 8 },
    rgba16: {
      data: new Uint16Array(
        [10, 10, 10, 0, 250, 250, 250, 65535].map((v, i) => i % 4 === 3 ? v : v * 257),
      ),
      channels: 4,
      depth: 16,
    },
    palette: {
      data: new Uint8Array([1, 0]),
      channels: 1,
      depth: 8,
      palette: [[250, 250, 250], [10, 10, 10]],
    },
  } as const;
  for (const [name, variant] of Object.entries(variants)) {
    const bytes = encodePng({ width: 2, height: 1, ...variant } as Parameters<typeof encodePng>[0]);
    const image = decodeImage(bytes, name);
    assert.deepEqual([image.width, image.height], [2, 1], name);
    assert.deepEqual(image.data, expected, name);
  }
});

Deno.test("decodeImage: text, an empty file, a truncated PNG and a truncated JPEG are refused with an ImageDecodeError naming the file", async () => {
  assert.throws(
    () => decodeImage(new TextEncoder().encode("hello"), "notes.txt"),
    (e: unknown) =>
      e instanceof ImageDecodeError && e.message === "notes.txt is not a PNG or JPEG image",
  );
  assert.throws(() => decodeImage(new Uint8Array(0), "empty.png"), ImageDecodeError);
  const png = await Deno.readFile(new URL("synthetic_test_0.png", fixtures));
  assert.throws(
    () => decodeImage(png.subarray(0, 100), "cut.png"),
    (e: unknown) => e instanceof ImageDecodeError && /^cut\.png: damaged PNG file/.test(e.message),
  );
  const jpeg = await Deno.readFile(new URL("synthetic_test_3.jpg", fixtures));
  assert.throws(
    () => decodeImage(jpeg.subarray(0, 50), "cut.jpg"),
    (e: unknown) => e instanceof ImageDecodeError && /^cut\.jpg: damaged JPEG file/.test(e.message),
  );
});

Deno.test("toPlanes: cuts the centred square of a wide image and averages the pixels each output pixel covers", () => {
  // 6x2 pixels: the centred square is columns 2 and 3; R = 40x, G = 100y, B = 7.
  const width = 6;
  const height = 2;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x * 40, y * 100, 7], (y * width + x) * 3);
  }
  // 1x1: the mean of the square's 4 pixels (x = 2, 3; y = 0, 1).
  assert.deepEqual(toPlanes({ width, height, data }, 1), new Uint8Array([100, 50, 7]));
  // 2x2: the square itself, as planes.
  assert.deepEqual(
    toPlanes({ width, height, data }, 2),
    new Uint8Array([80, 120, 80, 120, 0, 0, 100, 100, 7, 7, 7, 7]),
  );
  // 3x3 from 2x2 (upsampling): the middle output pixel covers all four equally.
  const up = toPlanes({
    width: 2,
    height: 2,
    data: new Uint8Array([0, 0, 0, 90, 0, 0, 0, 0, 0, 90, 0, 0]),
  }, 3);
  assert.deepEqual([...up.subarray(0, 9)], [0, 45, 90, 0, 45, 90, 0, 45, 90]);
  assert.throws(() => toPlanes({ width: 2, height: 2, data: new Uint8Array(3) }), RangeError);
});
