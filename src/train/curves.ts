/**
 * `curves.svg`: loss, accuracy and learning rate as a self-contained SVG, readable in any browser:
 * per epoch, and per logged step when the run's steps are given (so that a one-epoch run draws
 * lines too).
 *
 * @module
 */

/** One epoch's figures, as written to `metrics.jsonl`. */
export interface EpochMetrics {
  /** Epoch number, from 1. */
  epoch: number;
  /** Optimizer steps taken by the end of the epoch. */
  step: number;
  /** Learning rate at the end of the epoch. */
  lr: number;
  /** Mean training loss over the epoch. */
  train_loss: number;
  /** Training accuracy over the epoch, in [0, 1]. */
  train_acc: number;
  /** Mean test loss. */
  test_loss: number;
  /** Test accuracy, in [0, 1]. */
  test_acc: number;
  /** Seconds the epoch took (training and evaluation). */
  seconds: number;
  /** Training images per second. */
  images_per_sec: number;
}

/**
 * Training figures logged during an epoch (at each readback, every few seconds), for the per-step
 * lines of {@link renderCurves}.
 */
export interface StepPoint {
  /** Optimizer steps taken by then, from the run's start. */
  step: number;
  /** Where that is in epochs: 0.5 is half way through the first epoch. */
  epoch: number;
  /** Mean training loss of the steps since the previous point. */
  train_loss: number;
  /** Training accuracy of the steps since the previous point, in [0, 1]. */
  train_acc: number;
  /** Learning rate of the last of those steps. */
  lr: number;
}

const PANEL_WIDTH = 400;
const HEIGHT = 290;
/** The plot area of a panel: inside these margins. Title and legend sit above it. */
const MARGIN = { left: 58, right: 18, top: 56, bottom: 46 };
const PLOT_WIDTH = PANEL_WIDTH - MARGIN.left - MARGIN.right;
const PLOT_HEIGHT = HEIGHT - MARGIN.top - MARGIN.bottom;
const BLUE = "#1f77b4";
const LIGHT_BLUE = "#9ecae1";
const RED = "#d62728";
const GREEN = "#2ca02c";

interface Series {
  label: string;
  color: string;
  /** [x in epochs, y] points; non-finite y are left out. */
  points: [number, number][];
  /** Marks each point with a dot (epoch-level series), so that a single point still shows. */
  markers: boolean;
}

interface Axis {
  max: number;
  ticks: number[];
  format: (v: number) => string;
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

/** A round tick spacing (1, 2 or 5 times a power of ten) giving about `count` ticks up to `max`. */
function tickStep(max: number, count: number): number {
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5]) if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

/** An axis from 0 to a round value at or above `max`, with round ticks and their labels. */
function axis(max: number, options: { percent?: boolean; count?: number } = {}): Axis {
  if (options.percent) {
    return { max: 1, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1], format: (v) => `${Math.round(v * 100)}%` };
  }
  const top = max > 0 && Number.isFinite(max) ? max : 1;
  const step = tickStep(top, options.count ?? 5);
  const end = Math.ceil(top / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let k = 0; k * step <= end * (1 + 1e-9); k++) ticks.push(k * step);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  // Tiny steps (learning rates) in exponent notation, through 3 digits to drop float noise.
  const format = step < 1e-3
    ? (v: number) => (v === 0 ? "0" : Number(v.toPrecision(3)).toExponential())
    : (v: number) => v.toFixed(decimals);
  return { max: end, ticks, format };
}

function panel(
  title: string,
  series: Series[],
  x: Axis,
  y: Axis,
  offsetX: number,
): string {
  const px = (v: number) => MARGIN.left + (v / x.max) * PLOT_WIDTH;
  const py = (v: number) =>
    MARGIN.top + PLOT_HEIGHT - (Math.min(Math.max(v, 0), y.max) / y.max) * PLOT_HEIGHT;
  const bottom = MARGIN.top + PLOT_HEIGHT;
  const parts: string[] = [`<g class="panel" transform="translate(${offsetX},0)">`];
  parts.push(
    `<text class="title" x="${MARGIN.left + PLOT_WIDTH / 2}" y="16" text-anchor="middle" ` +
      `font-weight="bold">${escapeXml(title)}</text>`,
    `<rect class="plot-area" x="${MARGIN.left}" y="${MARGIN.top}" width="${PLOT_WIDTH}" ` +
      `height="${PLOT_HEIGHT}" fill="none" stroke="#bbb"/>`,
  );
  for (const v of y.ticks) {
    const at = py(v).toFixed(1);
    parts.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + PLOT_WIDTH}" y1="${at}" y2="${at}" ` +
        `stroke="#eee"/>`,
      `<text class="y-tick" x="${MARGIN.left - 6}" y="${(py(v) + 4).toFixed(1)}" ` +
        `text-anchor="end">${escapeXml(y.format(v))}</text>`,
    );
  }
  for (const v of x.ticks) {
    const at = px(v).toFixed(1);
    parts.push(
      `<line x1="${at}" x2="${at}" y1="${bottom}" y2="${bottom + 4}" stroke="#333"/>`,
      `<text class="x-tick" x="${at}" y="${bottom + 16}" text-anchor="middle">` +
        `${escapeXml(x.format(v))}</text>`,
    );
  }
  parts.push(
    `<line x1="${MARGIN.left}" x2="${MARGIN.left + PLOT_WIDTH}" y1="${bottom}" y2="${bottom}" ` +
      `stroke="#333"/>`,
    `<text x="${MARGIN.left + PLOT_WIDTH / 2}" y="${HEIGHT - 8}" text-anchor="middle">epoch</text>`,
  );
  // The legend: one row between the title and the plot area, never over the data.
  let lx = MARGIN.left;
  parts.push(`<g class="legend">`);
  for (const s of series) {
    parts.push(
      `<rect x="${lx}" y="28" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${lx + 14}" y="37">${escapeXml(s.label)}</text>`,
    );
    lx += 14 + 6.5 * s.label.length + 14;
  }
  parts.push("</g>");
  for (const s of series) {
    const points = s.points
      .filter(([, v]) => Number.isFinite(v))
      .map(([e, v]) => `${px(e).toFixed(1)},${py(v).toFixed(1)}`);
    if (points.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="${s.markers ? 2 : 1.5}" ` +
          `points="${points.join(" ")}"/>`,
      );
    }
    if (s.markers) {
      for (const point of points) {
        const [cx, cy] = point.split(",");
        parts.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${s.color}"/>`);
      }
    }
  }
  parts.push("</g>");
  return parts.join("\n");
}

