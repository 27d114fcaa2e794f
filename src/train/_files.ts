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

/** The epochs recorded in a `metrics.jsonl` file; none when it does not exist. */
export async function readMetrics(path: string): Promise<EpochMetrics[]> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as EpochMetrics);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
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
