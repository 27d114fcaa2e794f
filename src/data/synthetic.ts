/**
 * A procedurally generated stand-in for CIFAR-10: ten classes of 32x32 RGB images in the same
 * layout, learnable by a small ResNet in a few hundred steps, for tests, demos and machines
 * without the real data.
 *
 * @module
 */
import { Generator } from "../random.ts";
import { IMAGE_BYTES, type ImageDataset } from "./cifar10.ts";

/** Hue names of the ten classes' foreground colours, 36 degrees apart. */
const COLOURS = [
  "red",
  "orange",
  "yellow",
  "lime",
  "green",
  "cyan",
  "azure",
  "blue",
  "purple",
  "pink",
];
const SHAPES = ["disc", "square", "ring", "cross", "diamond"] as const;

/**
 * The ten class names: each class has its own foreground colour, shape and stripe direction.
 *
 * @example
 * ```ts
 * import { SYNTHETIC_CLASSES } from "@resnet/webgpu/data";
 * console.log(SYNTHETIC_CLASSES.length); // 10
 * ```
 */
export const SYNTHETIC_CLASSES: readonly string[] = Object.freeze(
  COLOURS.map((colour, k) => `${colour}-${SHAPES[k % SHAPES.length]}`),
);

/** Options of {@link syntheticCifar}. */
export interface SyntheticCifarOptions {
  /** Training images; default 5000. */
  trainCount?: number;
  /** Test images; default 1000. */
  testCount?: number;
  /** Seed: the same seed gives the same images; default 0. */
  seed?: number;
}

/** HSV (all in [0, 1]) to RGB in [0, 1]. */
function hsv(h: number, s: number, v: number): [number, number, number] {
  const f = (n: number) => {
    const k = (n + h * 6) % 6;
    return v - v * s * Math.max(0, Math.min(k, 4 - k, 1));
  };
  return [f(5), f(3), f(1)];
}

/** Signed distance (pixels, negative inside) from the class's shape of radius `r`. */
function shapeDistance(shape: number, dx: number, dy: number, r: number): number {
  const ax = Math.abs(dx);
  const ay = Math.abs(dy);
  switch (shape) {
    case 0:
      return Math.sqrt(dx * dx + dy * dy) - r;
    case 1:
      return Math.max(ax, ay) - 0.85 * r;
    case 2:
      return Math.abs(Math.sqrt(dx * dx + dy * dy) - 0.7 * r) - 0.3 * r;
    case 3:
      return Math.min(Math.max(ax - 0.3 * r, ay - r), Math.max(ay - 0.3 * r, ax - r));
    default:
      return ax + ay - 1.2 * r;
  }
}

/** Draws one image of class `k` into `out` at `offset` (`[3, 32, 32]` bytes). */
function drawImage(k: number, g: Generator, out: Uint8Array, offset: number): void {
  const shape = k % SHAPES.length;
  const angle = (k % 4) * Math.PI / 4;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const cx = 15.5 + (g.uniform() * 2 - 1) * 5;
  const cy = 15.5 + (g.uniform() * 2 - 1) * 5;
  const r = 7 + 3 * g.uniform();
  const fg = hsv(
    (k / 10 + (g.uniform() * 2 - 1) * 0.07 + 1) % 1,
    0.35 + 0.65 * g.uniform(),
    0.7 + 0.3 * g.uniform(),
  );
  // A dim background of random tint and a gentle gradient, the same for every class.
  const bg = hsv(g.uniform(), 0.3 * g.uniform(), 0.1 + 0.35 * g.uniform());
  const gx = (g.uniform() * 2 - 1) * 0.006;
  const gy = (g.uniform() * 2 - 1) * 0.006;
  const period = 4 + 2 * g.uniform();
  const phase = 2 * Math.PI * g.uniform();
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      const dx = x - cx;
      const dy = y - cy;
      const inside = Math.min(1, Math.max(0, 0.5 - shapeDistance(shape, dx, dy, r)));
      const stripe = 0.5 + 0.5 * Math.cos(2 * Math.PI * (dx * cos + dy * sin) / period + phase);
      const shade = 0.55 + 0.45 * stripe;
      const ramp = 1 + gx * dx + gy * dy;
      for (let c = 0; c < 3; c++) {
        // Triangular noise on [-0.15, 0.15] (standard deviation 0.06) from one 32-bit draw.
        const bits = g.nextUint32();
        const noise = ((bits & 0xffff) + (bits >>> 16) - 65535) * (0.15 / 65535);
        const value = inside * fg[c] * shade + (1 - inside) * bg[c] * ramp + noise;
        out[offset + c * 1024 + y * 32 + x] = Math.round(255 * Math.min(1, Math.max(0, value)));
      }
    }
  }
}

function generate(count: number, seed: number, name: string): ImageDataset {
  const g = new Generator(seed);
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = i % 10;
    drawImage(labels[i], g, images, i * IMAGE_BYTES);
  }
  return { images, labels, count, classes: [...SYNTHETIC_CLASSES], name };
}

/**
 * A synthetic CIFAR-10-shaped dataset: ten balanced classes (label `i % 10` for image `i`) of
 * 32x32 RGB images `[N, 3, 32, 32]`. Each class has its own foreground colour, shape (disc,
 * square, ring, cross, diamond) and stripe direction, drawn at a random position and size over a
 * random dim background, with pixel noise; the same seed gives the same bytes everywhere. A
 * small ResNet learns it far above chance within a few hundred steps.
 *
 * @throws {RangeError} when a count is not a non-negative integer.
 * @example
 * ```ts
 * import { data } from "@resnet/webgpu";
 * const { train, test } = data.syntheticCifar({ trainCount: 100, testCount: 20, seed: 1 });
 * console.log(train.images.length, test.labels.length, train.classes[0]); // 307200 20 "red-disc"
 * ```
 */
export function syntheticCifar(
  options: SyntheticCifarOptions = {},
): { train: ImageDataset; test: ImageDataset } {
  const { trainCount = 5000, testCount = 1000, seed = 0 } = options;
  for (const [key, value] of [["trainCount", trainCount], ["testCount", testCount]] as const) {
    if (!Number.isInteger(value) || value < 0) {
      throw new RangeError(`syntheticCifar(): ${key} must be a non-negative integer, got ${value}`);
    }
  }
  if (!Number.isFinite(seed)) {
    throw new RangeError(`syntheticCifar(): seed must be a finite number, got ${seed}`);
  }
  // Separate streams, so the test set does not depend on the size of the training set.
  return {
    train: generate(trainCount, seed * 2, "synthetic-train"),
    test: generate(testCount, seed * 2 + 1, "synthetic-test"),
  };
}
