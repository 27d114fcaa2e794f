/**
 * Image files to model inputs: PNG and JPEG decoding (through the npm packages `fast-png` and
 * `jpeg-js`, pinned here by exact version so that the source also runs when served over HTTP,
 * without an import map) and the resampling to the 32x32 RGB layout of CIFAR-10.
 *
 * @module
 */
// Full specifiers, not deno.json "imports": a module served over HTTP (not through JSR, which
// rewrites mapped names) must name its npm packages itself. Exact versions: the decoders' output
// is what the tests check.
// deno-lint-ignore no-import-prefix
import { convertIndexedToRgb, decode as decodePngFile } from "npm:fast-png@8.0.0";
// deno-lint-ignore no-import-prefix
import { decode as decodeJpegFile } from "npm:jpeg-js@0.4.4";

/** A decoded image: 8-bit RGB, pixels row by row, `[height, width, 3]`. */
export interface RgbImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width * height * 3` bytes: R, G, B of each pixel, rows top to bottom. */
  data: Uint8Array;
}

/**
 * The file is not a PNG or JPEG image, or its contents are damaged.
 *
 * @example
 * ```ts
 * import { decodeImage, ImageDecodeError } from "@resnet/webgpu/predict";
 * try {
 *   decodeImage(new TextEncoder().encode("hello"), "notes.txt");
 * } catch (error) {
 *   console.log(error instanceof ImageDecodeError, (error as Error).message);
 *   // true "notes.txt is not a PNG or JPEG image"
 * }
 * ```
 */
export class ImageDecodeError extends Error {
  /** `"ImageDecodeError"`. */
  override name = "ImageDecodeError";
}

/** Images larger than this many pixels are refused before decoding (jpeg-js's default limit). */
const MAX_PIXELS = 100e6;

/**
 * Decodes a PNG or JPEG file (told apart by their signatures, not by the file name) to 8-bit RGB.
 * Every PNG colour type and bit depth is accepted (16-bit samples are rounded to 8 bits, palettes
 * expanded, grey copied to R, G and B); an alpha channel is dropped, as PIL's `convert("RGB")`
 * does. JPEG's EXIF orientation is not applied.
 *
 * @param bytes the file's contents.
 * @param name how an error message names the file.
 * @throws {ImageDecodeError} when the bytes are neither PNG nor JPEG, or do not decode.
 * @example
 * ```ts
 * import { decodeImage } from "@resnet/webgpu/predict";
 * // A 1x1 PNG with one red pixel.
 * const png = Uint8Array.from(atob(
 *   "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4XmP4z8AAAAMBAQAwOwdeAAAAAElFTkSuQmCC",
 * ), (c) => c.charCodeAt(0));
 * const image = decodeImage(png);
 * console.log(image.width, image.height, image.data); // 1 1 Uint8Array(3) [ 255, 0, 0 ]
 * ```
 */
export function decodeImage(bytes: Uint8Array, name = "the image"): RgbImage {
  if (isPng(bytes)) {
    try {
      return pngToRgb(bytes);
    } catch (error) {
      throw new ImageDecodeError(`${name}: damaged PNG file (${(error as Error).message})`);
    }
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8) {
    try {
      const { width, height, data } = decodeJpegFile(bytes, {
        useTArray: true,
        formatAsRGBA: false,
        maxResolutionInMP: MAX_PIXELS / 1e6,
      });
      return { width, height, data };
    } catch (error) {
      throw new ImageDecodeError(`${name}: damaged JPEG file (${(error as Error).message})`);
    }
  }
  throw new ImageDecodeError(`${name} is not a PNG or JPEG image`);
}

function isPng(bytes: Uint8Array): boolean {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  return bytes.length >= 8 && signature.every((b, i) => bytes[i] === b);
}

function pngToRgb(bytes: Uint8Array): RgbImage {
  const png = decodePngFile(bytes);
  const { width, height, depth, channels } = png;
  if (width * height > MAX_PIXELS) throw new Error(`${width}x${height} pixels is too large`);
  const out = new Uint8Array(width * height * 3);
  if (png.palette) {
    const rgb = convertIndexedToRgb(png);
    const stride = png.palette[0]?.length ?? 3;
    for (let p = 0; p < width * height; p++) {
      out.set(rgb.subarray(p * stride, p * stride + 3), p * 3);
    }
    return { width, height, data: out };
  }
  // Samples of one pixel, scaled to 0..255. Depths below 8 (grey only) are packed per row.
  const data = png.data;
  const max = 2 ** depth - 1;
  const rowBytes = Math.ceil((width * channels * depth) / 8);
  const sample = (x: number, y: number, c: number): number => {
    if (depth >= 8) {
      const v = data[(y * width + x) * channels + c];
      return depth === 16 ? Math.round(v / 257) : v;
    }
    const bit = x * depth;
    const byte = data[y * rowBytes + (bit >> 3)];
    return Math.round((((byte >> (8 - depth - (bit & 7))) & max) * 255) / max);
  };
  const colour = channels >= 3;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      const r = sample(x, y, 0);
      out[o] = r;
      out[o + 1] = colour ? sample(x, y, 1) : r;
      out[o + 2] = colour ? sample(x, y, 2) : r;
    }
  }
  return { width, height, data: out };
}

/**
 * Resamples an image to `size` x `size` pixels in CIFAR-10's layout (the R, G and B planes one
 * after the other, `[3, size, size]` bytes): the largest centred square is cut out, then every
 * output pixel is the area-weighted mean of the source pixels it covers (a box filter, as PIL's
 * `Image.BOX`), rounded to a byte. A `size` x `size` image comes back unchanged.
 *
 * @param image a decoded image.
 * @param size output width and height; 32 for CIFAR-10.
 * @example
 * ```ts
 * import { toPlanes } from "@resnet/webgpu/predict";
 * // 2x2 pixels: red, green / blue, white.
 * const image = {
 *   width: 2,
 *   height: 2,
 *   data: new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]),
 * };
 * console.log(toPlanes(image, 1)); // Uint8Array(3) [ 128, 128, 128 ]
 * console.log(toPlanes(image, 2)); // the R plane, the G plane, the B plane
 * ```
 */
export function toPlanes(image: RgbImage, size = 32): Uint8Array {
  const { width, height, data } = image;
  if (!(width >= 1 && height >= 1) || data.length !== width * height * 3) {
    throw new RangeError(`toPlanes: an RGB image needs width * height * 3 bytes`);
  }
  const side = Math.min(width, height);
  const x0 = (width - side) / 2;
  const y0 = (height - side) / 2;
  const scale = side / size;
  // Per output column (and row): the source pixels it covers and the weight of each.
  const spans = (offset: number) =>
    Array.from({ length: size }, (_, i) => {
      const start = offset + i * scale;
      const end = start + scale;
      const pixels: [number, number][] = [];
      for (let p = Math.floor(start); p < end; p++) {
        const weight = Math.min(end, p + 1) - Math.max(start, p);
        if (weight > 1e-9) pixels.push([p, weight / scale]);
      }
      return pixels;
    });
  const columns = spans(x0);
  const rows = spans(y0);
  const out = new Uint8Array(3 * size * size);
  for (let oy = 0; oy < size; oy++) {
    for (let ox = 0; ox < size; ox++) {
      const sum = [0, 0, 0];
      for (const [y, wy] of rows[oy]) {
        for (const [x, wx] of columns[ox]) {
          const o = (y * width + x) * 3;
          const w = wy * wx;
          sum[0] += data[o] * w;
          sum[1] += data[o + 1] * w;
          sum[2] += data[o + 2] * w;
        }
      }
      for (let c = 0; c < 3; c++) {
        out[c * size * size + oy * size + ox] = Math.min(255, Math.round(sum[c]));
      }
    }
  }
  return out;
}
