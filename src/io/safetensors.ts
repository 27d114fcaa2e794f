/**
 * Reading and writing the safetensors format (Hugging Face's tensor container, also what
 * PyTorch's `safetensors.torch.save_file` writes), so checkpoints move between this library and
 * PyTorch with the same state-dict keys.
 *
 * Layout: an 8-byte little-endian u64 `N`, then `N` bytes of UTF-8 JSON
 * `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, …}`, then
 * the data buffer. Offsets count from the start of the data buffer; the entries must tile it
 * exactly, and values are little-endian, row-major.
 *
 * @module
 */
import { formatShape, Tensor } from "../tensor.ts";

/** A header larger than this is refused as absurd, as the reference implementation does. */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * The most tensors one file may hold. A ResNet-1202 checkpoint with its optimizer state holds
 * about 6,000; a file of a million tiny tensors is refused before any tensor is decoded.
 */
export const MAX_SAFETENSORS_TENSORS = 100_000;

/** The most dimensions a tensor may have. */
const MAX_RANK = 16;

/** Tensor names in error messages are cut to this many characters. */
const MAX_NAME_IN_MESSAGE = 80;

/** A value for an error message, cut short when very long. */
function clip(text: string): string {
  return text.length > MAX_NAME_IN_MESSAGE
    ? `${text.slice(0, MAX_NAME_IN_MESSAGE)}… (${text.length} characters)`
    : text;
}

/** A tensor name for an error message: quoted, and cut short when very long. */
export function quoteName(name: string): string {
  const cut = name.length > MAX_NAME_IN_MESSAGE
    ? `${name.slice(0, MAX_NAME_IN_MESSAGE)}…" (${name.length} characters)`
    : `${name}"`;
  return `"${cut}`;
}

/** Bytes per element of every dtype this module reads. */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/**
 * The reference writer lays tensors out by descending dtype (its enum order), then by name, so
 * each tensor starts at a multiple of its element size; higher rank comes first here.
 */
const WRITE_ORDER: Readonly<Record<string, number>> = { I64: 1, F32: 0 };

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** One tensor to encode: its values in row-major order and the dtype to store them as. */
export interface SafetensorsEntry {
  /** The tensor's key, e.g. `blocks.0.conv1.weight`. */
  name: string;
  /** Sizes outermost first, e.g. `[N, C, H, W]`; `[]` for a scalar. */
  shape: readonly number[];
  /** `F32` (float32) or `I64` (int64, as PyTorch's `num_batches_tracked`). */
  dtype: "F32" | "I64";
  /** The values: a `Float32Array` for `F32`, a `BigInt64Array` for `I64`. */
  data: Float32Array | BigInt64Array;
}

/** One decoded tensor: its stored dtype and shape, and its values converted to float32. */
export interface DecodedTensor {
  /** The dtype stored in the file, e.g. `F16`. */
  dtype: string;
  /** Sizes outermost first; `[]` for a scalar. */
  shape: number[];
  /** The values, converted to float32, row-major. */
  values: Float32Array;
}

/** Options of {@link loadSafetensors}. */
export interface LoadSafetensorsOptions {
  /** An object that receives the file's `__metadata__` entries (string to string). */
  metadata?: Record<string, string>;
}

/** A parsed and validated header; offsets are relative to the data buffer. */
interface ParsedHeader {
  metadata: Record<string, string>;
  entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[];
}

/** Names the source of the bytes in error messages. */
function describe(source: string | undefined): string {
  return source === undefined ? "Invalid safetensors data" : `Invalid safetensors file ${source}`;
}

