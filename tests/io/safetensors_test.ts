import assert from "node:assert/strict";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  readSafetensorsHeader,
  readSafetensorsMetadata,
  saveSafetensors,
} from "../../src/io/safetensors.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);

/** A safetensors file from a header object (or raw header text) and data bytes, unpadded. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Little-endian bytes written through a DataView by `write`. */
function bytesOf(length: number, write: (view: DataView) => void): Uint8Array {
  const out = new Uint8Array(length);
  write(new DataView(out.buffer));
  return out;
}

/** One tensor of `dtype` whose data bytes are `data`. */
function single(dtype: string, shape: number[], data: Uint8Array): Uint8Array {
  return rawFile({ t: { dtype, shape, data_offsets: [0, data.length] } }, data);
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("encodeSafetensors() lays out I64 then F32 by name with an 8-byte padded header", () => {
  const bytes = encodeSafetensors([
    { name: "b", shape: [3], dtype: "F32", data: new Float32Array([1, 2, 3]) },
    { name: "a", shape: [2, 1], dtype: "F32", data: new Float32Array([-4, 5.5]) },
    { name: "bn.num_batches_tracked", shape: [], dtype: "I64", data: new BigInt64Array([9n]) },
  ]);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(text, /^\{.*\} *$/);
  const header = JSON.parse(text);
  assert.deepEqual(Object.keys(header), ["bn.num_batches_tracked", "a", "b"]);
  assert.deepEqual(header["bn.num_batches_tracked"], {
    dtype: "I64",
    shape: [],
    data_offsets: [0, 8],
  });
  assert.deepEqual(header.a, { dtype: "F32", shape: [2, 1], data_offsets: [8, 16] });
  assert.deepEqual(header.b, { dtype: "F32", shape: [3], data_offsets: [16, 28] });
  assert.equal(bytes.length, 8 + n + 28);

  const { metadata, tensors } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, {});
  assert.deepEqual([...tensors.keys()], ["bn.num_batches_tracked", "a", "b"]);
  assert.deepEqual(tensors.get("a"), {
    dtype: "F32",
    shape: [2, 1],
    values: new Float32Array([-4, 5.5]),
  });
  assert.deepEqual(tensors.get("bn.num_batches_tracked")!.values, new Float32Array([9]));
});

Deno.test("encodeSafetensors() refuses bad names, shapes, dtypes and data", () => {
  const f32 = (name: string, shape: number[], n: number) => ({
    name,
    shape,
    dtype: "F32" as const,
    data: new Float32Array(n),
  });
  assert.throws(() => encodeSafetensors([f32("x", [2], 2), f32("x", [1], 1)]), /twice/);
  assert.throws(() => encodeSafetensors([f32("__metadata__", [1], 1)]), /reserved/);
  assert.throws(() => encodeSafetensors([f32("x", [2, 2], 3)]), RangeError);
  assert.throws(() => encodeSafetensors([f32("x", [-1], 0)]), RangeError);
  assert.throws(
    () => encodeSafetensors([{ name: "x", shape: [1], dtype: "I64", data: new Float32Array(1) }]),
    TypeError,
  );
  assert.throws(
    () => encodeSafetensors([f32("x", [1], 1)], { n: 3 } as unknown as Record<string, string>),
    TypeError,
  );
});

Deno.test("decodeSafetensors() converts F16 bit patterns, with subnormals, infinities, NaN", () => {
  const bits = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x7e00];
  const data = bytesOf(2 * bits.length, (v) => bits.forEach((b, i) => v.setUint16(2 * i, b, true)));
  const { tensors } = decodeSafetensors(single("F16", [2, 5], data));
  const t = tensors.get("t")!;
  assert.equal(t.dtype, "F16");
  assert.deepEqual(t.shape, [2, 5]);
  const expected = [1, -2, 0.333251953125, 65504, 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, NaN];
  assert.deepEqual(Array.from(t.values), expected);
  assert.ok(Object.is(t.values[6], -0));
});

Deno.test("decodeSafetensors() converts BF16 bit patterns exactly", () => {
  const bits = [0x3f80, 0xc040, 0x3e20, 0x7f80, 0x0001, 0x4049];
  const data = bytesOf(12, (v) => bits.forEach((b, i) => v.setUint16(2 * i, b, true)));
  const t = decodeSafetensors(single("BF16", [6], data)).tensors.get("t")!;
  assert.deepEqual(Array.from(t.values), [1, -3, 0.15625, Infinity, 2 ** -133, 3.140625]);
});

