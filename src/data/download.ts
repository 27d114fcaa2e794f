/**
 * Fetching CIFAR-10: a resumable download verified by size and MD5, then a streaming extraction
 * into a temporary folder renamed into place, so a folder named `cifar-10-batches-bin` is only
 * ever complete data.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { CIFAR10_META_FILE, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, joinPath } from "./cifar10.ts";
import { readTar } from "./_tar.ts";

/** The folder the CIFAR-10 archive unpacks to. */
export const CIFAR10_FOLDER = "cifar-10-batches-bin";
/** The official CIFAR-10 binary archive. */
export const CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/** Size in bytes of {@link CIFAR10_URL}. */
export const CIFAR10_SIZE = 170052171;
/** MD5 of {@link CIFAR10_URL}, as published on the CIFAR-10 page. */
export const CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530";

const ARCHIVE_NAME = "cifar-10-binary.tar.gz";
const PROGRESS_INTERVAL_MS = 200;

/** Progress of a download, reported to {@link EnsureCifar10Options.onProgress}. */
export interface DownloadProgress {
  /** Bytes on disk so far, including those of an earlier, resumed attempt. */
  receivedBytes: number;
  /** Size of the whole file. */
  totalBytes: number;
  /** Average speed of this attempt so far; 0 before any byte arrived. */
  bytesPerSecond: number;
  /** Seconds left at that speed; `Infinity` while the speed is unknown, 0 when done. */
  etaSeconds: number;
}

/** Options of {@link ensureCifar10}. */
export interface EnsureCifar10Options {
  /** Folder that holds (or will hold) `cifar-10-batches-bin/`; e.g. {@link defaultDataDir}. */
  dataDir: string;
  /** Where to download the binary archive from; default the official CIFAR-10 site. */
  url?: string;
  /** The archive's size in bytes; default that of the official archive. */
  expectedSize?: number;
  /** The archive's MD5 as hex digits; default that of the official archive. */
  expectedMd5?: string;
  /** Called as bytes arrive (a few times a second) and once when the download completes. */
  onProgress?: (progress: DownloadProgress) => void;
  /** The `fetch` to use; default the global one. */
  fetch?: typeof fetch;
  /** Keep the verified `.tar.gz` after extracting it; default true. */
  keepArchive?: boolean;
  /**
   * Download and extract when the folder is missing; default true. With `false`, only a folder
   * already in place is used: nothing is created, written or fetched.
   */
  download?: boolean;
}

/**
 * The default folder for downloaded datasets: `$XDG_CACHE_HOME/resnet-webgpu`, else
 * `~/.cache/resnet-webgpu`; on Windows `%LOCALAPPDATA%\resnet-webgpu`. Needs `--allow-env`.
 *
 * @throws {Error} when none of these variables is set.
 * @example
 * ```ts
 * import { data } from "@resnet/webgpu";
 * console.log(data.defaultDataDir()); // e.g. "/home/me/.cache/resnet-webgpu"
 * ```
 */
export function defaultDataDir(): string {
  if (Deno.build.os === "windows") {
    const local = Deno.env.get("LOCALAPPDATA");
    if (local) return joinPath(local, "resnet-webgpu");
  }
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  // The XDG spec says relative values are to be ignored.
  if (xdg && (xdg.startsWith("/") || /^[A-Za-z]:[\\/]/.test(xdg))) {
    return joinPath(xdg, "resnet-webgpu");
  }
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (home) return joinPath(joinPath(home, ".cache"), "resnet-webgpu");
  throw new Error(
    "defaultDataDir(): none of XDG_CACHE_HOME, HOME (or LOCALAPPDATA on Windows) is set; pass " +
      "a dataDir explicitly",
  );
}

async function exists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

