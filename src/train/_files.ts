/**
 * The run folder's text files: atomic writes, reading `metrics.jsonl` back, and `metrics.csv`.
 *
 * @module
 */
import type { EpochMetrics } from "./curves.ts";

/** Writes `text` to `path` through a temporary file and a rename, so readers never see half. */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

/**
 * The epochs recorded in a `metrics.jsonl` file; none when it does not exist.
 *
 * @throws {Error} naming the file and the line when a line is not a JSON object of metrics.
 */
export async function readMetrics(path: string): Promise<EpochMetrics[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  const out: EpochMetrics[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(lines[i]);
    } catch {
      value = undefined;
    }
    const epoch = (value as EpochMetrics | undefined)?.epoch;
    if (value === null || typeof value !== "object" || !Number.isSafeInteger(epoch)) {
      throw new Error(
        `${path} line ${i + 1} is not a JSON object of an epoch's metrics (a torn write?): ` +
          `${JSON.stringify(lines[i].slice(0, 60))}; remove that line, or resume from a ` +
          "checkpoint that records its metrics",
      );
    }
    out.push(value as EpochMetrics);
  }
  return out;
}

/** The columns of `metrics.csv`: the fields of {@link EpochMetrics}, in `metrics.jsonl`'s order. */
const CSV_COLUMNS: readonly (keyof EpochMetrics)[] = [
  "epoch",
  "step",
  "lr",
  "train_loss",
  "train_acc",
  "test_loss",
  "test_acc",
  "seconds",
  "images_per_sec",
];

/**
 * `metrics.csv`: a header line, then one line per epoch with the same figures as `metrics.jsonl`
 * (full precision; an empty cell for a value that is not a finite number).
 */
export function metricsCsv(rows: readonly EpochMetrics[]): string {
  const cell = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? String(v) : "");
  const lines = [CSV_COLUMNS.join(",")];
  for (const row of rows) lines.push(CSV_COLUMNS.map((c) => cell(row[c])).join(","));
  return lines.join("\n") + "\n";
}