Deno.test("decodeSafetensors() converts F64, I64, I32 and small integer dtypes to float32", () => {
  const f64 = bytesOf(
    24,
    (v) => [0.1, -2.5, 1e300].forEach((x, i) => v.setFloat64(8 * i, x, true)),
  );
  assert.deepEqual(
    Array.from(decodeSafetensors(single("F64", [3], f64)).tensors.get("t")!.values),
    [Math.fround(0.1), -2.5, Infinity],
  );
  const i64 = bytesOf(24, (v) => {
    v.setBigInt64(0, -3n, true);
    v.setBigInt64(8, 2n ** 40n, true);
    v.setBigInt64(16, 0n, true);
  });
  assert.deepEqual(
    Array.from(decodeSafetensors(single("I64", [1, 3], i64)).tensors.get("t")!.values),
    [-3, 2 ** 40, 0],
  );
  const i32 = bytesOf(
    12,
    (v) => [-7, 123456, 2 ** 31 - 1].forEach((x, i) => v.setInt32(4 * i, x, true)),
  );
  assert.deepEqual(
    Array.from(decodeSafetensors(single("I32", [3], i32)).tensors.get("t")!.values),
    [-7, 123456, Math.fround(2 ** 31 - 1)],
  );
  const small = new Uint8Array([0, 1, 255, 128]);
  const decode = (dtype: string, shape: number[]) =>
    Array.from(decodeSafetensors(single(dtype, shape, small)).tensors.get("t")!.values);
  assert.deepEqual(decode("U8", [4]), [0, 1, 255, 128]);
  assert.deepEqual(decode("I8", [4]), [0, 1, -1, -128]);
  assert.deepEqual(decode("BOOL", [2, 2]), [0, 1, 1, 1]);
  assert.deepEqual(decode("I16", [2]), [256, -32513]);
  assert.deepEqual(decode("U16", [2]), [256, 33023]);
  assert.deepEqual(decode("U32", [1]), [Math.fround(0x80ff0100)]);
});

Deno.test("decodeSafetensors() reads several dtypes side by side and zero-size tensors", () => {
  const data = new Uint8Array(8 + 2 + 4);
  const v = new DataView(data.buffer);
  v.setBigInt64(0, 5n, true);
  v.setUint16(8, 0x3c00, true);
  v.setFloat32(10, 0.75, true);
  const bytes = rawFile({
    "__metadata__": { format: "pt" },
    count: { dtype: "I64", shape: [], data_offsets: [0, 8] },
    empty: { dtype: "F32", shape: [0, 3], data_offsets: [8, 8] },
    half: { dtype: "F16", shape: [1], data_offsets: [8, 10] },
    f: { dtype: "F32", shape: [1, 1], data_offsets: [10, 14] },
  }, data);
  const { metadata, tensors } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, { format: "pt" });
  assert.deepEqual(Array.from(tensors.get("count")!.values), [5]);
  assert.deepEqual(tensors.get("empty")!.shape, [0, 3]);
  assert.equal(tensors.get("empty")!.values.length, 0);
  assert.deepEqual(Array.from(tensors.get("half")!.values), [1]);
  // F32 at an unaligned offset (10) still decodes.
  assert.deepEqual(Array.from(tensors.get("f")!.values), [0.75]);
});

