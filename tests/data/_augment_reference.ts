// Shared by the data loader's tests: random image sets, and the float64 reference of the augment
// kernel (torchvision's RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, then
// DeVries & Taylor's Cutout when asked).
import { CIFAR10_MEAN, CIFAR10_STD, type ImageDataset } from "../../src/data/cifar10.ts";
import { Generator } from "../../src/random.ts";

/** `count` images of random bytes with labels `i % 10`. */
export function randomDataset(count: number, seed: number): ImageDataset {
  const g = new Generator(seed);
  const images = new Uint8Array(count * 3072);
  for (let i = 0; i < images.length; i++) images[i] = g.nextUint32() & 255;
  const labels = Uint8Array.from({ length: count }, (_, i) => i % 10);
  return { images, labels, count, classes: "abcdefghij".split(""), name: "random" };
}

/** What {@link augmentReference} applies besides the crop and flip. */
export interface ReferenceOptions {
  /** Side of the cutout square; 0 (default): none, and the draws are [B, 3], else [B, 5]. */
  cutout?: number;
  mean?: readonly number[];
  std?: readonly number[];
}

/**
 * The float64 batch of `indices` with `draws` per image: dx, dy (the crop's corner in the padded
 * image), flip, and with a cutout its centre cx, cy. The crop is taken first, then flipped; the
 * cutout zeroes rows and columns [c - floor(size / 2), c - floor(size / 2) + size), clipped.
 */
export function augmentReference(
  dataset: ImageDataset,
  indices: ArrayLike<number>,
  draws: ArrayLike<number>,
  { cutout = 0, mean = CIFAR10_MEAN, std = CIFAR10_STD }: ReferenceOptions = {},
): Float64Array {
  const perImage = cutout > 0 ? 5 : 3;
  const out = new Float64Array(indices.length * 3072);
  for (let n = 0; n < indices.length; n++) {
    const d = (k: number) => draws[perImage * n + k];
    const [dx, dy, flip] = [d(0), d(1), d(2)];
    const [x0, y0] = cutout > 0
      ? [d(3) - Math.floor(cutout / 2), d(4) - Math.floor(cutout / 2)]
      : [0, 0];
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          const px = (flip ? 31 - x : x) + dx - 4;
          const py = y + dy - 4;
          const inside = py >= 0 && py < 32 && px >= 0 && px < 32;
          const v = inside ? dataset.images[indices[n] * 3072 + c * 1024 + py * 32 + px] : 0;
          const cut = cutout > 0 && x >= x0 && x < x0 + cutout && y >= y0 && y < y0 + cutout;
          out[n * 3072 + c * 1024 + y * 32 + x] = cut ? 0 : (v / 255 - mean[c]) / std[c];
        }
      }
    }
  }
  return out;
}
