/**
 * Progress output: a live bar on a terminal, plain lines (at most every few seconds) otherwise.
 *
 * @module
 */
import { formatDuration } from "./_duration.ts";

/** What one progress update shows. */
export interface ProgressState {
  /** Epoch in progress, from 1. */
  epoch: number;
  /** Epochs in the run. */
  epochs: number;
  /** Batch of the epoch reached, from 1. */
  batch: number;
  /** Batches in the epoch. */
  batches: number;
  /** Mean training loss of the epoch so far. */
  loss: number;
  /** Training accuracy of the epoch so far, in [0, 1]. */
  accuracy: number;
  /** Training images per second; `NaN` (shown as `?`) before it is measured. */
  imagesPerSecond: number;
  /** Seconds left in the epoch; `NaN` (shown as `?`) before it is known. */
  etaSeconds: number;
  /** Steps taken in the whole run so far (the global step), shown with `totalSteps`. */
  step?: number;
  /** Steps the whole run takes. */
  totalSteps?: number;
  /** Seconds left in the whole run; `NaN` (shown as `?`) before it is known. */
  runEtaSeconds?: number;
  /** The learning rate of the next step. */
  lr?: number;
  /** Peak bytes of GPU memory in use by tensors, for `peak GPU … MiB`. */
  peakMemoryBytes?: number;
}

function rate(value: number): string {
  return Number.isFinite(value) ? value.toFixed(1) : "?";
}

/** The figures of one progress line, as {@link ProgressReporter.update} prints them. */
function figures(state: ProgressState): string {
  const parts = [];
  if (state.step !== undefined) {
    parts.push(`step ${state.step}${state.totalSteps === undefined ? "" : `/${state.totalSteps}`}`);
  }
  if (state.lr !== undefined) parts.push(`lr ${state.lr.toPrecision(3)}`);
  parts.push(
    `loss ${state.loss.toFixed(4)}`,
    `acc ${(state.accuracy * 100).toFixed(1)}%`,
    `${rate(state.imagesPerSecond)} img/s`,
  );
  parts.push(
    state.runEtaSeconds === undefined
      ? `ETA ${formatDuration(state.etaSeconds)}`
      : `ETA ${formatDuration(state.runEtaSeconds)} (epoch ${formatDuration(state.etaSeconds)})`,
  );
  if (state.peakMemoryBytes !== undefined) {
    parts.push(`peak GPU ${(state.peakMemoryBytes / 2 ** 20).toFixed(1)} MiB`);
  }
  return parts.join("  ");
}

/**
 * Writes progress to a stream: on a terminal one line redrawn in place with a bar; otherwise a
 * plain line at most every `plainIntervalMs` (and always for the last batch of an epoch). With
 * the optional fields of {@link ProgressState}, a line also shows the global step, the learning
 * rate, the whole run's ETA (the epoch's in brackets) and the peak GPU memory.
 *
 * @example
 * ```ts
 * import { ProgressReporter } from "@resnet/webgpu/train";
 * const lines: string[] = [];
 * const progress = new ProgressReporter({ write: (text) => lines.push(text), live: false });
 * progress.update({
 *   epoch: 1,
 *   epochs: 2,
 *   batch: 10,
 *   batches: 10,
 *   loss: 1.25,
 *   accuracy: 0.5,
 *   imagesPerSecond: 320,
 *   etaSeconds: 0,
 * });
 * console.log(lines[0]); // "epoch 1/2  10/10  loss 1.2500  acc 50.0%  320.0 img/s  ETA 0s"
 * progress.update({
 *   epoch: 2,
 *   epochs: 2,
 *   batch: 10,
 *   batches: 10,
 *   loss: 1.0,
 *   accuracy: 0.6,
 *   imagesPerSecond: 320,
 *   etaSeconds: 0,
 *   step: 20,
 *   totalSteps: 20,
 *   runEtaSeconds: 3,
 *   lr: 0.01,
 *   peakMemoryBytes: 12.5 * 2 ** 20,
 * });
 * console.log(lines[1]);
 * // "epoch 2/2  10/10  step 20/20  lr 0.0100  loss 1.0000  acc 60.0%  320.0 img/s  ETA 3s
 * // (epoch 0s)  peak GPU 12.5 MiB"
 * ```
 */
export class ProgressReporter {
  readonly #write: (text: string) => void;
  readonly #live: boolean;
  readonly #plainIntervalMs: number;
  #lastPlain = -Infinity;
  #drawn = false;

  /**
   * A reporter writing to `write` (default standard error), live when `live` (default: whether
   * standard error is a terminal), plain lines at most every `plainIntervalMs` (default 10 s).
   */
  constructor(
    options: { write?: (text: string) => void; live?: boolean; plainIntervalMs?: number } = {},
  ) {
    const encoder = new TextEncoder();
    this.#write = options.write ?? ((text) => Deno.stderr.writeSync(encoder.encode(text)));
    this.#live = options.live ?? Deno.stderr.isTerminal();
    this.#plainIntervalMs = options.plainIntervalMs ?? 10_000;
  }

  /** Shows `state`. */
  update(state: ProgressState): void {
    const shown = figures(state);
    const where = `epoch ${state.epoch}/${state.epochs}  ${state.batch}/${state.batches}`;
    if (this.#live) {
      const width = 24;
      const done = Math.round((state.batch / Math.max(1, state.batches)) * width);
      const bar = "█".repeat(done) + "░".repeat(width - done);
      this.#write(`\r\x1b[2K${where} ${bar} ${shown}`);
      this.#drawn = true;
      return;
    }
    const now = performance.now();
    if (state.batch === state.batches || now - this.#lastPlain >= this.#plainIntervalMs) {
      this.#lastPlain = now;
      this.#write(`${where}  ${shown}\n`);
    }
  }

  /**
   * Shows a one-line status (a download's progress): redrawn in place on a terminal, else printed
   * at most every `plainIntervalMs` and when `final`.
   */
  status(text: string, final = false): void {
    if (this.#live) {
      this.#write(`\r\x1b[2K${text}${final ? "\n" : ""}`);
      this.#drawn = !final;
      return;
    }
    const now = performance.now();
    if (final || now - this.#lastPlain >= this.#plainIntervalMs) {
      this.#lastPlain = now;
      this.#write(`${text}\n`);
    }
  }

  /** Ends the live line (if any) and prints `line`. */
  log(line: string): void {
    if (this.#drawn) {
      this.#write("\r\x1b[2K");
      this.#drawn = false;
    }
    this.#write(`${line}\n`);
  }
}