Deno.test("metadata round-trips through encode, decode and readSafetensorsMetadata", async () => {
  const metadata = { format: "pt", description: "ResNet-8 — 10 classes", empty: "" };
  const bytes = encodeSafetensors(
    [{ name: "w", shape: [1], dtype: "F32", data: new Float32Array([2]) }],
    metadata,
  );
  assert.deepEqual(decodeSafetensors(bytes).metadata, metadata);
  assert.deepEqual(await readSafetensorsMetadata(bytes), metadata);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/m.safetensors`, bytes);
    assert.deepEqual(await readSafetensorsMetadata(`${dir}/m.safetensors`), metadata);
    const none = encodeSafetensors([]);
    await Deno.writeFile(`${dir}/none.safetensors`, none);
    assert.deepEqual(await readSafetensorsMetadata(`${dir}/none.safetensors`), {});
    await Deno.writeFile(`${dir}/cut.safetensors`, bytes.subarray(0, bytes.length - 1));
    await assert.rejects(
      () => readSafetensorsMetadata(`${dir}/cut.safetensors`),
      /cut\.safetensors.*truncated/,
    );
  });
});

Deno.test("decodeSafetensors() refuses files too short or with a bad header length", () => {
  assert.throws(() => decodeSafetensors(new Uint8Array(5)), /5 bytes, shorter than the 8-byte/);
  const tooLong = rawFile({});
  new DataView(tooLong.buffer).setBigUint64(0, 1000n, true);
  assert.throws(() => decodeSafetensors(tooLong), /header length 1000 bytes exceeds the 2 bytes/);
  const absurd = rawFile({});
  new DataView(absurd.buffer).setBigUint64(0, 2n ** 40n, true);
  assert.throws(() => decodeSafetensors(absurd), /header length 1099511627776 bytes is absurd/);
  new DataView(absurd.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
  assert.throws(() => decodeSafetensors(absurd), /absurd/);
});

Deno.test("decodeSafetensors() refuses a header that is not a JSON object of valid entries", () => {
  const data = new Uint8Array(8);
  const entry = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  const cases: [unknown, RegExp][] = [
    ['{"t": {"dtype": "F32", "shape": [2], "data_off', /not valid JSON/],
    ["[1, 2]", /must be a JSON object, got an array/],
    ["null", /must be a JSON object, got null/],
    ["42", /must be a JSON object, got number/],
    [{ t: [1] }, /tensor "t" must be an object/],
    [{ t: { shape: [2], data_offsets: [0, 8] } }, /tensor "t" has no "dtype"/],
    [{ t: { dtype: "F32", data_offsets: [0, 8] } }, /tensor "t" has no "shape"/],
    [{ t: { dtype: "F32", shape: [2] } }, /tensor "t" has no "data_offsets"/],
    [{ t: { ...entry, dtype: "Q4" } }, /unknown dtype "Q4" \(supported: F64, F32/],
    [{ t: { ...entry, shape: [-2] } }, /shape must be an array of non-negative integers/],
    [{ t: { ...entry, shape: [1.5] } }, /shape must be an array of non-negative integers/],
    [{ t: { ...entry, shape: "2" } }, /shape must be an array/],
    [{ t: { ...entry, data_offsets: [8, 0] } }, /0 <= begin <= end, got \[8,0\]/],
    [{ t: { ...entry, data_offsets: [-1, 7] } }, /data_offsets must be \[begin, end\]/],
    [{ t: { ...entry, data_offsets: [0] } }, /data_offsets must be \[begin, end\]/],
    [{ t: { ...entry, shape: [3] } }, /span 8 bytes, but shape \[3\] of F32 needs 12/],
    [{ t: { ...entry, dtype: "F64" } }, /span 8 bytes, but shape \[2\] of F64 needs 16/],
    [{ __metadata__: { a: 1 }, t: entry }, /"__metadata__" value of "a" must be a string/],
    [{ __metadata__: ["x"], t: entry }, /"__metadata__" must be an object of strings/],
  ];
  for (const [header, message] of cases) {
    assert.throws(() => decodeSafetensors(rawFile(header, data)), message, String(header));
  }
  const badUtf8 = rawFile("{}");
  badUtf8[8] = 0xff;
  assert.throws(() => decodeSafetensors(badUtf8), /not valid UTF-8/);
});

Deno.test("decodeSafetensors() refuses offsets past the data, overlapping or leaving gaps", () => {
  const a = (begin: number) => ({ dtype: "F32", shape: [1], data_offsets: [begin, begin + 4] });
  const good = encodeSafetensors([
    { name: "x", shape: [4], dtype: "F32", data: new Float32Array([1, 2, 3, 4]) },
  ]);
  assert.throws(
    () => decodeSafetensors(good.subarray(0, good.length - 3)),
    /tensor "x" data_offsets \[0, 16\] run past the end of the 13-byte data buffer \(truncated/,
  );
  assert.throws(
    () => decodeSafetensors(rawFile({ x: a(0), y: a(2) }, new Uint8Array(8))),
    /tensor "y" data_offsets \[2, 6\] overlap tensor "x"/,
  );
  assert.throws(
    () => decodeSafetensors(rawFile({ x: a(0), y: a(0) }, new Uint8Array(4))),
    /overlap/,
  );
  assert.throws(
    () => decodeSafetensors(rawFile({ x: a(4) }, new Uint8Array(8))),
    /data bytes \[0, 4\) belong to no tensor/,
  );
  assert.throws(
    () => decodeSafetensors(rawFile({ x: a(0), y: a(8) }, new Uint8Array(12))),
    /data bytes \[4, 8\) belong to no tensor/,
  );
  assert.throws(
    () => decodeSafetensors(rawFile({ x: a(0) }, new Uint8Array(6))),
    /data bytes \[4, 6\) belong to no tensor/,
  );
});

Deno.test("loadSafetensors() names the file when it is malformed or missing", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/broken.safetensors`;
    await Deno.writeFile(path, rawFile('{"x": oops}'));
    await assert.rejects(
      () => loadSafetensors(path),
      (e: Error) =>
        e.message.includes(`Invalid safetensors file "${path}"`) &&
        e.message.includes("not valid JSON"),
    );
    await assert.rejects(
      () => loadSafetensors(`${dir}/missing.safetensors`),
      /missing\.safetensors/,
    );
  });
});

