/**
 * PyTorch checkpoints (`torch.save(model.state_dict(), path)`, the zip format PyTorch has written
 * since 1.6 and torchvision's published `.pth` weights use) read and written without PyTorch.
 *
 * Reading never runs or trusts code: the pickle inside is interpreted by a restricted unpickler
 * that knows only what a state dict needs (dicts and `collections.OrderedDict`, tuples, lists,
 * strings, numbers, `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, and storages
 * `torch.FloatStorage`, `HalfStorage`, `BFloat16Storage`, `DoubleStorage`, `LongStorage`,
 * `IntStorage`, `ShortStorage`, `CharStorage`, `ByteStorage`, `BoolStorage`), and throws a
 * {@link TorchCheckpointError} naming any other opcode or global. Every size, offset and stride
 * is checked against the storage it indexes before a value is read.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import type { DecodedTensor, SafetensorsEntry } from "./safetensors.ts";

/**
 * A PyTorch checkpoint that cannot be read: not a zip written by `torch.save`, damaged, or
 * holding a pickle opcode or global that a state dict does not need (refused, never run).
 *
 * @example
 * ```ts
 * import { decodeTorchCheckpoint, TorchCheckpointError } from "@resnet/webgpu";
 * try {
 *   await decodeTorchCheckpoint(new Uint8Array([1, 2, 3]));
 * } catch (error) {
 *   console.log(error instanceof TorchCheckpointError); // true
 * }
 * ```
 */
export class TorchCheckpointError extends Error {
  /** `"TorchCheckpointError"`. */
  override name = "TorchCheckpointError";
}

// ---- zip -------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  crc: number;
  localOffset: number;
}

/** At most this many entries in the central directory (a state dict has one per storage). */
const MAX_ENTRIES = 1 << 20;

function fail(where: string, message: string): never {
  throw new TorchCheckpointError(`${where}: ${message}`);
}

/** The central directory of the zip `bytes`. */
function readZipDirectory(bytes: Uint8Array, where: string): ZipEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 22) fail(where, "not a PyTorch checkpoint (too short to be a zip file)");
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    fail(
      where,
      "not a PyTorch zip checkpoint (no zip end record); files written by torch.save before " +
        "PyTorch 1.6 (or with _use_new_zipfile_serialization=False) are not supported",
    );
  }
  let count = view.getUint16(eocd + 10, true);
  let dirSize = view.getUint32(eocd + 12, true);
  let dirOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || dirOffset === 0xffffffff || dirSize === 0xffffffff) {
    // Zip64: the locator sits right before the end record.
    const loc = eocd - 20;
    if (loc < 0 || view.getUint32(loc, true) !== 0x07064b50) fail(where, "damaged zip64 locator");
    const rec = safeNumber(view.getBigUint64(loc + 8, true), where);
    if (rec + 56 > bytes.length || view.getUint32(rec, true) !== 0x06064b50) {
      fail(where, "damaged zip64 end record");
    }
    count = safeNumber(view.getBigUint64(rec + 32, true), where);
    dirSize = safeNumber(view.getBigUint64(rec + 40, true), where);
    dirOffset = safeNumber(view.getBigUint64(rec + 48, true), where);
  }
  if (count > MAX_ENTRIES || dirOffset + dirSize > bytes.length) {
    fail(where, "damaged zip central directory (out of the file's bounds)");
  }
  const entries: ZipEntry[] = [];
  let p = dirOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > bytes.length || view.getUint32(p, true) !== 0x02014b50) {
      fail(where, `damaged zip central directory at entry ${i}`);
    }
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    let compressedSize = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLength = view.getUint16(p + 28, true);
    const extraLength = view.getUint16(p + 30, true);
    const commentLength = view.getUint16(p + 32, true);
    let localOffset = view.getUint32(p + 42, true);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > bytes.length) fail(where, `damaged zip central directory at entry ${i}`);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLength));
    // Zip64 sizes and offset, in the order the 0xffffffff fields appear.
    let q = p + 46 + nameLength;
    const extraEnd = q + extraLength;
    while (q + 4 <= extraEnd) {
      const id = view.getUint16(q, true);
      const length = view.getUint16(q + 2, true);
      if (q + 4 + length > extraEnd) fail(where, `damaged zip extra field in "${name}"`);
      if (id === 0x0001) {
        let r = q + 4;
        const next = () => {
          if (r + 8 > q + 4 + length) fail(where, `damaged zip64 field in "${name}"`);
          const v = safeNumber(view.getBigUint64(r, true), where);
          r += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      q += 4 + length;
    }
    entries.push({ name, method, compressedSize, size, crc, localOffset });
    p = end;
  }
  return entries;
}

