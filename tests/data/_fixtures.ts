// Test fixtures for the data tests: a ustar writer, gzip, and CIFAR-format folders.
import { Generator } from "../../src/random.ts";

const encoder = new TextEncoder();

/** One entry for {@link buildTar}. */
export interface TarSpec {
  name: string;
  data?: Uint8Array;
  /** Type flag: "0" file (default), "5" directory, "2" symlink, "x" PAX header, "L" long name. */
  type?: string;
  /** ustar prefix field (joined to the name with "/"). */
  prefix?: string;
  /** Adds this to the stored checksum, to corrupt it. */
  checksumDelta?: number;
  /** Stored size when it should differ from data.length. */
  size?: number;
}

function field(header: Uint8Array, offset: number, length: number, text: string): void {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new Error(`tar field too long: ${text}`);
  header.set(bytes, offset);
}

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, "0") + "\0";
}

/** A 512-byte ustar header (POSIX magic "ustar\0", version "00"). */
export function tarHeader(spec: TarSpec): Uint8Array {
  const header = new Uint8Array(512);
  const type = spec.type ?? "0";
  const size = spec.size ?? spec.data?.length ?? 0;
  field(header, 0, 100, spec.name);
  field(header, 100, 8, octal(type === "5" ? 0o755 : 0o644, 8));
  field(header, 108, 8, octal(1000, 8));
  field(header, 116, 8, octal(1000, 8));
  field(header, 124, 12, octal(size, 12));
  field(header, 136, 12, octal(1700000000, 12));
  field(header, 156, 1, type);
  field(header, 257, 6, "ustar\0");
  field(header, 263, 2, "00");
  field(header, 265, 32, "user");
  field(header, 297, 32, "group");
  if (spec.prefix) field(header, 345, 155, spec.prefix);
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  field(header, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  if (spec.checksumDelta) {
    field(header, 148, 8, (sum + spec.checksumDelta).toString(8).padStart(6, "0") + "\0 ");
  }
  return header;
}

/** A tar archive of `entries` ending with two zero blocks. */
export function buildTar(entries: TarSpec[], { end = true } = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e));
    const data = e.data ?? new Uint8Array(0);
    parts.push(data);
    const pad = (512 - (data.length % 512)) % 512;
    parts.push(new Uint8Array(pad));
  }
  if (end) parts.push(new Uint8Array(1024));
  return concatBytes(parts);
}

/** A PAX extended header body with the given records. */
export function paxRecords(records: Record<string, string>): Uint8Array {
  let text = "";
  for (const [key, value] of Object.entries(records)) {
    const body = ` ${key}=${value}\n`;
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length++;
    text += `${length}${body}`;
  }
  return encoder.encode(text);
}

export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A stream delivering `bytes` in chunks of the given sizes (cycled). */
export function chunkedStream(bytes: Uint8Array, sizes: number[]): ReadableStream<Uint8Array> {
  let at = 0;
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      const n = sizes[i++ % sizes.length];
      controller.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** `count` CIFAR records with random pixels and labels `(seed + i) % classes`. */
export function cifarRecords(count: number, seed: number, classes = 10): Uint8Array {
  const g = new Generator(seed);
  const out = new Uint8Array(count * 3073);
  for (let i = 0; i < count; i++) {
    out[i * 3073] = (seed + i) % classes;
    for (let j = 1; j < 3073; j++) out[i * 3073 + j] = g.nextUint32() & 255;
  }
  return out;
}

export const CLASS_NAMES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/** The files of a CIFAR-format folder: train files with `trainCounts` records, and a test file. */
export function cifarFiles(trainCounts: number[], testCount: number): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  trainCounts.forEach((n, i) => files.set(`data_batch_${i + 1}.bin`, cifarRecords(n, 10 * i)));
  files.set("test_batch.bin", cifarRecords(testCount, 99));
  files.set("batches.meta.txt", encoder.encode(CLASS_NAMES.join("\n") + "\n\n"));
  return files;
}

export async function writeFolder(dir: string, files: Map<string, Uint8Array>): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, bytes] of files) await Deno.writeFile(`${dir}/${name}`, bytes);
}

/** A .tar.gz holding `cifar-10-batches-bin/` with `files`, plus extra entries. */
export async function cifarArchive(
  files: Map<string, Uint8Array>,
  extra: TarSpec[] = [],
): Promise<Uint8Array> {
  const entries: TarSpec[] = [{ name: "cifar-10-batches-bin/", type: "5" }];
  for (const [name, data] of files) entries.push({ name: `cifar-10-batches-bin/${name}`, data });
  return await gzip(buildTar([...entries, ...extra]));
}

export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "data_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}