function randomSuffix(): string {
  return Array.from(crypto.getRandomValues(new Uint32Array(2)), (v) => v.toString(16)).join("");
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

async function md5OfFile(path: string): Promise<string> {
  const hash = createHash("md5");
  const file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Makes sure CIFAR-10 is on disk and returns the path of its `cifar-10-batches-bin` folder. A
 * folder of that name already in `dataDir` (placed by hand, or by an earlier call) is used as it
 * is. Otherwise the archive is downloaded into `<dataDir>/cifar-10-binary.tar.gz.part`, resuming
 * a partial download with an HTTP Range request when the server allows it, checked against the
 * expected size and MD5, renamed to `cifar-10-binary.tar.gz`, and extracted through a temporary
 * folder that is renamed into place only once complete. Needs `--allow-read`, `--allow-write`
 * and `--allow-net` for the URL's host.
 *
 * @throws {Error} naming the URL and the folder to place the files in by hand when the download
 *   fails (an interrupted download is kept and resumed by the next call); saying so when the
 *   size or MD5 is wrong (a download is deleted; an archive that was already in `dataDir`, put
 *   there by hand, is kept and the error says what is wrong with it); naming the archive when
 *   extraction fails; naming the folder when `download` is false and it is missing.
 * @example
 * ```ts ignore
 * import { data } from "@resnet/webgpu";
 * const dir = await data.ensureCifar10({
 *   dataDir: data.defaultDataDir(),
 *   onProgress: (p) => console.log(`${(100 * p.receivedBytes / p.totalBytes).toFixed(1)}%`),
 * });
 * const { train, test } = await data.loadCifar10Folder(dir);
 * ```
 */
export async function ensureCifar10(options: EnsureCifar10Options): Promise<string> {
  const {
    dataDir,
    url = CIFAR10_URL,
    expectedSize = CIFAR10_SIZE,
    expectedMd5 = CIFAR10_MD5,
    onProgress,
    fetch: fetchFn = globalThis.fetch,
    keepArchive = true,
    download: downloading = true,
  } = options ?? {};
  if (typeof dataDir !== "string" || dataDir === "") {
    throw new TypeError(
      `ensureCifar10(): dataDir must be a folder path (e.g. data.defaultDataDir()), got ` +
        String(dataDir),
    );
  }
  if (!Number.isSafeInteger(expectedSize) || expectedSize <= 0) {
    throw new RangeError(`ensureCifar10(): expectedSize must be a positive integer`);
  }
  if (typeof expectedMd5 !== "string" || !/^[0-9a-fA-F]{32}$/.test(expectedMd5)) {
    throw new RangeError(`ensureCifar10(): expectedMd5 must be 32 hex digits, got ${expectedMd5}`);
  }
  const folder = joinPath(dataDir, CIFAR10_FOLDER);
  const found = await exists(folder);
  if (found?.isDirectory) return folder;
  if (found) {
    throw new Error(`ensureCifar10(): ${folder} exists but is not a folder; remove it`);
  }
  const archive = joinPath(dataDir, ARCHIVE_NAME);
  const job = { url, archive, folder, expectedSize, expectedMd5: expectedMd5.toLowerCase() };
  if (!downloading) {
    throw new Error(
      `CIFAR-10 is not in ${folder}, and this call does not download; pass the --data-dir that ` +
        `holds ${CIFAR10_FOLDER}/, or ${byHand(job)}`,
    );
  }
  await Deno.mkdir(dataDir, { recursive: true });

  const present = await exists(archive);
  if (present) {
    // Only a verified download is renamed to this name, but a user may have put a file there:
    // it is never deleted; the user is told what is wrong with it.
    if (!present.isFile) {
      throw new Error(`ensureCifar10(): ${archive} exists but is not a regular file; remove it`);
    }
    const md5 = present.size === expectedSize ? await md5OfFile(archive) : "";
    if (present.size !== expectedSize || md5 !== job.expectedMd5) {
      const what = present.size !== expectedSize
        ? `its size is ${present.size} bytes, expected ${expectedSize}`
        : `its MD5 is ${md5}, expected ${job.expectedMd5}`;
      throw new Error(
        `${archive} is not the CIFAR-10 archive: ${what}. It was left as it is; remove or ` +
          "rename it to download a fresh copy, or replace it with the archive from " + url,
      );
    }
    return await extractInto(archive, dataDir, folder, keepArchive);
  }
  // A fetch of the caller's own may not use the network at all.
  if (fetchFn === globalThis.fetch) await askForNetwork(job);
  await download(job, fetchFn, onProgress);
  return await extractInto(archive, dataDir, folder, keepArchive);
}

/**
 * Asks for network access to the download's host when it has not been granted or denied yet (a
 * prompt on a terminal), so a run needs `--allow-net` only when it downloads.
 */
async function askForNetwork(job: DownloadJob): Promise<void> {
  let host: string;
  try {
    host = new URL(job.url).host;
  } catch {
    return; // fetch() reports the bad URL
  }
  const descriptor = { name: "net", host } as const;
  let state = (await Deno.permissions.query(descriptor)).state;
  if (state === "prompt") state = (await Deno.permissions.request(descriptor)).state;
  if (state !== "granted") {
    throw new Error(
      `Downloading CIFAR-10 needs network access to ${host}, which this process does not have: ` +
        `run with --allow-net=${host}, or ${byHand(job)}`,
    );
  }
}

interface DownloadJob {
  url: string;
  archive: string;
  folder: string;
  expectedSize: number;
  expectedMd5: string;
}

function byHand(job: DownloadJob): string {
  return `download ${job.url} yourself and extract it so that its files are in ` +
    `${job.folder}/ (${CIFAR10_TRAIN_FILES[0]} … ${CIFAR10_TRAIN_FILES.at(-1)}, ` +
    `${CIFAR10_TEST_FILE}, ${CIFAR10_META_FILE}); that folder is then used as it is`;
}

function networkError(job: DownloadJob, what: string, cause?: unknown): Error {
  return new Error(
    `Could not download CIFAR-10 from ${job.url}: ${what}. Check the network connection, or ` +
      byHand(job),
    { cause },
  );
}

/** Downloads `job.url` to `job.archive` through a resumable `.part` file, verified. */
async function download(
  job: DownloadJob,
  fetchFn: typeof fetch,
  onProgress?: (progress: DownloadProgress) => void,
): Promise<void> {
  const part = `${job.archive}.part`;
  let start = (await exists(part))?.size ?? 0;
  if (start > job.expectedSize) {
    await Deno.remove(part);
    start = 0;
  }
  let response: Response | null = null;
  while (start < job.expectedSize && response === null) {
    // identity: a server that gzips on the fly would otherwise hand fetch() bytes it unpacks.
    const headers: Record<string, string> = { "Accept-Encoding": "identity" };
    if (start > 0) headers.Range = `bytes=${start}-`;
    let answer: Response;
    try {
      answer = await fetchFn(job.url, { headers });
    } catch (cause) {
      throw networkError(job, (cause as Error).message ?? String(cause), cause);
    }
    if (answer.status === 200) {
      start = 0; // the server ignored the Range request: start over
      response = answer;
    } else if (answer.status === 206 && start > 0) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(answer.headers.get("content-range") ?? "");
      if (range && Number(range[1]) === start) {
        response = answer;
      } else {
        await answer.body?.cancel();
        await Deno.remove(part);
        start = 0;
      }
    } else if (answer.status === 416 && start > 0) {
      // The server cannot extend our partial file: it is not a prefix of this resource.
      await answer.body?.cancel();
      await Deno.remove(part);
      start = 0;
    } else {
      await answer.body?.cancel();
      throw networkError(job, `the server answered ${answer.status} ${answer.statusText}`);
    }
  }

  if (response) {
    const total = response.status === 206
      ? Number(/\/(\d+)$/.exec(response.headers.get("content-range") ?? "")?.[1] ?? NaN)
      : Number(response.headers.get("content-length") ?? NaN);
    if (Number.isFinite(total) && total !== job.expectedSize) {
      await response.body?.cancel();
      await Deno.remove(part).catch(() => {});
      throw new Error(
        `Downloading CIFAR-10 from ${job.url}: the server's file is ${total} bytes, not the ` +
          `expected ${job.expectedSize}; the download was deleted. The URL may be wrong, or ` +
          byHand(job),
      );
    }
    await receive(job, response, part, start, onProgress);
  }

  const size = (await exists(part))?.size ?? 0;
  const md5 = size === job.expectedSize ? await md5OfFile(part) : "";
  if (size !== job.expectedSize || md5 !== job.expectedMd5) {
    await Deno.remove(part).catch(() => {});
    const what = size !== job.expectedSize
      ? `its size is ${size} bytes, expected ${job.expectedSize}`
      : `its MD5 is ${md5}, expected ${job.expectedMd5}`;
    throw new Error(
      `The CIFAR-10 download from ${job.url} is corrupt: ${what}; the download was deleted. ` +
        `Try again, or ${byHand(job)}`,
    );
  }
  await Deno.rename(part, job.archive);
}

/** Streams `response`'s body onto `part` (appending from `start`), reporting progress. */
async function receive(
  job: DownloadJob,
  response: Response,
  part: string,
  start: number,
  onProgress?: (progress: DownloadProgress) => void,
): Promise<void> {
  const body = response.body;
  if (!body) throw networkError(job, "the server sent no data");
  const file = await Deno.open(
    part,
    start > 0 ? { append: true } : {
      write: true,
      create: true,
      truncate: true,
    },
  );
  const began = performance.now();
  let received = start;
  let lastReport = -Infinity;
  const report = (force: boolean) => {
    const now = performance.now();
    if (!onProgress || (!force && now - lastReport < PROGRESS_INTERVAL_MS)) return;
    lastReport = now;
    const seconds = (now - began) / 1000;
    const bytesPerSecond = seconds > 0 ? (received - start) / seconds : 0;
    const left = job.expectedSize - received;
    onProgress({
      receivedBytes: received,
      totalBytes: job.expectedSize,
      bytesPerSecond,
      etaSeconds: left === 0 ? 0 : bytesPerSecond > 0 ? left / bytesPerSecond : Infinity,
    });
  };
  const reader = body.getReader();
  try {
    report(true);
    while (true) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (cause) {
        throw networkError(
          job,
          `the transfer broke off after ${received} of ${job.expectedSize} bytes ` +
            `(${(cause as Error).message}); the partial download is kept and the next call ` +
            "resumes it",
          cause,
        );
      }
      if (chunk.done) break;
      if (received + chunk.value.length > job.expectedSize) {
        // Keep the prefix only; the size check after this function deletes it as corrupt.
        await reader.cancel().catch(() => {});
        received += chunk.value.length;
        break;
      }
      await writeAll(file, chunk.value);
      received += chunk.value.length;
      report(false);
    }
    await file.syncData();
  } finally {
    file.close();
    reader.releaseLock();
  }
  if (received > job.expectedSize) {
    await Deno.remove(part).catch(() => {});
    throw new Error(
      `The CIFAR-10 download from ${job.url} is corrupt: the server sent more than the ` +
        `expected ${job.expectedSize} bytes; the download was deleted. ${byHand(job)}`,
    );
  }
  if (received < job.expectedSize) {
    throw networkError(
      job,
      `the transfer ended after ${received} of ${job.expectedSize} bytes; the partial download ` +
        "is kept and the next call resumes it",
    );
  }
  report(true);
}