/**
 * Renders three panels as an SVG document: loss (train and test per epoch, and the training loss
 * per logged step when `steps` are given), accuracy (the same) and the learning rate (per step,
 * else per epoch). The x axes are in epochs from 0, both axes have round tick labels, and each
 * legend sits above its plot.
 *
 * @example
 * ```ts
 * import { renderCurves } from "@resnet/webgpu/train";
 * const svg = renderCurves(
 *   [{ epoch: 1, step: 10, lr: 0.1, train_loss: 2.1, train_acc: 0.2, test_loss: 1.9,
 *     test_acc: 0.3, seconds: 5, images_per_sec: 256 }],
 *   "resnet20",
 *   [
 *     { step: 5, epoch: 0.5, train_loss: 2.3, train_acc: 0.1, lr: 0.1 },
 *     { step: 10, epoch: 1, train_loss: 2.0, train_acc: 0.25, lr: 0.1 },
 *   ],
 * );
 * console.log(svg.startsWith("<svg"), svg.includes("learning rate")); // true true
 * ```
 */
export function renderCurves(
  metrics: readonly EpochMetrics[],
  title = "training",
  steps: readonly StepPoint[] = [],
): string {
  const epochPoints = (key: keyof EpochMetrics): [number, number][] =>
    metrics.map((m) => [m.epoch, m[key]]);
  const stepPoints = (key: "train_loss" | "train_acc" | "lr"): [number, number][] =>
    steps.map((s) => [s.epoch, s[key]]);
  const perStep = steps.length > 0;
  const lastX = Math.max(
    ...metrics.map((m) => m.epoch),
    ...steps.map((s) => s.epoch),
    0,
  );
  const x = axis(lastX > 0 ? lastX : 1, { count: 5 });
  if (Number.isInteger(x.ticks[1] ?? 1)) x.format = (v) => v.toFixed(0);
  const finite = (values: number[]) => values.filter(Number.isFinite);
  const lossMax = Math.max(
    ...finite(metrics.flatMap((m) => [m.train_loss, m.test_loss])),
    ...finite(steps.map((s) => s.train_loss)),
    0,
  );
  const loss = panel(
    `${title}: loss`,
    [
      ...(perStep
        ? [{
          label: "train (steps)",
          color: LIGHT_BLUE,
          points: stepPoints("train_loss"),
          markers: false,
        }]
        : []),
      { label: "train", color: BLUE, points: epochPoints("train_loss"), markers: true },
      { label: "test", color: RED, points: epochPoints("test_loss"), markers: true },
    ],
    x,
    axis(lossMax),
    0,
  );
  const accuracy = panel(
    `${title}: accuracy`,
    [
      ...(perStep
        ? [{
          label: "train (steps)",
          color: LIGHT_BLUE,
          points: stepPoints("train_acc"),
          markers: false,
        }]
        : []),
      { label: "train", color: BLUE, points: epochPoints("train_acc"), markers: true },
      { label: "test", color: RED, points: epochPoints("test_acc"), markers: true },
    ],
    x,
    axis(1, { percent: true }),
    PANEL_WIDTH,
  );
  const lrPoints = perStep ? stepPoints("lr") : epochPoints("lr");
  const lr = panel(
    `${title}: learning rate`,
    [{ label: "lr", color: GREEN, points: lrPoints, markers: !perStep }],
    x,
    axis(Math.max(...finite(lrPoints.map(([, v]) => v)), 0)),
    2 * PANEL_WIDTH,
  );
  const width = 3 * PANEL_WIDTH;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${HEIGHT}" ` +
    `viewBox="0 0 ${width} ${HEIGHT}" font-family="sans-serif" font-size="11">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${loss}\n${accuracy}\n${lr}\n</svg>\n`;
}
