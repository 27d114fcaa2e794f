import assert from "node:assert/strict";
import { readTar, safeTarPath, type TarEntry } from "../../src/data/_tar.ts";
import { Generator } from "../../src/random.ts";
import {
  buildTar,
  chunkedStream,
  concatBytes,
  gzip,
  paxRecords,
  tarHeader,
  type TarSpec,
} from "./_fixtures.ts";

function bytes(n: number, seed: number): Uint8Array {
  const g = new Generator(seed);
  return Uint8Array.from({ length: n }, () => g.nextUint32() & 255);
}

/** Reads every entry, collecting bodies (all of them, or only those `read` accepts). */
async function readAll(
  stream: ReadableStream<Uint8Array>,
  read: (e: TarEntry) => boolean = () => true,
): Promise<{ path: string; type: string; size: number; mode: number; data?: Uint8Array }[]> {
  const out = [];
  for await (const entry of readTar(stream)) {
    let data: Uint8Array | undefined;
    if (read(entry)) {
      const parts: Uint8Array[] = [];
      for await (const chunk of entry.body()) parts.push(chunk.slice());
      data = concatBytes(parts);
    }
    out.push({ path: entry.path, type: entry.type, size: entry.size, mode: entry.mode, data });
  }
  return out;
}

Deno.test("readTar() yields files and directories with their bytes, whatever the chunking", async () => {
  const sizes = [0, 1, 511, 512, 513, 2000];
  const specs: TarSpec[] = [{ name: "dir/", type: "5" }];
  sizes.forEach((n, i) => specs.push({ name: `dir/f${n}.bin`, data: bytes(n, i) }));
  specs.push({ name: "./top.txt", data: new TextEncoder().encode("hello") });
  const archive = buildTar(specs);
  for (const chunking of [[archive.length], [1], [7, 1000, 3], [512]]) {
    const entries = await readAll(chunkedStream(archive, chunking));
    assert.deepEqual(entries.map((e) => [e.path, e.type, e.size]), [
      ["dir", "directory", 0],
      ...sizes.map((n) => [`dir/f${n}.bin`, "file", n]),
      ["top.txt", "file", 5],
    ]);
    assert.equal(entries[0].mode, 0o755);
    assert.equal(entries[1].mode, 0o644);
    sizes.forEach((n, i) =>
      assert.deepEqual(entries[i + 1].data, bytes(n, i), `chunking ${chunking}`)
    );
  }
});

Deno.test("readTar() skips bodies that are not read and reads through gzip", async () => {
  const archive = buildTar([
    { name: "a", data: bytes(1500, 1) },
    { name: "b", data: bytes(700, 2) },
    { name: "c", data: bytes(3, 3) },
  ]);
  const stream = new Blob([await gzip(archive) as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip"));
  const entries = await readAll(stream, (e) => e.path !== "a");
  assert.deepEqual(entries.map((e) => e.path), ["a", "b", "c"]);
  assert.equal(entries[0].data, undefined);
  assert.deepEqual(entries[1].data, bytes(700, 2));
  assert.deepEqual(entries[2].data, bytes(3, 3));
});

Deno.test("readTar() honours the ustar prefix, PAX path and size, GNU long names", async () => {
  const long = "deep/".repeat(30) + "file.bin";
  const archive = buildTar([
    { name: "name.bin", prefix: "some/prefix", data: bytes(10, 1) },
    { name: "././@PaxHeader", type: "x", data: paxRecords({ path: long, size: "20" }) },
    { name: "truncated-name", data: bytes(20, 2), size: 0 },
    { name: "././@LongLink", type: "L", data: new TextEncoder().encode("gnu/" + long + "\0") },
    { name: "gnu/short", data: bytes(30, 3) },
    { name: "link", type: "2" },
  ]);
  const entries = await readAll(chunkedStream(archive, [100]));
  assert.deepEqual(entries.map((e) => [e.path, e.type, e.size]), [
    ["some/prefix/name.bin", "file", 10],
    [long, "file", 20],
    ["gnu/" + long, "file", 30],
    ["link", "symlink", 0],
  ]);
  assert.deepEqual(entries[1].data, bytes(20, 2));
  assert.deepEqual(entries[2].data, bytes(30, 3));
});

Deno.test("readTar() refuses path traversal, absolute paths and backslashes", async () => {
  for (const name of ["../evil", "a/../../evil", "/etc/passwd", "C:/x", "a\\..\\b", "ok/.."]) {
    const archive = buildTar([{ name: "fine", data: bytes(5, 1) }, { name, data: bytes(5, 2) }]);
    const seen: string[] = [];
    await assert.rejects(
      async () => {
        for await (const e of readTar(chunkedStream(archive, [1000]))) seen.push(e.path);
      },
      (error: Error) =>
        error.message.includes("Refusing tar entry") && error.message.includes(name),
      name,
    );
    assert.deepEqual(seen, ["fine"], name);
  }
  assert.equal(safeTarPath("./a//b/./c/"), "a/b/c");
  assert.throws(() => safeTarPath("./"), /empty/);
});

Deno.test("readTar() verifies header checksums and reports truncation", async () => {
  const bad = buildTar([{ name: "a", data: bytes(10, 1), checksumDelta: 1 }]);
  await assert.rejects(() => readAll(chunkedStream(bad, [512])), /checksum mismatch at byte 0/);

  const good = buildTar([{ name: "a", data: bytes(10, 1) }, { name: "b", data: bytes(900, 2) }]);
  // Cut inside the second file's data, then inside the second header.
  await assert.rejects(
    () => readAll(chunkedStream(good.subarray(0, 1024 + 512 + 100), [333])),
    /ends inside "b" \(100 of 900 bytes present\)/,
  );
  await assert.rejects(
    () => readAll(chunkedStream(good.subarray(0, 1024 + 100), [333])),
    /ends inside the header at byte 1024/,
  );
  // Missing end-of-archive blocks are tolerated.
  const unterminated = buildTar([{ name: "a", data: bytes(10, 1) }], { end: false });
  assert.equal((await readAll(chunkedStream(unterminated, [64]))).length, 1);
  // A non-octal size field.
  const header = tarHeader({ name: "x", data: bytes(1, 1) });
  header.set(new TextEncoder().encode("12z"), 124);
  let sum = 0;
  header.fill(0x20, 148, 156);
  for (const b of header) sum += b;
  header.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  await assert.rejects(
    () => readAll(chunkedStream(concatBytes([header, new Uint8Array(1536)]), [512])),
    /size field .* not an octal number/,
  );
});
