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
