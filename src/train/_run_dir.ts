/**
 * A run's claim on its log folder: a lock held while the run lives, a refusal to mix two runs'
 * files in one folder, and the removal of temporary files a killed write left behind.
 *
 * @module
 */
import { dirname, resolve } from "node:path";

/** The lock file in a log folder; it holds the owner's pid while a run holds the lock. */
export const LOCK_FILE = "run.lock";

/** The files a run writes into its log folder; any of them means the folder holds a run. */
export const RUN_FILES: readonly string[] = [
  "metrics.jsonl",
  "last.safetensors",
  "best.safetensors",
  "summary.json",
  "curves.svg",
];

/** Temporary files of this module's atomic writes: `<run file>.tmp` or `<run file>.tmp-<hex>`. */
const TEMPORARY = new RegExp(
  `^(${RUN_FILES.map((f) => f.replace(".", "\\.")).join("|")})\\.tmp(-[0-9a-f]+)?$`,
);

/** How a run may use a folder that already holds a run. */
export interface ClaimOptions {
  /** The checkpoint a resumed run continues; the folder may hold that run (its own folder). */
  resumeFrom?: string;
  /** Delete the run files already in the folder and start afresh. */
  overwrite?: boolean;
  /** Told what was cleaned up. */
  log?: (line: string) => void;
}

/** A claimed log folder; {@link RunDir.release} gives it up. */
export interface RunDir {
  /** Unlocks and removes the lock file. */
  release(): void;
}

/** An error about the log folder, in one line that says what to do. */
function folderError(logDir: string, cause: unknown): Error {
  const reason = cause instanceof Deno.errors.NotCapable
    ? "this process has no write permission there (deno run --allow-write must cover it)"
    : (cause as Error).message;
  return new Error(
    `Cannot write to the log dir "${logDir}": ${reason}. Pass a --log-dir you can write to.`,
    { cause },
  );
}

/**
 * Claims `logDir` for one run: creates it, takes an exclusive lock on its {@link LOCK_FILE} (the
 * operating system releases it when the process dies, even on `kill -9`), refuses a folder that a
 * live run holds or that holds another run's files (unless resuming from a checkpoint in this
 * folder, or `overwrite`, which deletes them), and removes temporary files of killed writes.
 */
export async function claimLogDir(logDir: string, options: ClaimOptions = {}): Promise<RunDir> {
  try {
    await Deno.mkdir(logDir, { recursive: true });
  } catch (cause) {
    throw folderError(logDir, cause);
  }
  const lockPath = `${logDir}/${LOCK_FILE}`;
  let lock: Deno.FsFile;
  try {
    lock = await Deno.open(lockPath, { read: true, write: true, create: true });
  } catch (cause) {
    throw folderError(logDir, cause);
  }
  let held = false;
  try {
    if (!await lock.tryLock(true)) {
      const owner = (await Deno.readTextFile(lockPath).catch(() => "")).trim();
      const pid = /"pid":\s*(\d+)/.exec(owner)?.[1] ?? "unknown";
      throw new Error(
        `The log dir "${logDir}" is in use by a live run (pid ${pid}, see ${lockPath}); wait ` +
          "for it to end, or pass another --log-dir.",
      );
    }
    held = true;
    await lock.truncate(0);
    const owner = JSON.stringify({ pid: Deno.pid, started: new Date().toISOString() }) + "\n";
    await lock.write(new TextEncoder().encode(owner));

    const names = new Set<string>();
    for await (const entry of Deno.readDir(logDir)) names.add(entry.name);
    const present = RUN_FILES.filter((f) => names.has(f));
    if (present.length > 0) await checkReuse(logDir, present, options);

    const leftovers = [...names].filter((n) => TEMPORARY.test(n));
    for (const name of leftovers) await Deno.remove(`${logDir}/${name}`).catch(() => {});
    if (leftovers.length > 0) {
      options.log?.(
        `removed ${leftovers.length} temporary file(s) a killed write left in ${logDir}: ` +
          leftovers.slice(0, 3).join(", ") + (leftovers.length > 3 ? ", …" : ""),
      );
    }
  } catch (error) {
    if (held) lock.unlockSync();
    lock.close();
    throw error;
  }
  return {
    release() {
      try {
        Deno.removeSync(lockPath);
      } catch {
        // Already gone: nothing to release but the lock itself.
      }
      lock.unlockSync();
      lock.close();
    },
  };
}

/** Refuses a folder holding another run's files unless resuming it or overwriting them. */
async function checkReuse(logDir: string, present: string[], options: ClaimOptions) {
  if (options.overwrite) {
    for (const name of present) await Deno.remove(`${logDir}/${name}`);
    options.log?.(`--overwrite: removed the earlier run's ${present.join(", ")} from ${logDir}`);
    return;
  }
  if (options.resumeFrom !== undefined) {
    const own = await realPath(dirname(options.resumeFrom));
    if (own === await realPath(logDir)) return;
    throw new Error(
      `The log dir "${logDir}" holds another run (${present.join(", ")}), not the one of ` +
        `"${options.resumeFrom}"; resume into the checkpoint's own folder (leave out --log-dir), ` +
        "pass an empty --log-dir, or --overwrite to replace that run.",
    );
  }
  throw new Error(
    `The log dir "${logDir}" holds another run (${present.join(", ")}); pass --resume ` +
      `${logDir}/last.safetensors to continue it, --overwrite to replace it, or another --log-dir.`,
  );
}

async function realPath(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return resolve(path);
  }
}