gpuTest(
  "saveSafetensors() then loadSafetensors() round-trips values and shapes exactly",
  async () => {
    await withTempDir(async (dir) => {
      const weight = Float32Array.from({ length: 2 * 3 * 3 * 3 }, (_, i) => Math.sin(i) * 1e3);
      weight[0] = -0;
      weight[1] = 1.401298464324817e-45; // smallest float32 subnormal
      const state = new Map([
        ["conv.weight", Tensor.from(weight, [2, 3, 3, 3])],
        ["conv.bias", Tensor.from([0.5, -0.25], [2])],
        ["scale", Tensor.from([3.75], [])],
        ["bn.num_batches_tracked", Tensor.from([7], [])],
        ["empty", Tensor.zeros([0, 4])],
      ]);
      const path = `${dir}/state.safetensors`;
      await saveSafetensors(path, state, { format: "pt" });

      const { tensors } = decodeSafetensors(await Deno.readFile(path));
      assert.equal(tensors.get("bn.num_batches_tracked")!.dtype, "I64");
      assert.equal(tensors.get("conv.weight")!.dtype, "F32");
      assert.equal(tensors.get("scale")!.dtype, "F32");

      const metadata: Record<string, string> = {};
      const loaded = await loadSafetensors(path, { metadata });
      assert.deepEqual(metadata, { format: "pt" });
      assert.deepEqual([...loaded.keys()].sort(), [...state.keys()].sort());
      for (const [name, original] of state) {
        const back = loaded.get(name)!;
        assert.deepEqual(back.shape, original.shape, name);
        assert.deepEqual(await back.toArray(), await original.toArray(), name);
      }
      assert.ok(Object.is((await loaded.get("conv.weight")!.toArray())[0], -0));
      assert.equal(await loaded.get("bn.num_batches_tracked")!.item(), 7);

      // A record works as well as a Map, and a file: URL as well as a path.
      const url = new URL(`file://${dir}/record.safetensors`);
      await saveSafetensors(url, { w: Tensor.from([1, 2], [1, 2]) });
      const fromUrl = await loadSafetensors(url);
      assert.deepEqual(Array.from(await fromUrl.get("w")!.toArray()), [1, 2]);
      for (const t of [...state.values(), ...loaded.values(), ...fromUrl.values()]) t.dispose();
    });
  },
);