function safeNumber(v: bigint, where: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(where, "damaged zip file (offset out of range)");
  return Number(v);
}

/** The bytes of `entry`, inflated when it is deflate-compressed. */
async function readZipEntry(bytes: Uint8Array, entry: ZipEntry, where: string) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const p = entry.localOffset;
  if (p + 30 > bytes.length || view.getUint32(p, true) !== 0x04034b50) {
    fail(where, `damaged zip entry "${entry.name}" (no local header)`);
  }
  const start = p + 30 + view.getUint16(p + 26, true) + view.getUint16(p + 28, true);
  if (start + entry.compressedSize > bytes.length) {
    fail(where, `damaged zip entry "${entry.name}" (its data runs past the end of the file)`);
  }
  const raw = bytes.subarray(start, start + entry.compressedSize);
  if (entry.method === 0) {
    if (entry.compressedSize !== entry.size) {
      fail(where, `damaged zip entry "${entry.name}" (stored sizes differ)`);
    }
    checkCrc(raw, entry, where);
    return raw;
  }
  if (entry.method !== 8) {
    fail(where, `zip entry "${entry.name}" uses compression method ${entry.method}`);
  }
  if (typeof DecompressionStream === "undefined") {
    fail(where, `zip entry "${entry.name}" is deflated and DecompressionStream is unavailable`);
  }
  // Inflate at most the declared size: a larger output is an error, not an allocation.
  const out = new Uint8Array(entry.size);
  let filled = 0;
  try {
    const stream = new Blob([raw as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
      new DecompressionStream("deflate-raw"),
    );
    for await (const chunk of stream) {
      if (filled + chunk.length > out.length) {
        fail(where, `zip entry "${entry.name}" inflates past its declared ${entry.size} bytes`);
      }
      out.set(chunk, filled);
      filled += chunk.length;
    }
  } catch (cause) {
    if (cause instanceof TorchCheckpointError) throw cause;
    fail(where, `zip entry "${entry.name}" does not inflate (${(cause as Error).message})`);
  }
  if (filled !== out.length) fail(where, `zip entry "${entry.name}" is shorter than declared`);
  checkCrc(out, entry, where);
  return out;
}

function checkCrc(data: Uint8Array, entry: ZipEntry, where: string): void {
  if (crc32(data) !== entry.crc) fail(where, `zip entry "${entry.name}" fails its CRC-32 check`);
}

// ---- the restricted unpickler ----------------------------------------------------------------

/** Storage classes a state dict may hold, with their dtype and bytes per element. */
const STORAGES: Record<string, { dtype: string; bytes: number }> = {
  FloatStorage: { dtype: "F32", bytes: 4 },
  HalfStorage: { dtype: "F16", bytes: 2 },
  BFloat16Storage: { dtype: "BF16", bytes: 2 },
  DoubleStorage: { dtype: "F64", bytes: 8 },
  LongStorage: { dtype: "I64", bytes: 8 },
  IntStorage: { dtype: "I32", bytes: 4 },
  ShortStorage: { dtype: "I16", bytes: 2 },
  CharStorage: { dtype: "I8", bytes: 1 },
  ByteStorage: { dtype: "U8", bytes: 1 },
  BoolStorage: { dtype: "BOOL", bytes: 1 },
};

const ALLOWED_GLOBALS = new Set([
  "collections OrderedDict",
  "torch._utils _rebuild_tensor_v2",
  "torch._utils _rebuild_parameter",
  ...Object.keys(STORAGES).map((s) => `torch ${s}`),
]);

class Global {
  constructor(readonly name: string) {}
}
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: string,
    readonly bytes: number,
    readonly numel: number,
  ) {}
}
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
  ) {}
}
/** A dict or OrderedDict; only string keys are kept. */
class Dict {
  readonly items = new Map<string, unknown>();
}
const MARK = Symbol("mark");

/** At most this many pickle opcodes, stack entries and memo entries. */
const MAX_OPS = 1 << 24;
const MAX_STACK = 1 << 20;
const MAX_DIMS = 16;

const OPCODE_NAMES: Record<number, string> = {
  0x63: "GLOBAL",
  0x93: "STACK_GLOBAL",
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x50: "PERSID",
  0x52: "REDUCE",
  0x62: "BUILD",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
};