/** Reads the 8-byte header length, checking it against the size of the whole file. */
function headerLength(prefix: Uint8Array, fileSize: number, source?: string): number {
  if (fileSize < 8) {
    throw new Error(
      `${describe(source)}: it is ${fileSize} bytes, shorter than the 8-byte header length`,
    );
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(
      `${describe(source)}: header length ${length} bytes is absurd (more than ` +
        `${MAX_HEADER_BYTES}); this is not a safetensors file or its first 8 bytes are corrupt`,
    );
  }
  const n = Number(length);
  if (8 + n > fileSize) {
    throw new Error(
      `${describe(source)}: header length ${n} bytes exceeds the ${fileSize - 8} bytes that ` +
        "follow the length field (truncated or not a safetensors file)",
    );
  }
  return n;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Parses and validates the JSON header against a data buffer of `dataLength` bytes. */
function parseHeader(headerBytes: Uint8Array, dataLength: number, source?: string): ParsedHeader {
  const where = describe(source);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new Error(`${where}: the header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new Error(`${where}: the header is not valid JSON (${(cause as Error).message})`, {
      cause,
    });
  }
  if (!isPlainObject(json)) {
    const kind = json === null ? "null" : Array.isArray(json) ? "an array" : typeof json;
    throw new Error(`${where}: the header must be a JSON object, got ${kind}`);
  }
  const names = Object.keys(json);
  const tensorCount = names.length - (Object.hasOwn(json, "__metadata__") ? 1 : 0);
  if (tensorCount > MAX_SAFETENSORS_TENSORS) {
    throw new Error(
      `${where}: it holds ${tensorCount} tensors, more than the ${MAX_SAFETENSORS_TENSORS} ` +
        "one file may hold here; this is not a model checkpoint",
    );
  }
  const metadata: Record<string, string> = {};
  const entries: ParsedHeader["entries"] = [];
  for (const [name, info] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (info === null) continue;
      if (!isPlainObject(info)) {
        throw new Error(`${where}: "__metadata__" must be an object of strings`);
      }
      for (const [key, value] of Object.entries(info)) {
        if (typeof value !== "string") {
          throw new Error(
            `${where}: "__metadata__" value of ${quoteName(key)} must be a string, got ` +
              `${clip(String(JSON.stringify(value)))}`,
          );
        }
        metadata[key] = value;
      }
      continue;
    }
    const tensor = `tensor ${quoteName(name)}`;
    if (!isPlainObject(info)) {
      throw new Error(`${where}: ${tensor} must be an object with dtype, shape and data_offsets`);
    }
    for (const field of ["dtype", "shape", "data_offsets"]) {
      if (!(field in info)) throw new Error(`${where}: ${tensor} has no "${field}"`);
    }
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new Error(
        `${where}: ${tensor} has unknown dtype ${
          clip(String(JSON.stringify(dtype)))
        } (supported: ` +
          `${Object.keys(DTYPE_BYTES).join(", ")})`,
      );
    }
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isCount)) {
      throw new Error(
        `${where}: ${tensor} shape must be an array of non-negative integers (at most ` +
          `${MAX_RANK}), got ` +
          clip(String(JSON.stringify(shape))),
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
      offsets[0] > offsets[1]
    ) {
      throw new Error(
        `${where}: ${tensor} data_offsets must be [begin, end] with 0 <= begin <= end, got ` +
          clip(String(JSON.stringify(offsets))),
      );
    }
    const [begin, end] = offsets as number[];
    const bytes = shape.reduce((a: number, d: number) => a * d, DTYPE_BYTES[dtype]);
    if (end - begin !== bytes) {
      throw new Error(
        `${where}: ${tensor} data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ` +
          `shape ${formatShape(shape)} of ${dtype} needs ${bytes}`,
      );
    }
    if (end > dataLength) {
      throw new Error(
        `${where}: ${tensor} data_offsets [${begin}, ${end}] run past the end of the ` +
          `${dataLength}-byte data buffer (truncated file)`,
      );
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }
  // Entries must tile the buffer: no overlap (aliasing), no gap (hidden bytes).
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous = "";
  for (const e of sorted) {
    if (e.begin < covered) {
      throw new Error(
        `${where}: tensor ${quoteName(e.name)} data_offsets [${e.begin}, ${e.end}] overlap ` +
          `tensor ${quoteName(previous)} (which ends at ${covered})`,
      );
    }
    if (e.begin > covered) {
      throw new Error(
        `${where}: data bytes [${covered}, ${e.begin}) belong to no tensor (before tensor ` +
          `${quoteName(e.name)}); offsets must cover the data buffer exactly`,
      );
    }
    covered = e.end;
    previous = e.name;
  }
  if (covered !== dataLength) {
    throw new Error(
      `${where}: data bytes [${covered}, ${dataLength}) belong to no tensor; offsets must ` +
        "cover the data buffer exactly",
    );
  }
  return { metadata, entries };
}

/** Converts `count` little-endian values of `dtype` starting at `bytes[0]` to float32. */
function toFloat32(dtype: string, bytes: Uint8Array, count: number): Float32Array {
  if (dtype === "F32" && LITTLE_ENDIAN_HOST) {
    // slice() copies into a fresh, aligned buffer.
    return new Float32Array(bytes.slice().buffer, 0, count);
  }
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case "F64":
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case "F16":
      for (let i = 0; i < count; i++) out[i] = halfToNumber(view.getUint16(2 * i, true));
      break;
    case "BF16": {
      // bfloat16 is the top half of a float32: shifting the bits back is exact.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      break;
    }
    case "I64":
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(8 * i, true));
      break;
    case "U64":
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigUint64(8 * i, true));
      break;
    case "I32":
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      break;
    case "U32":
      for (let i = 0; i < count; i++) out[i] = view.getUint32(4 * i, true);
      break;
    case "I16":
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      break;
    case "U16":
      for (let i = 0; i < count; i++) out[i] = view.getUint16(2 * i, true);
      break;
    case "I8":
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      break;
    case "U8":
      for (let i = 0; i < count; i++) out[i] = view.getUint8(i);
      break;
    case "BOOL":
      for (let i = 0; i < count; i++) out[i] = view.getUint8(i) === 0 ? 0 : 1;
      break;
    default:
      throw new Error(`safetensors: no decoder for dtype ${dtype}`);
  }
  return out;
}

/** IEEE 754 binary16 bits to a number: sign, 5-bit exponent (bias 15), 10-bit fraction. */
function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/**
 * Decodes a whole safetensors file held in memory, validating everything: the header length,
 * the JSON, each entry's dtype, shape and offsets, that the offsets tile the data buffer, and
 * that metadata values are strings. Values of every dtype are converted to float32 (integers
 * beyond 2^24 lose precision). Pure CPU.
 *
 * @param bytes the file's contents.
 * @param source how error messages name the bytes, e.g. the file's path.
 * @throws {Error} naming `source` and the problem when the bytes are not a valid file.
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "@resnet/webgpu";
 * const bytes = encodeSafetensors([
 *   { name: "w", shape: [2, 2], dtype: "F32", data: new Float32Array([1, 2, 3, 4]) },
 * ]);
 * const { tensors } = decodeSafetensors(bytes);
 * console.log(tensors.get("w")!.shape); // [2, 2]
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  source?: string,
): { metadata: Record<string, string>; tensors: Map<string, DecodedTensor> } {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`decodeSafetensors(): expects a Uint8Array, got ${typeof bytes}`);
  }
  const n = headerLength(bytes, bytes.length, source);
  const data = bytes.subarray(8 + n);
  const { metadata, entries } = parseHeader(bytes.subarray(8, 8 + n), data.length, source);
  const tensors = new Map<string, DecodedTensor>();
  for (const { name, dtype, shape, begin, end } of entries) {
    const count = (end - begin) / DTYPE_BYTES[dtype];
    tensors.set(name, { dtype, shape, values: toFloat32(dtype, data.subarray(begin, end), count) });
  }
  return { metadata, tensors };
}

/**
 * Encodes tensors as a safetensors file: `F32` or `I64` entries, laid out like the reference
 * writer (I64 first, then F32, each group by name, so every tensor is aligned to its element
 * size), the JSON header padded with spaces to a multiple of 8 bytes. Pure CPU.
 *
 * @param entries the tensors; names must be unique and not `__metadata__`.
 * @param metadata string-to-string pairs stored as `__metadata__`.
 * @throws {TypeError} when a dtype, data array or metadata value has the wrong type.
 * @throws {RangeError} when a shape is invalid or does not match the data's length, or a name
 *   repeats.
 * @example
 * ```ts
 * import { encodeSafetensors } from "@resnet/webgpu";
 * const bytes = encodeSafetensors(
 *   [{ name: "bias", shape: [3], dtype: "F32", data: new Float32Array([1, 2, 3]) }],
 *   { format: "pt" },
 * );
 * console.log(bytes.length % 8); // 0: header and F32 data are 8-byte padded here
 * ```
 */
export function encodeSafetensors(
  entries: readonly SafetensorsEntry[],
  metadata?: Record<string, string>,
): Uint8Array {
  const names = new Set<string>();
  for (const e of entries) {
    const what = `encodeSafetensors(): tensor "${e.name}"`;
    if (typeof e.name !== "string") {
      throw new TypeError(`encodeSafetensors(): names must be strings, got ${typeof e.name}`);
    }
    if (e.name === "__metadata__") {
      throw new RangeError(`encodeSafetensors(): "__metadata__" is reserved for the metadata`);
    }
    if (names.has(e.name)) throw new RangeError(`${what} appears twice`);
    names.add(e.name);
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) {
      throw new RangeError(
        `${what}: shape must be an array of non-negative integers, got ${String(e.shape)}`,
      );
    }
    const expected = e.dtype === "F32" ? Float32Array : e.dtype === "I64" ? BigInt64Array : null;
    if (expected === null) {
      throw new TypeError(`${what}: dtype must be "F32" or "I64", got ${String(e.dtype)}`);
    }
    if (!(e.data instanceof expected)) {
      throw new TypeError(`${what}: ${e.dtype} data must be a ${expected.name}`);
    }
    const size = e.shape.reduce((a, d) => a * d, 1);
    if (size !== e.data.length) {
      throw new RangeError(
        `${what}: shape ${formatShape(e.shape)} holds ${size} elements but data has ` +
          `${e.data.length}`,
      );
    }
  }
  for (const [key, value] of Object.entries(metadata ?? {})) {
    if (typeof value !== "string") {
      throw new TypeError(
        `encodeSafetensors(): metadata value of "${key}" must be a string, got ${typeof value}`,
      );
    }
  }
  const ordered = [...entries].sort((a, b) =>
    WRITE_ORDER[b.dtype] - WRITE_ORDER[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = { ...metadata };
  let offset = 0;
  for (const e of ordered) {
    const length = e.data.byteLength;
    header[e.name] = {
      dtype: e.dtype,
      shape: [...e.shape],
      data_offsets: [offset, offset + length],
    };
    offset += length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const e of ordered) {
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength), at);
    } else if (e.data instanceof Float32Array) {
      for (let i = 0; i < e.data.length; i++) view.setFloat32(at + 4 * i, e.data[i], true);
    } else {
      for (let i = 0; i < e.data.length; i++) view.setBigInt64(at + 8 * i, e.data[i], true);
    }
    at += e.data.byteLength;
  }
  return out;
}

/** A path or file URL as a string path, for messages and for naming the temporary file. */
function toPath(path: string | URL): string {
  if (typeof path === "string") return path;
  if (path.protocol !== "file:") {
    throw new TypeError(`safetensors: only file: URLs can be read or written, got ${path.href}`);
  }
  const decoded = decodeURIComponent(path.pathname);
  // file:///C:/x -> C:/x on Windows.
  return /^\/[A-Za-z]:\//.test(decoded) && Deno.build.os === "windows" ? decoded.slice(1) : decoded;
}

/** The folder holding `path` ("." for a bare name). */
function folderOf(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut < 0 ? "." : cut === 0 ? "/" : path.slice(0, cut);
}

async function readAll(path: string, caller: string): Promise<Uint8Array> {
  await checkRegularFile(path, caller);
  try {
    return await Deno.readFile(path);
  } catch (cause) {
    throw new Error(`${caller}: cannot read "${path}": ${(cause as Error).message}`, { cause });
  }
}

/**
 * Loads every tensor of a safetensors file onto the GPU as float32 (`F16`, `BF16`, `F64` and
 * integer dtypes are converted), keyed by name, in the file's order of keys. The whole file is
 * validated before any tensor is created.
 *
 * @param pathOrBytes a path, a `file:` URL, or the file's bytes.
 * @param options `metadata`: an object that receives the file's `__metadata__` entries.
 * @throws {Error} naming the file and the problem when it cannot be read or is malformed.
 * @example
 * ```ts
 * import { initGPU, loadSafetensors, saveSafetensors, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveSafetensors(path, { "0.conv.weight": Tensor.ones([16, 3, 3, 3]) }, { format: "pt" });
 * const metadata: Record<string, string> = {};
 * const state = await loadSafetensors(path, { metadata });
 * console.log(state.get("0.conv.weight")?.shape, metadata.format); // [16, 3, 3, 3] "pt"
 * ```
 */
export async function loadSafetensors(
  pathOrBytes: string | URL | Uint8Array,
  options: LoadSafetensorsOptions = {},
): Promise<Map<string, Tensor>> {
  let decoded;
  if (pathOrBytes instanceof Uint8Array) {
    decoded = decodeSafetensors(pathOrBytes);
  } else {
    const path = toPath(pathOrBytes);
    decoded = decodeSafetensors(await readAll(path, "loadSafetensors()"), `"${path}"`);
  }
  if (options.metadata) Object.assign(options.metadata, decoded.metadata);
  const tensors = new Map<string, Tensor>();
  try {
    for (const [name, { shape, values }] of decoded.tensors) {
      tensors.set(name, Tensor.from(values, shape));
    }
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw error;
  }
  return tensors;
}

/** A tensor's entry in a safetensors header: what {@link readSafetensorsHeader} reports. */
export interface SafetensorsHeaderEntry {
  /** The tensor's key. */
  name: string;
  /** The dtype stored in the file, e.g. `F32`. */
  dtype: string;
  /** Sizes outermost first; `[]` for a scalar. */
  shape: number[];
}

/**
 * The header of a safetensors file: its `__metadata__` map (`{}` when it has none) and each
 * tensor's name, dtype and shape, in the file's order. For a path, reads only the header (never
 * the data), yet validates it against the file's size like {@link loadSafetensors}, so a
 * checkpoint's names and shapes can be checked before any tensor is read or uploaded.
 *
 * @param pathOrBytes a path, a `file:` URL, or the file's bytes.
 * @throws {Error} naming the file and the problem when it cannot be read or is malformed (also
 *   when it is not a regular file, or holds more than {@link MAX_SAFETENSORS_TENSORS} tensors).
 * @example
 * ```ts
 * import { encodeSafetensors, readSafetensorsHeader } from "@resnet/webgpu";
 * const bytes = encodeSafetensors(
 *   [{ name: "w", shape: [2, 3], dtype: "F32", data: new Float32Array(6) }],
 *   { format: "pt" },
 * );
 * const { metadata, tensors } = await readSafetensorsHeader(bytes);
 * console.log(metadata.format, tensors); // pt [ { name: "w", dtype: "F32", shape: [ 2, 3 ] } ]
 * ```
 */
export async function readSafetensorsHeader(
  pathOrBytes: string | URL | Uint8Array,
): Promise<{ metadata: Record<string, string>; tensors: SafetensorsHeaderEntry[] }> {
  const header = await readHeader(pathOrBytes, "readSafetensorsHeader()");
  return {
    metadata: header.metadata,
    tensors: header.entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
  };
}

/**
 * The `__metadata__` map of a safetensors file (`{}` when it has none). For a path, reads only
 * the header, yet validates it against the file's size like {@link loadSafetensors}.
 *
 * @param pathOrBytes a path, a `file:` URL, or the file's bytes.
 * @throws {Error} naming the file and the problem when it cannot be read or is malformed.
 * @example
 * ```ts
 * import { encodeSafetensors, readSafetensorsMetadata } from "@resnet/webgpu";
 * const bytes = encodeSafetensors([], { format: "pt" });
 * console.log(await readSafetensorsMetadata(bytes)); // { format: "pt" }
 * ```
 */
export async function readSafetensorsMetadata(
  pathOrBytes: string | URL | Uint8Array,
): Promise<Record<string, string>> {
  return (await readHeader(pathOrBytes, "readSafetensorsMetadata()")).metadata;
}

/** Reads and validates the header only (for a path, without reading the data). */
async function readHeader(
  pathOrBytes: string | URL | Uint8Array,
  caller: string,
): Promise<ParsedHeader> {
  if (pathOrBytes instanceof Uint8Array) {
    const n = headerLength(pathOrBytes, pathOrBytes.length);
    return parseHeader(pathOrBytes.subarray(8, 8 + n), pathOrBytes.length - 8 - n);
  }
  const path = toPath(pathOrBytes);
  const source = `"${path}"`;
  await checkRegularFile(path, caller);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (cause) {
    throw new Error(`${caller}: cannot read "${path}": ${(cause as Error).message}`, { cause });
  }
  try {
    const size = (await file.stat()).size;
    const prefix = await readExactly(file, Math.min(8, size));
    const n = headerLength(prefix, size, source);
    return parseHeader(await readExactly(file, n), size - 8 - n, source);
  } finally {
    file.close();
  }
}

/**
 * Refuses a path that is not a regular file (a FIFO would block the read, a device such as
 * `/dev/zero` would never end), following symbolic links.
 */
async function checkRegularFile(path: string, caller: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (cause) {
    throw new Error(`${caller}: cannot read "${path}": ${(cause as Error).message}`, { cause });
  }
  if (!info.isFile) {
    throw new Error(
      `${caller}: "${path}" is not a regular file (it is a ${
        info.isDirectory ? "folder" : "device, FIFO or socket"
      }); pass the path of a .safetensors file`,
    );
  }
}

async function readExactly(file: Deno.FsFile, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const got = await file.read(out.subarray(filled));
    if (got === null) break;
    filled += got;
  }
  return out.subarray(0, filled);
}

/**
 * Saves tensors as a safetensors file that PyTorch reads with `safetensors.torch.load_file`:
 * float32 (`F32`) for every tensor, except names ending in `num_batches_tracked`, saved as int64
 * (`I64`) like PyTorch's BatchNorm buffer so that `load_state_dict` accepts the file. The file is
 * written atomically: to `<path>.tmp-<random>` in the same folder, flushed to disk, then renamed
 * over `path`, so a crash never leaves a half-written checkpoint.
 *
 * @param path where to write, a path or `file:` URL; its folder must exist.
 * @param tensors the tensors by name (a state dict), any shape including `[]`.
 * @param metadata string-to-string pairs stored as `__metadata__`.
 * @throws {Error} when the folder does not exist (naming it) or the file cannot be written.
 * @example
 * ```ts
 * import { initGPU, saveSafetensors, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveSafetensors(path, {
 *   "1.weight": Tensor.randn([10, 64], { seed: 0 }),
 *   "1.bias": Tensor.zeros([10]),
 * }, { format: "pt" });
 * ```
 */
export async function saveSafetensors(
  path: string | URL,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const target = toPath(path);
  const pairs = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of pairs) {
    if (!(t instanceof Tensor)) {
      throw new TypeError(`saveSafetensors(): "${name}" is not a Tensor (got ${typeof t})`);
    }
  }
  // All readbacks are encoded before the first wait, so the GPU is waited on once.
  const values = await Promise.all(pairs.map(async ([name, t]) => {
    try {
      return await t.toArray();
    } catch (cause) {
      throw new Error(
        `saveSafetensors(): cannot read tensor "${name}": ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
  }));
  const entries: SafetensorsEntry[] = pairs.map(([name, t], i) =>
    name.endsWith("num_batches_tracked")
      ? { name, shape: t.shape, dtype: "I64", data: toInt64(name, values[i]) }
      : { name, shape: t.shape, dtype: "F32", data: values[i] }
  );
  await writeAtomically(target, encodeSafetensors(entries, metadata));
}

function toInt64(name: string, values: Float32Array): BigInt64Array {
  return BigInt64Array.from(values, (v) => {
    if (!Number.isFinite(v)) {
      throw new RangeError(`saveSafetensors(): "${name}" is stored as I64 but holds ${v}`);
    }
    return BigInt(Math.round(v));
  });
}

/** Writes `bytes` to a temporary file beside `target`, syncs it, and renames it over `target`. */
async function writeAtomically(target: string, bytes: Uint8Array): Promise<void> {
  const folder = folderOf(target);
  const suffix = crypto.getRandomValues(new Uint32Array(2)).reduce(
    (s, v) => s + v.toString(16).padStart(8, "0"),
    "",
  );
  const temporary = `${target}.tmp-${suffix}`;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(temporary, { write: true, createNew: true });
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(
        `saveSafetensors(): cannot write "${target}": folder "${folder}" does not exist`,
        { cause },
      );
    }
    throw new Error(`saveSafetensors(): cannot write "${target}": ${(cause as Error).message}`, {
      cause,
    });
  }
  try {
    try {
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(temporary, target);
  } catch (cause) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(`saveSafetensors(): cannot write "${target}": ${(cause as Error).message}`, {
      cause,
    });
  }
}
