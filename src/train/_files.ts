/**
 * The run folder's text files: atomic writes and reading `metrics.jsonl` back.
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
