/**
 * A streaming tar reader: ustar headers (POSIX and GNU magic), regular files and directories,
 * with PAX `path`/`size` records and GNU long names. Every header's checksum is verified and
 * every path is checked before it is handed out, so an archive cannot write outside the folder
 * it is extracted into.
 *
 * @module
 */

const BLOCK = 512;

/** What a tar entry is. Extractors create only `"file"` and `"directory"` entries. */
export type TarEntryType = "file" | "directory" | "symlink" | "hardlink" | "other";

/** One entry of a tar archive, as {@link readTar} yields it. */
export interface TarEntry {
  /**
   * The entry's relative path with `/` separators, without a leading `./` or a trailing `/`;
   * never absolute and never holding a `..` component.
   */
  path: string;
  /** What the entry is. */
  type: TarEntryType;
  /** Size of the entry's data in bytes (0 for directories). */
  size: number;
  /** Permission bits from the header, e.g. `0o644`. */
  mode: number;
  /**
   * The entry's data, in chunks, read straight from the archive. Read it before asking for the
   * next entry; whatever is not read is skipped.
   */
  body(): AsyncIterable<Uint8Array>;
}

/** Pulls exact byte counts from a stream of arbitrarily sized chunks. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  /** Bytes consumed so far: the archive offset, for error messages. */
  offset = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Up to `max` bytes (fewer only at the end of the stream, empty there). */
  async next(max: number): Promise<Uint8Array> {
    if (this.#chunk.length === 0) {
      const { done, value } = await this.#reader.read();
      if (done) return new Uint8Array(0);
      this.#chunk = value;
    }
    const out = this.#chunk.subarray(0, max);
    this.#chunk = this.#chunk.subarray(out.length);
    this.offset += out.length;
    return out;
  }

  /** Exactly `n` bytes, or fewer if the stream ends first. */
  async exactly(n: number): Promise<Uint8Array> {
    const first = await this.next(n);
    if (first.length === n || first.length === 0) return first.slice();
    const out = new Uint8Array(n);
    out.set(first);
    let filled = first.length;
    while (filled < n) {
      const part = await this.next(n - filled);
      if (part.length === 0) return out.subarray(0, filled);
      out.set(part, filled);
      filled += part.length;
    }
    return out;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

function ascii(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Parses an octal numeric field (NUL/space padded) or GNU's base-256 form. */
function numeric(bytes: Uint8Array, field: string, offset: number): number {
  if (bytes[0] & 0x80) {
    let value = bytes[0] & 0x7f;
    for (let i = 1; i < bytes.length; i++) value = value * 256 + bytes[i];
    return value;
  }
  const text = ascii(bytes).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw new Error(
      `Invalid tar archive: the ${field} field of the header at byte ${offset} is "${text}", ` +
        "not an octal number",
    );
  }
  return parseInt(text, 8);
}

/** The header checksum: the sum of all bytes with the checksum field counted as spaces. */
function checksumOf(header: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return { unsigned, signed };
}

/**
 * Normalises a tar path and refuses one that could escape the extraction folder: absolute paths,
 * Windows drive or UNC paths, backslashes and `..` components.
 *
 * @throws {Error} naming the path when it is unsafe or empty.
 */
export function safeTarPath(name: string): string {
  const refuse = (why: string) =>
    new Error(`Refusing tar entry "${name}": ${why} (it could write outside the target folder)`);
  if (name.includes("\0")) throw refuse("it contains a NUL character");
  if (name.includes("\\")) throw refuse("it contains a backslash");
  if (name.startsWith("/")) throw refuse("it is an absolute path");
  if (/^[A-Za-z]:/.test(name)) throw refuse("it starts with a drive letter");
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse("it holds a '..' component");
  if (parts.length === 0) throw new Error(`Invalid tar entry: the path "${name}" is empty`);
  return parts.join("/");
}

/** Parses PAX extended header records `"<length> <key>=<value>\n"`. */
function parsePax(bytes: Uint8Array, offset: number): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < bytes.length) {
    const space = bytes.indexOf(0x20, at);
    const length = space < 0 ? NaN : Number(new TextDecoder().decode(bytes.subarray(at, space)));
    if (!Number.isInteger(length) || length <= 0 || at + length > bytes.length) {
      if (bytes.subarray(at).every((b) => b === 0)) break;
      throw new Error(`Invalid tar archive: malformed PAX header record at byte ${offset + at}`);
    }
    const record = new TextDecoder().decode(bytes.subarray(space + 1, at + length - 1));
    const eq = record.indexOf("=");
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1));
    at += length;
  }
  return records;
}