function describe(v: unknown): string {
  if (v instanceof Global) return `global ${v.name}`;
  if (v instanceof TensorRef) return "a tensor";
  if (v instanceof StorageRef) return "a storage";
  if (v instanceof Dict) return "a dict";
  if (Array.isArray(v)) return "a tuple";
  return typeof v;
}

/** Runs the pickle `data` with only a state dict's opcodes and globals; returns its object. */
function unpickle(data: Uint8Array, storages: Map<string, number>, where: string): unknown {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let ops = 0;
  const need = (n: number, op: string) => {
    if (pos + n > data.length) fail(where, `pickle ends inside ${op}`);
  };
  const pop = (op: string): unknown => {
    if (stack.length === 0) fail(where, `pickle ${op} on an empty stack`);
    const v = stack.pop();
    if (v === MARK) fail(where, `pickle ${op} found a MARK`);
    return v;
  };
  const popMark = (op: string): unknown[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail(where, `pickle ${op} without a MARK`);
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const push = (v: unknown) => {
    if (stack.length >= MAX_STACK) fail(where, "pickle stack too deep");
    stack.push(v);
  };
  const readLine = (op: string): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 256) fail(where, `pickle ${op} argument is not a short line`);
    const s = new TextDecoder().decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const readString = (n: number, op: string): string => {
    need(n, op);
    const s = new TextDecoder("utf-8", { fatal: false }).decode(data.subarray(pos, pos + n));
    pos += n;
    return s;
  };
  const setItems = (target: unknown, items: unknown[], op: string) => {
    if (!(target instanceof Dict)) fail(where, `pickle ${op} on ${describe(target)}, not a dict`);
    if (items.length % 2 !== 0) fail(where, `pickle ${op} with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) {
      const key = items[i];
      if (typeof key === "string") target.items.set(key, items[i + 1]);
      else if (typeof key !== "number") fail(where, `pickle ${op}: a dict key is ${describe(key)}`);
    }
  };
  const integers = (v: unknown, what: string): number[] => {
    if (!Array.isArray(v) || v.length > MAX_DIMS) {
      fail(where, `tensor ${what} must be a tuple of at most ${MAX_DIMS} integers`);
    }
    for (const d of v) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        fail(where, `tensor ${what} must hold integers >= 0, got ${String(d)}`);
      }
    }
    return v as number[];
  };
  const reduce = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof Global)) fail(where, `pickle REDUCE calls ${describe(fn)}`);
    if (!Array.isArray(args)) fail(where, `pickle REDUCE of ${fn.name} without an argument tuple`);
    switch (fn.name) {
      case "collections OrderedDict":
        if (args.length !== 0) fail(where, "OrderedDict() with arguments is refused");
        return new Dict();
      case "torch._utils _rebuild_tensor_v2": {
        if (args.length < 4 || args.length > 7) {
          fail(where, `_rebuild_tensor_v2 takes 4-7 arguments, got ${args.length}`);
        }
        const [storage, offset] = args;
        if (!(storage instanceof StorageRef)) fail(where, "_rebuild_tensor_v2 without a storage");
        if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
          fail(where, `tensor storage offset must be an integer >= 0, got ${String(offset)}`);
        }
        const size = integers(args[2], "size");
        const stride = integers(args[3], "stride");
        if (size.length !== stride.length) {
          fail(where, `tensor size [${size}] and stride [${stride}] differ in length`);
        }
        // Not more elements than the storage holds (an expanded view would allocate more than
        // the file declares).
        if (size.reduce((a, b) => a * b, 1) > storage.numel) {
          fail(
            where,
            `tensor of size [${size}] has more elements than its storage "${storage.key}"`,
          );
        }
        if (!size.includes(0)) {
          let last = offset;
          for (let d = 0; d < size.length; d++) last += (size[d] - 1) * stride[d];
          if (!(last < storage.numel)) {
            fail(
              where,
              `tensor of size [${size}], stride [${stride}] at offset ${offset} reads past its ` +
                `storage "${storage.key}" of ${storage.numel} elements`,
            );
          }
        }
        return new TensorRef(storage, offset, size, stride);
      }
      case "torch._utils _rebuild_parameter":
        if (!(args[0] instanceof TensorRef)) fail(where, "_rebuild_parameter without a tensor");
        return args[0];
      default:
        fail(where, `pickle REDUCE calls ${fn.name.replace(" ", ".")}, which is refused`);
    }
  };

  while (true) {
    if (++ops > MAX_OPS) fail(where, "pickle has too many opcodes");
    need(1, "the stream (no STOP opcode)");
    const op = data[pos++];
    switch (op) {
      case 0x80: // PROTO
        need(1, "PROTO");
        if (data[pos] > 5) fail(where, `pickle protocol ${data[pos]} is not supported`);
        pos++;
        break;
      case 0x95: // FRAME (protocol 4): an 8-byte length, then the frame's opcodes inline
        need(8, "FRAME");
        pos += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) fail(where, "pickle STOP with a stack not of one object");
        return stack[0];
      case 0x63: { // GLOBAL
        const module = readLine("GLOBAL");
        const name = readLine("GLOBAL");
        const full = `${module} ${name}`;
        if (!ALLOWED_GLOBALS.has(full)) {
          fail(
            where,
            `refuses global ${module}.${name}: a state dict holds only tensors, dicts and ` +
              "numbers, and loading a checkpoint never runs code",
          );
        }
        push(new Global(full));
        break;
      }
      case 0x7d: // EMPTY_DICT
        push(new Dict());
        break;
      case 0x29: // EMPTY_TUPLE
        push([]);
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x28: // MARK
        push(MARK);
        break;
      case 0x74: // TUPLE
        push(popMark("TUPLE"));
        break;
      case 0x85: // TUPLE1
        push([pop("TUPLE1")]);
        break;
      case 0x86: { // TUPLE2
        const b = pop("TUPLE2");
        push([pop("TUPLE2"), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop("TUPLE3");
        const b = pop("TUPLE3");
        push([pop("TUPLE3"), b, c]);
        break;
      }
      case 0x61: { // APPEND
        const v = pop("APPEND");
        const list = pop("APPEND");
        if (!Array.isArray(list)) fail(where, `pickle APPEND to ${describe(list)}`);
        list.push(v);
        push(list);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark("APPENDS");
        const list = pop("APPENDS");
        if (!Array.isArray(list)) fail(where, `pickle APPENDS to ${describe(list)}`);
        for (const v of items) list.push(v);
        push(list);
        break;
      }
      case 0x58: { // BINUNICODE
        need(4, "BINUNICODE");
        const n = view.getUint32(pos, true);
        pos += 4;
        push(readString(n, "BINUNICODE"));
        break;
      }
      case 0x8c: { // SHORT_BINUNICODE
        need(1, "SHORT_BINUNICODE");
        const n = data[pos++];
        push(readString(n, "SHORT_BINUNICODE"));
        break;
      }
      case 0x4b: // BININT1
        need(1, "BININT1");
        push(data[pos++]);
        break;
      case 0x4d: // BININT2
        need(2, "BININT2");
        push(view.getUint16(pos, true));
        pos += 2;
        break;
      case 0x4a: // BININT
        need(4, "BININT");
        push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x8a: { // LONG1
        need(1, "LONG1");
        const n = data[pos++];
        if (n > 8) fail(where, `pickle LONG1 of ${n} bytes is refused (at most 8)`);
        need(n, "LONG1");
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[pos + i]);
        if (n > 0 && data[pos + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        pos += n;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
          fail(where, "pickle LONG1 out of the safe integer range");
        }
        push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT
        need(8, "BINFLOAT");
        push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x71: // BINPUT
        need(1, "BINPUT");
        if (stack.length === 0) fail(where, "pickle BINPUT on an empty stack");
        memo.set(data[pos++], stack[stack.length - 1]);
        break;
      case 0x72: // LONG_BINPUT
        need(4, "LONG_BINPUT");
        if (stack.length === 0) fail(where, "pickle LONG_BINPUT on an empty stack");
        if (memo.size >= MAX_STACK) fail(where, "pickle memo too large");
        memo.set(view.getUint32(pos, true), stack[stack.length - 1]);
        pos += 4;
        break;
      case 0x94: // MEMOIZE
        if (stack.length === 0) fail(where, "pickle MEMOIZE on an empty stack");
        if (memo.size >= MAX_STACK) fail(where, "pickle memo too large");
        memo.set(memo.size, stack[stack.length - 1]);
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const long = op === 0x6a;
        need(long ? 4 : 1, "BINGET");
        const key = long ? view.getUint32(pos, true) : data[pos];
        pos += long ? 4 : 1;
        if (!memo.has(key)) fail(where, `pickle BINGET of unknown memo entry ${key}`);
        push(memo.get(key));
        break;
      }
      case 0x51: { // BINPERSID: ("storage", StorageClass, key, location, numel)
        const pid = pop("BINPERSID");
        if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage") {
          fail(where, "pickle BINPERSID is not a ('storage', type, key, location, numel) tuple");
        }
        const [, type, key, , numel] = pid;
        if (!(type instanceof Global) || !type.name.startsWith("torch ")) {
          fail(where, `storage type is ${describe(type)}`);
        }
        const info = STORAGES[type.name.slice(6)];
        if (!info) fail(where, `storage type ${type.name} is refused`);
        if (typeof key !== "string") fail(where, "storage key is not a string");
        if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) {
          fail(where, `storage "${key}" has an invalid element count ${String(numel)}`);
        }
        const available = storages.get(key);
        if (available === undefined) fail(where, `storage "${key}" has no data/${key} entry`);
        if (numel * info.bytes > available) {
          fail(
            where,
            `storage "${key}" claims ${numel} elements of ${info.bytes} bytes but data/${key} ` +
              `holds ${available} bytes`,
          );
        }
        push(new StorageRef(key, info.dtype, info.bytes, numel));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop("REDUCE");
        push(reduce(pop("REDUCE"), args));
        break;
      }
      case 0x73: { // SETITEM
        const value = pop("SETITEM");
        const key = pop("SETITEM");
        const dict = pop("SETITEM");
        setItems(dict, [key, value], "SETITEM");
        push(dict);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark("SETITEMS");
        const dict = pop("SETITEMS");
        setItems(dict, items, "SETITEMS");
        push(dict);
        break;
      }
      case 0x62: { // BUILD: only an OrderedDict's state (the `_metadata` of a state dict), dropped
        const state = pop("BUILD");
        const target = pop("BUILD");
        if (!(target instanceof Dict) || !(state instanceof Dict || state === null)) {
          fail(where, `pickle BUILD on ${describe(target)} is refused`);
        }
        push(target);
        break;
      }
      default: {
        const name = OPCODE_NAMES[op] ?? `0x${op.toString(16).padStart(2, "0")}`;
        fail(where, `refuses pickle opcode ${name} at byte ${pos - 1}: not part of a state dict`);
      }
    }
  }
}

// ---- tensors ---------------------------------------------------------------------------------

/** Reads element `i` of a storage's bytes as a float. */
function elementReader(dtype: string, bytes: Uint8Array): (i: number) => number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32":
      return (i) => view.getFloat32(4 * i, true);
    case "F64":
      return (i) => view.getFloat64(8 * i, true);
    case "F16":
      return (i) => halfToFloat(view.getUint16(2 * i, true));
    case "BF16": {
      const scratch = new DataView(new ArrayBuffer(4));
      return (i) => {
        scratch.setUint32(0, view.getUint16(2 * i, true) << 16);
        return scratch.getFloat32(0);
      };
    }
    case "I64":
      return (i) => Number(view.getBigInt64(8 * i, true));
    case "I32":
      return (i) => view.getInt32(4 * i, true);
    case "I16":
      return (i) => view.getInt16(2 * i, true);
    case "I8":
      return (i) => view.getInt8(i);
    default: // U8, BOOL
      return (i) => bytes[i];
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** The values of `t` row-major, gathered through its strides from `data`. */
function gather(t: TensorRef, data: Uint8Array): Float32Array {
  const count = t.size.reduce((a, b) => a * b, 1);
  const out = new Float32Array(count);
  if (count === 0) return out;
  const read = elementReader(t.storage.dtype, data);
  const rank = t.size.length;
  const index = new Array(rank).fill(0);
  let at = t.offset;
  for (let i = 0; i < count; i++) {
    out[i] = read(at);
    for (let d = rank - 1; d >= 0; d--) {
      index[d]++;
      at += t.stride[d];
      if (index[d] < t.size[d]) break;
      at -= t.stride[d] * t.size[d];
      index[d] = 0;
    }
  }
  return out;
}

/**
 * Decodes the bytes of a PyTorch zip checkpoint (`torch.save(model.state_dict(), path)`) into its
 * tensors, converted to float32 row-major (strided views are gathered), keyed as in the file.
 * Nested dicts (`{"model": state_dict, …}`) give dotted keys (`model.conv1.weight`); numbers,
 * strings and other non-tensor values are skipped. Deflated entries are inflated with
 * `DecompressionStream("deflate-raw")`.
 *
 * @param bytes the file's contents.
 * @param source how error messages name the file.
 * @throws {TorchCheckpointError} naming the problem: not a zip checkpoint, damaged, big-endian,
 *   or a pickle opcode or global a state dict does not need.
 * @example
 * ```ts
 * import { decodeTorchCheckpoint, encodeTorchCheckpoint } from "@resnet/webgpu";
 * const bytes = encodeTorchCheckpoint([
 *   { name: "fc.bias", shape: [2], dtype: "F32", data: new Float32Array([0.5, -1]) },
 * ]);
 * const tensors = await decodeTorchCheckpoint(bytes);
 * console.log(tensors.get("fc.bias")); // { dtype: "F32", shape: [2], values: Float32Array [0.5, -1] }
 * ```
 */
export async function decodeTorchCheckpoint(
  bytes: Uint8Array,
  source = "the checkpoint",
): Promise<Map<string, DecodedTensor>> {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`decodeTorchCheckpoint(): expects a Uint8Array, got ${typeof bytes}`);
  }
  const where = `loadTorchCheckpoint(): ${source}`;
  const entries = readZipDirectory(bytes, where);
  const pickles = entries.filter((e) => e.name === "data.pkl" || e.name.endsWith("/data.pkl"));
  if (pickles.length !== 1) {
    fail(
      where,
      pickles.length === 0
        ? "no data.pkl entry: not a checkpoint written by torch.save"
        : "several data.pkl entries",
    );
  }
  const prefix = pickles[0].name.slice(0, -"data.pkl".length);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const byteorder = byName.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(await readZipEntry(bytes, byteorder, where)).trim();
    if (order !== "little") fail(where, `byte order "${order}" is not supported (only little)`);
  }
  const storageSizes = new Map<string, number>();
  for (const e of entries) {
    if (e.name.startsWith(`${prefix}data/`)) {
      storageSizes.set(e.name.slice(prefix.length + 5), e.size);
    }
  }
  const root = unpickle(await readZipEntry(bytes, pickles[0], where), storageSizes, where);
  if (!(root instanceof Dict)) fail(where, `holds ${describe(root)}, not a state dict`);
  const found: [string, TensorRef][] = [];
  const walk = (dict: Dict, prefixKey: string, depth: number) => {
    if (depth > 8) fail(where, "dicts nested too deep");
    for (const [key, value] of dict.items) {
      if (value instanceof TensorRef) found.push([prefixKey + key, value]);
      else if (value instanceof Dict) walk(value, `${prefixKey}${key}.`, depth + 1);
    }
  };
  walk(root, "", 0);
  const data = new Map<string, Uint8Array>();
  const out = new Map<string, DecodedTensor>();
  for (const [key, t] of found) {
    let storage = data.get(t.storage.key);
    if (!storage) {
      const entry = byName.get(`${prefix}data/${t.storage.key}`)!;
      storage = await readZipEntry(bytes, entry, where);
      data.set(t.storage.key, storage);
    }
    out.set(key, { dtype: t.storage.dtype, shape: [...t.size], values: gather(t, storage) });
  }
  return out;
}

/**
 * Loads every tensor of a PyTorch checkpoint written by `torch.save(model.state_dict(), path)`
 * (torchvision's `.pth` weights included) onto the GPU as float32, keyed as in the file: the
 * same map {@link loadSafetensors} returns, for `loadStateDict`. The pickle inside is read by a
 * restricted unpickler that refuses anything but a state dict's contents (see
 * {@link decodeTorchCheckpoint}); nothing in the file is run.
 *
 * @param pathOrBytes a path, a `file:` URL, or the file's bytes.
 * @throws {TorchCheckpointError} when the file is not a readable state dict.
 * @example
 * ```ts ignore
 * import { initGPU, loadTorchCheckpoint, resnet18 } from "@resnet/webgpu";
 * await initGPU();
 * const model = resnet18();
 * model.loadStateDict(await loadTorchCheckpoint("resnet18-f37072fd.pth"));
 * ```
 */
export async function loadTorchCheckpoint(
  pathOrBytes: string | URL | Uint8Array,
): Promise<Map<string, Tensor>> {
  let decoded: Map<string, DecodedTensor>;
  if (pathOrBytes instanceof Uint8Array) {
    decoded = await decodeTorchCheckpoint(pathOrBytes);
  } else {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(pathOrBytes);
    } catch (cause) {
      throw new Error(
        `loadTorchCheckpoint(): cannot read "${String(pathOrBytes)}": ${(cause as Error).message}`,
        { cause },
      );
    }
    decoded = await decodeTorchCheckpoint(bytes, `"${String(pathOrBytes)}"`);
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, { shape, values }] of decoded) tensors.set(name, Tensor.from(values, shape));
  return tensors;
}

// ---- writing ---------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A pickle (protocol 2) writer for the opcodes a state dict needs. */
class PickleWriter {
  #parts: number[] = [0x80, 2];
  op(...codes: number[]): this {
    this.#parts.push(...codes);
    return this;
  }
  global(module: string, name: string): this {
    return this.op(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`));
  }
  string(s: string): this {
    const b = new TextEncoder().encode(s);
    const n = b.length;
    return this.op(0x58, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24, ...b);
  }
  int(v: number): this {
    if (v >= 0 && v < 256) return this.op(0x4b, v);
    if (v >= -(2 ** 31) && v < 2 ** 31) {
      return this.op(0x4a, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
    }
    const b: number[] = [];
    let x = BigInt(v);
    for (let i = 0; i < 8; i++) {
      b.push(Number(x & 0xffn));
      x >>= 8n;
    }
    return this.op(0x8a, 8, ...b);
  }
  tuple(values: readonly number[]): this {
    if (values.length === 0) return this.op(0x29);
    this.op(0x28);
    for (const v of values) this.int(v);
    return this.op(0x74);
  }
  bytes(): Uint8Array {
    return Uint8Array.from([...this.#parts, 0x2e]);
  }
}

/**
 * A stored (uncompressed) zip of `files`, each entry's data aligned to 64 bytes as PyTorch's.
 * Internal (the tests build hostile checkpoints with it): not exported by mod.ts.
 */
export function storedZip(files: [string, Uint8Array][]): Uint8Array {
  const local: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const nameBytes = new TextEncoder().encode(name);
    const base = offset + 30 + nameBytes.length + 4;
    const padding = (64 - (base % 64)) % 64;
    const extra = new Uint8Array(4 + padding);
    new DataView(extra.buffer).setUint16(0, 0x4246, true); // "FB", PyTorch's padding field
    new DataView(extra.buffer).setUint16(2, padding, true);
    const crc = crc32(data);
    const header = new Uint8Array(30 + nameBytes.length + extra.length);
    const h = new DataView(header.buffer);
    h.setUint32(0, 0x04034b50, true);
    h.setUint16(4, 20, true);
    h.setUint32(14, crc, true);
    h.setUint32(18, data.length, true);
    h.setUint32(22, data.length, true);
    h.setUint16(26, nameBytes.length, true);
    h.setUint16(28, extra.length, true);
    header.set(nameBytes, 30);
    header.set(extra, 30 + nameBytes.length);
    const entry = new Uint8Array(46 + nameBytes.length);
    const c = new DataView(entry.buffer);
    c.setUint32(0, 0x02014b50, true);
    c.setUint16(4, 20, true);
    c.setUint16(6, 20, true);
    c.setUint32(16, crc, true);
    c.setUint32(20, data.length, true);
    c.setUint32(24, data.length, true);
    c.setUint16(28, nameBytes.length, true);
    c.setUint32(42, offset, true);
    entry.set(nameBytes, 46);
    local.push(header, data);
    central.push(entry);
    offset += header.length + data.length;
  }
  const dirSize = central.reduce((s, e) => s + e.length, 0);
  if (offset + dirSize > 0xffffffff || files.length > 0xfffe) {
    throw new RangeError("encodeTorchCheckpoint(): checkpoints over 4 GiB are not supported");
  }
  const end = new Uint8Array(22);
  const e = new DataView(end.buffer);
  e.setUint32(0, 0x06054b50, true);
  e.setUint16(8, files.length, true);
  e.setUint16(10, files.length, true);
  e.setUint32(12, dirSize, true);
  e.setUint32(16, offset, true);
  const out = new Uint8Array(offset + dirSize + 22);
  let p = 0;
  for (const part of [...local, ...central, end]) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

/**
 * Encodes tensors as PyTorch's zip checkpoint, the file `torch.save(state_dict, path)` writes:
 * `torch.load` reads it into an `OrderedDict` of CPU tensors (`F32` entries as float32, `I64` as
 * int64), which `load_state_dict(..., strict=True)` accepts.
 *
 * @param entries the tensors, in the order the dict keeps them.
 * @param archiveName the folder name inside the zip (PyTorch uses the file's stem); default
 *   `"archive"`.
 * @throws {RangeError} when a name repeats, a shape does not match its data, or the file would
 *   exceed 4 GiB.
 * @example
 * ```ts
 * import { encodeTorchCheckpoint } from "@resnet/webgpu";
 * const bytes = encodeTorchCheckpoint([
 *   { name: "weight", shape: [2, 2], dtype: "F32", data: new Float32Array([1, 2, 3, 4]) },
 *   { name: "num_batches_tracked", shape: [], dtype: "I64", data: new BigInt64Array([5n]) },
 * ]);
 * console.log(bytes[0], bytes[1]); // 80 75 ("PK": a zip file)
 * ```
 */
export function encodeTorchCheckpoint(
  entries: readonly SafetensorsEntry[],
  archiveName = "archive",
): Uint8Array {
  const names = new Set<string>();
  const pickle = new PickleWriter().global("collections", "OrderedDict").op(0x29, 0x52, 0x28);
  const files: [string, Uint8Array][] = [];
  entries.forEach((e, i) => {
    if (names.has(e.name)) {
      throw new RangeError(`encodeTorchCheckpoint(): tensor "${e.name}" appears twice`);
    }
    names.add(e.name);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (count !== e.data.length) {
      throw new RangeError(
        `encodeTorchCheckpoint(): tensor "${e.name}" of shape [${e.shape}] holds ` +
          `${e.data.length} values`,
      );
    }
    const stride = e.shape.map((_, d) => e.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    pickle.string(e.name)
      .global("torch._utils", "_rebuild_tensor_v2")
      .op(0x28, 0x28) // MARK (arguments), MARK (persistent id)
      .string("storage")
      .global("torch", e.dtype === "I64" ? "LongStorage" : "FloatStorage")
      .string(String(i))
      .string("cpu")
      .int(count)
      .op(0x74, 0x51) // TUPLE, BINPERSID
      .int(0)
      .tuple(e.shape)
      .tuple(stride)
      .op(0x89) // requires_grad False
      .global("collections", "OrderedDict")
      .op(0x29, 0x52, 0x74, 0x52); // OrderedDict(), TUPLE (the arguments), REDUCE
    const data = e.data;
    files.push([
      `${archiveName}/data/${i}`,
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice(),
    ]);
  });
  pickle.op(0x75); // SETITEMS
  return storedZip([
    [`${archiveName}/data.pkl`, pickle.bytes()],
    [`${archiveName}/byteorder`, new TextEncoder().encode("little")],
    ...files,
    [`${archiveName}/version`, new TextEncoder().encode("3\n")],
  ]);
}

/**
 * Saves a state dict as a PyTorch checkpoint that `torch.load` reads and torchvision's models
 * load with `load_state_dict(..., strict=True)`: every tensor as float32, except the batch norms'
 * `num_batches_tracked`, which PyTorch keeps as int64. Written to a temporary file and renamed.
 *
 * @param path where to write (`.pth` by convention).
 * @param tensors the state dict, e.g. `model.stateDict()`.
 * @throws {Error} when the folder does not exist or a tensor cannot be read.
 * @example
 * ```ts ignore
 * import { initGPU, resnet18, saveTorchCheckpoint } from "@resnet/webgpu";
 * await initGPU();
 * await saveTorchCheckpoint("resnet18.pth", resnet18({ numClasses: 10 }).stateDict());
 * // Python: torchvision.models.resnet18(num_classes=10).load_state_dict(torch.load("resnet18.pth"))
 * ```
 */
export async function saveTorchCheckpoint(
  path: string | URL,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
): Promise<void> {
  const pairs = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of pairs) {
    if (!(t instanceof Tensor)) {
      throw new TypeError(`saveTorchCheckpoint(): "${name}" is not a Tensor (got ${typeof t})`);
    }
  }
  const values = await Promise.all(pairs.map(([, t]) => t.toArray()));
  const entries: SafetensorsEntry[] = pairs.map(([name, t], i) =>
    name.endsWith("num_batches_tracked")
      ? {
        name,
        shape: t.shape,
        dtype: "I64",
        data: BigInt64Array.from(values[i], (v) => BigInt(Math.round(v))),
      }
      : { name, shape: t.shape, dtype: "F32", data: values[i] }
  );
  const target = typeof path === "string" ? path : decodeURIComponent(path.pathname);
  const stem = (target.split(/[\\/]/).pop() ?? "archive").replace(/\.[^.]*$/, "") || "archive";
  const bytes = encodeTorchCheckpoint(entries, stem.replace(/[^A-Za-z0-9_.-]/g, "_"));
  const temporary = `${target}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeFile(temporary, bytes);
    await Deno.rename(temporary, target);
  } catch (cause) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(
      `saveTorchCheckpoint(): cannot write "${target}": ${(cause as Error).message}`,
      {
        cause,
      },
    );
  }
}