/**
 * Extracts the `.tar.gz` at `archive` into `<dataDir>/.extract-<random>` and renames its
 * `cifar-10-batches-bin` folder to `folder`; the temporary folder is removed whatever happens.
 */
async function extractInto(
  archive: string,
  dataDir: string,
  folder: string,
  keepArchive: boolean,
): Promise<string> {
  const temporary = joinPath(dataDir, `.extract-${randomSuffix()}`);
  await Deno.mkdir(temporary);
  try {
    const source = await Deno.open(archive);
    const stream = source.readable.pipeThrough(new DecompressionStream("gzip"));
    for await (const entry of readTar(stream)) {
      const target = joinPath(temporary, entry.path);
      if (entry.type === "directory") {
        await Deno.mkdir(target, { recursive: true });
      } else if (entry.type === "file") {
        const slash = entry.path.lastIndexOf("/");
        if (slash > 0) {
          await Deno.mkdir(joinPath(temporary, entry.path.slice(0, slash)), { recursive: true });
        }
        const file = await Deno.open(target, { write: true, create: true, truncate: true });
        try {
          for await (const chunk of entry.body()) await writeAll(file, chunk);
          await file.syncData();
        } finally {
          file.close();
        }
      }
      // Links and special files are never created: CIFAR-10 has none and they could escape.
    }
    const extracted = joinPath(temporary, CIFAR10_FOLDER);
    const missing = [];
    for (const name of [...CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE]) {
      if (!(await exists(joinPath(extracted, name)))?.isFile) missing.push(name);
    }
    if (missing.length > 0) {
      throw new Error(
        `the archive has no ${CIFAR10_FOLDER}/${missing[0]}` +
          (missing.length > 1 ? ` (nor ${missing.length - 1} other expected files)` : ""),
      );
    }
    try {
      await Deno.rename(extracted, folder);
    } catch (error) {
      // Another process may have finished first; its folder is as good as ours.
      if (!(await exists(folder))?.isDirectory) throw error;
    }
  } catch (cause) {
    throw new Error(
      `Extracting CIFAR-10 from ${archive} failed: ${(cause as Error).message ?? cause}. Remove ` +
        `the archive to download it again, or place the files in ${folder}/ by hand.`,
      { cause },
    );
  } finally {
    await Deno.remove(temporary, { recursive: true }).catch(() => {});
  }
  if (!keepArchive) await Deno.remove(archive).catch(() => {});
  return folder;
}