async function* chunksOf(
  reader: ByteReader,
  size: number,
  path: string,
  state: { remaining: number },
): AsyncGenerator<Uint8Array> {
  while (state.remaining > 0) {
    const part = await reader.next(Math.min(state.remaining, 1 << 20));
    if (part.length === 0) {
      throw new Error(
        `Invalid tar archive: it ends inside "${path}" (${size - state.remaining} of ${size} ` +
          "bytes present); the archive is truncated",
      );
    }
    state.remaining -= part.length;
    yield part;
  }
}

async function skip(reader: ByteReader, n: number, what: string): Promise<void> {
  let left = n;
  while (left > 0) {
    const part = await reader.next(Math.min(left, 1 << 20));
    if (part.length === 0) {
      throw new Error(`Invalid tar archive: it ends inside ${what}; the archive is truncated`);
    }
    left -= part.length;
  }
}

/**
 * Reads a tar archive from a byte stream (e.g. a file's `readable` piped through
 * `DecompressionStream("gzip")`) and yields its entries one by one, never holding more than one
 * chunk of file data in memory. Each header's checksum is verified and each path passed through
 * {@link safeTarPath}.
 *
 * @throws {Error} naming the byte offset when a header is corrupt or its checksum is wrong, the
 *   archive ends early, or an entry's path is unsafe.
 * @example
 * ```ts
 * import { readTar } from "./_tar.ts";
 * // An empty archive is two zero blocks.
 * const archive = new Blob([new Uint8Array(1024)]).stream();
 * for await (const entry of readTar(archive)) console.log(entry.path);
 * ```
 */
export async function* readTar(stream: ReadableStream<Uint8Array>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(stream);
  let pax = new Map<string, string>();
  let longName: string | null = null;
  try {
    while (true) {
      const at = reader.offset;
      const header = await reader.exactly(BLOCK);
      if (header.length === 0) return; // some writers omit the end-of-archive blocks
      if (header.length < BLOCK) {
        throw new Error(
          `Invalid tar archive: it ends inside the header at byte ${at}; the archive is truncated`,
        );
      }
      if (header.every((b) => b === 0)) return;
      const stored = numeric(header.subarray(148, 156), "checksum", at);
      const { unsigned, signed } = checksumOf(header);
      if (stored !== unsigned && stored !== signed) {
        throw new Error(
          `Invalid tar archive: header checksum mismatch at byte ${at} (stored ${stored}, ` +
            `computed ${unsigned}); the archive is corrupt or not a tar file`,
        );
      }
      const magic = ascii(header.subarray(257, 263));
      let name = ascii(header.subarray(0, 100));
      const prefix = magic === "ustar" ? ascii(header.subarray(345, 500)) : "";
      if (prefix !== "") name = `${prefix}/${name}`;
      let size = numeric(header.subarray(124, 136), "size", at);
      const mode = numeric(header.subarray(100, 108), "mode", at);
      const flag = String.fromCharCode(header[156]);

      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        const what = `the ${flag} header at byte ${at}`;
        const padded = Math.ceil(size / BLOCK) * BLOCK;
        if (size > 1 << 24) throw new Error(`Invalid tar archive: ${what} is ${size} bytes`);
        const body = await reader.exactly(size);
        if (body.length < size) {
          throw new Error(`Invalid tar archive: it ends inside ${what}; the archive is truncated`);
        }
        await skip(reader, padded - size, what);
        if (flag === "x") pax = parsePax(body, at + BLOCK);
        if (flag === "L") longName = ascii(body);
        continue; // global PAX headers and GNU long link names change nothing we use
      }

      if (longName !== null) name = longName;
      if (pax.has("path")) name = pax.get("path")!;
      if (pax.has("size")) {
        size = Number(pax.get("size"));
        if (!Number.isSafeInteger(size) || size < 0) {
          throw new Error(`Invalid tar archive: PAX size "${pax.get("size")}" at byte ${at}`);
        }
      }
      pax = new Map();
      longName = null;

      const type: TarEntryType = flag === "0" || flag === "\0" || flag === "7"
        ? (name.endsWith("/") ? "directory" : "file")
        : flag === "5"
        ? "directory"
        : flag === "2"
        ? "symlink"
        : flag === "1"
        ? "hardlink"
        : "other";
      const path = safeTarPath(name);
      const dataSize = type === "directory" ? 0 : size;
      const state = { remaining: dataSize };
      yield {
        path,
        type,
        size: dataSize,
        mode,
        body: () => chunksOf(reader, dataSize, path, state),
      };
      await skip(reader, state.remaining, `"${path}"`);
      await skip(reader, Math.ceil(size / BLOCK) * BLOCK - dataSize, `the padding after "${path}"`);
    }
  } finally {
    await reader.cancel();
  }
}