gpuTest("saveSafetensors() writes atomically: replaces the file, leaves no temporary", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ckpt.safetensors`;
    await Deno.writeFile(path, new TextEncoder().encode("an older, longer file ".repeat(50)));
    const t = Tensor.from([1, 2, 3], [3]);
    await saveSafetensors(path, { t });
    const loaded = await loadSafetensors(path);
    assert.deepEqual(Array.from(await loaded.get("t")!.toArray()), [1, 2, 3]);
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names, ["ckpt.safetensors"]);

    await assert.rejects(
      () => saveSafetensors(`${dir}/no/such/folder/x.safetensors`, { t }),
      (e: Error) => e.message.includes(`folder "${dir}/no/such/folder" does not exist`),
    );
    const disposed = Tensor.from([1], [1]);
    disposed.dispose();
    await assert.rejects(
      () => saveSafetensors(path, { gone: disposed }),
      /cannot read tensor "gone".*disposed/,
    );
    const after = [];
    for await (const entry of Deno.readDir(dir)) after.push(entry.name);
    assert.deepEqual(after, ["ckpt.safetensors"]);
    t.dispose();
    loaded.get("t")!.dispose();
  });
});

/** State-dict keys of Sequential(ResNetBase([2, 1], [6, 10], first_kernel_size=3), Linear). */
function basicKeys(): { params: string[]; buffers: string[] } {
  const params: string[] = [];
  const buffers: string[] = [];
  const conv = (p: string) => params.push(`${p}.weight`, `${p}.bias`);
  const bn = (p: string) => {
    params.push(`${p}.weight`, `${p}.bias`);
    buffers.push(`${p}.running_mean`, `${p}.running_var`, `${p}.num_batches_tracked`);
  };
  conv("0.conv");
  bn("0.bn");
  for (const [block, projected] of [[0, true], [1, false], [2, true]] as const) {
    const p = `0.blocks.${block}`;
    conv(`${p}.conv1`);
    bn(`${p}.bn1`);
    conv(`${p}.conv2`);
    bn(`${p}.bn2`);
    if (projected) {
      conv(`${p}.shortcut.conv`);
      bn(`${p}.shortcut.bn`);
    }
  }
  conv("1");
  return { params, buffers };
}

gpuTest("loadSafetensors() reads the PyTorch-written fixture with the expected keys", async () => {
  const path = new URL("basic.safetensors", FIXTURES);
  const metadata = await readSafetensorsMetadata(path);
  assert.equal(metadata.format, "pt");
  const { params, buffers } = basicKeys();
  const expected = [
    ...[...params, ...buffers].map((k) => `model.${k}`),
    ...params.map((k) => `grad.${k}`),
    ...buffers.map((k) => `after.${k}`),
    "input",
    "target",
    "output",
    "loss",
    "eval_output",
  ].sort();
  const loaded = await loadSafetensors(path);
  assert.deepEqual([...loaded.keys()].sort(), expected);
  const shape = (k: string) => loaded.get(k)!.shape;
  assert.deepEqual(shape("input"), [2, 3, 9, 9]);
  assert.deepEqual(shape("target"), [2]);
  assert.deepEqual(shape("output"), [2, 5]);
  assert.deepEqual(shape("loss"), []);
  assert.deepEqual(shape("model.0.blocks.2.conv1.weight"), [10, 6, 3, 3]);
  assert.deepEqual(shape("model.0.blocks.2.shortcut.conv.weight"), [10, 6, 1, 1]);
  assert.deepEqual(shape("model.1.weight"), [5, 10]);
  assert.equal(await loaded.get("model.0.bn.num_batches_tracked")!.item(), 0);
  assert.equal(await loaded.get("after.0.bn.num_batches_tracked")!.item(), 1);
  assert.deepEqual(Array.from(await loaded.get("model.0.bn.running_var")!.toArray()), [
    1,
    1,
    1,
    1,
    1,
    1,
  ]);
  const targets = await loaded.get("target")!.toArray();
  assert.ok(targets.every((v) => Number.isInteger(v) && v >= 0 && v < 5));
  const loss = await loaded.get("loss")!.item();
  assert.ok(loss > 0 && loss < 5);

  const { tensors } = decodeSafetensors(await Deno.readFile(path));
  assert.equal(tensors.get("target")!.dtype, "I64");
  assert.equal(tensors.get("model.0.bn.num_batches_tracked")!.dtype, "I64");
  assert.deepEqual(await loaded.get("input")!.toArray(), tensors.get("input")!.values);
  for (const t of loaded.values()) t.dispose();

  // The other fixtures decode too.
  for (const name of ["bottleneck", "paper"]) {
    const file = await Deno.readFile(new URL(`${name}.safetensors`, FIXTURES));
    const decoded = decodeSafetensors(file);
    assert.ok(decoded.tensors.has("model.1.weight") && decoded.tensors.has("eval_output"), name);
  }
});

Deno.test("loadSafetensors() and readSafetensorsHeader() refuse a FIFO or /dev/zero at once", {
  ignore: Deno.build.os === "windows",
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink("/dev/zero", `${dir}/zero.safetensors`);
    await assert.rejects(
      () => loadSafetensors(`${dir}/zero.safetensors`),
      /zero\.safetensors" is not a regular file \(it is a device, FIFO or socket\)/,
    );
    const mkfifo = await new Deno.Command("mkfifo", { args: [`${dir}/pipe.safetensors`] }).output();
    assert.ok(mkfifo.success);
    await assert.rejects(
      () => readSafetensorsHeader(`${dir}/pipe.safetensors`),
      /pipe\.safetensors" is not a regular file/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
