/**
 * `curves.svg`: loss and accuracy per epoch as a self-contained SVG, readable in any browser.
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

const WIDTH = 420;
const HEIGHT = 260;
const MARGIN = { left: 52, right: 16, top: 30, bottom: 40 };

interface Series {
  label: string;
  color: string;
  values: number[];
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function panel(
  title: string,
  epochs: number[],
  series: Series[],
  yMax: number,
  offsetX: number,
  percent: boolean,
): string {
  const w = WIDTH - MARGIN.left - MARGIN.right;
  const h = HEIGHT - MARGIN.top - MARGIN.bottom;
  const xMin = epochs[0] ?? 1;
  const xMax = Math.max(epochs.at(-1) ?? 1, xMin + 1);
  const x = (e: number) => MARGIN.left + ((e - xMin) / (xMax - xMin)) * w;
  const y = (v: number) => MARGIN.top + h - (Math.min(Math.max(v, 0), yMax) / yMax) * h;
  const parts: string[] = [`<g transform="translate(${offsetX},0)">`];
  parts.push(
    `<text x="${MARGIN.left + w / 2}" y="18" text-anchor="middle" font-weight="bold">` +
      `${escapeXml(title)}</text>`,
  );
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const label = percent ? `${(v * 100).toFixed(0)}%` : v.toPrecision(2);
    parts.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + w}" y1="${y(v)}" y2="${y(v)}" ` +
        `stroke="#ddd"/>`,
      `<text x="${MARGIN.left - 6}" y="${y(v) + 4}" text-anchor="end">${label}</text>`,
    );
  }
  parts.push(
    `<line x1="${MARGIN.left}" x2="${MARGIN.left + w}" y1="${MARGIN.top + h}" ` +
      `y2="${MARGIN.top + h}" stroke="#333"/>`,
    `<text x="${MARGIN.left + w / 2}" y="${HEIGHT - 8}" text-anchor="middle">epoch</text>`,
    `<text x="${MARGIN.left}" y="${MARGIN.top + h + 16}" text-anchor="middle">${xMin}</text>`,
    `<text x="${MARGIN.left + w}" y="${MARGIN.top + h + 16}" text-anchor="middle">${xMax}</text>`,
  );
  series.forEach((s, i) => {
    const points = s.values
      .map((v, j) => (Number.isFinite(v) ? `${x(epochs[j]).toFixed(1)},${y(v).toFixed(1)}` : ""))
      .filter(Boolean);
    if (points.length === 1) {
      const [px, py] = points[0].split(",");
      parts.push(`<circle cx="${px}" cy="${py}" r="3" fill="${s.color}"/>`);
    } else if (points.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${points.join(" ")}"/>`,
      );
    }
    const ly = MARGIN.top + 12 + i * 16;
    parts.push(
      `<rect x="${MARGIN.left + w - 90}" y="${ly - 9}" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${MARGIN.left + w - 76}" y="${ly}">${escapeXml(s.label)}</text>`,
    );
  });
  parts.push("</g>");
  return parts.join("\n");
}

/**
 * Renders loss (train and test) and accuracy (train and test) per epoch as an SVG document.
 *
 * @example
 * ```ts
 * import { renderCurves } from "@resnet/webgpu/train";
 * const svg = renderCurves([
 *   { epoch: 1, step: 10, lr: 0.1, train_loss: 2.1, train_acc: 0.2, test_loss: 1.9,
 *     test_acc: 0.3, seconds: 5, images_per_sec: 256 },
 * ], "resnet20");
 * console.log(svg.startsWith("<svg")); // true
 * ```
 */
export function renderCurves(metrics: readonly EpochMetrics[], title = "training"): string {
  const epochs = metrics.map((m) => m.epoch);
  const loss = panel(
    `${title}: loss`,
    epochs,
    [
      { label: "train", color: "#1f77b4", values: metrics.map((m) => m.train_loss) },
      { label: "test", color: "#d62728", values: metrics.map((m) => m.test_loss) },
    ],
    niceMax(
      Math.max(...metrics.flatMap((m) => [m.train_loss, m.test_loss]).filter(Number.isFinite), 0),
    ),
    0,
    false,
  );
  const accuracy = panel(
    `${title}: accuracy`,
    epochs,
    [
      { label: "train", color: "#1f77b4", values: metrics.map((m) => m.train_acc) },
      { label: "test", color: "#d62728", values: metrics.map((m) => m.test_acc) },
    ],
    1,
    WIDTH,
    true,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * WIDTH}" height="${HEIGHT}" ` +
    `viewBox="0 0 ${2 * WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="11">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${loss}\n${accuracy}\n</svg>\n`;
}
