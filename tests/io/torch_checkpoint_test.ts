// PyTorch checkpoints: a file torch.save wrote (tests/fixtures/make_torchvision_fixtures.py,
// torch_small.pth) decodes to what PyTorch holds; our writer's files decode back; hostile
// pickles are refused naming the opcode or global; seeded mutations end in a named error or a
// valid result.
import assert from "node:assert/strict";
import {
  decodeTorchCheckpoint,
  encodeTorchCheckpoint,
  loadTorchCheckpoint,
  saveTorchCheckpoint,
  storedZip,
  TorchCheckpointError,
} from "../../src/io/torch_checkpoint.ts";
import { Generator } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";
import { readEntries } from "./_zip_entries.ts";

const fixture = new URL("../fixtures/torch_small.pth", import.meta.url);

Deno.test("a state dict torch.save wrote decodes to PyTorch's values: every dtype, views, shared storage", async () => {
  const expected: Record<string, { shape: number[]; values: number[] }> = JSON.parse(
    await Deno.readTextFile(new URL("../fixtures/torch_small.json", import.meta.url)),
  );
  const decoded = await decodeTorchCheckpoint(await Deno.readFile(fixture));
  assert.deepEqual([...decoded.keys()], Object.keys(expected));
  for (const [key, { shape, values }] of Object.entries(expected)) {
    const got = decoded.get(key)!;
    assert.deepEqual(got.shape, shape, key);
    assert.deepEqual([...got.values], values.map(Math.fround), key);
  }
  assert.equal(decoded.get("extra.bf16")!.dtype, "BF16");
  assert.equal(decoded.get("num_batches_tracked")?.dtype ?? "I64", "I64");
  assert.equal(decoded.get("downsample.1.num_batches_tracked")!.dtype, "I64");
});

gpuTest("loadTorchCheckpoint reads a path into GPU tensors keyed as the file", async () => {
  const tensors = await loadTorchCheckpoint(fixture);
  assert.deepEqual(tensors.get("conv1.weight")!.shape, [2, 8, 1, 1]);
  assert.deepEqual(
    await tensors.get("extra.transposed")!.toArray(),
    (await decodeTorchCheckpoint(
      await Deno.readFile(fixture),
    )).get("extra.transposed")!.values,
  );
  for (const t of tensors.values()) t.dispose();
});

gpuTest("saveTorchCheckpoint then loadTorchCheckpoint gives the same tensors back", async () => {
  const dir = await Deno.makeTempDir();
  const state = new Map([
    ["layer.weight", Tensor.randn([3, 2, 3, 3], { seed: 1 })],
    ["bn.num_batches_tracked", Tensor.from([12], [])],
    ["scalar", Tensor.from([0.25], [])],
  ]);
  await saveTorchCheckpoint(`${dir}/model.pth`, state);
  const back = await loadTorchCheckpoint(`${dir}/model.pth`);
  assert.deepEqual([...back.keys()], [...state.keys()]);
  for (const [key, t] of state) {
    assert.deepEqual(back.get(key)!.shape, t.shape);
    assert.deepEqual(await back.get(key)!.toArray(), await t.toArray());
  }
  const decoded = await decodeTorchCheckpoint(await Deno.readFile(`${dir}/model.pth`));
  assert.equal(decoded.get("bn.num_batches_tracked")!.dtype, "I64");
  await Deno.remove(dir, { recursive: true });
});

/** A checkpoint whose data.pkl is `pickle` (and an optional storage "0" of `storage` bytes). */
function withPickle(pickle: Uint8Array, storage = new Uint8Array(16)): Uint8Array {
  return storedZip([
    ["archive/data.pkl", pickle],
    ["archive/data/0", storage],
    ["archive/version", new TextEncoder().encode("3\n")],
  ]);
}

const latin = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

const hostile: [string, Uint8Array, RegExp][] = [
  [
    "os.system through GLOBAL and REDUCE",
    latin("\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R."),
    /refuses global os\.system/,
  ],
  [
    "builtins.eval",
    latin("\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R."),
    /refuses global builtins\.eval/,
  ],
  [
    "posix.system through STACK_GLOBAL",
    latin("\x80\x04\x8c\x05posix\x8c\x06system\x93."),
    /opcode STACK_GLOBAL/,
  ],
  ["INST", latin("(ios\nsystem\nS'ls'\n."), /opcode INST/],
  ["NEWOBJ", latin("\x80\x02ccollections\nOrderedDict\n)\x81."), /opcode NEWOBJ/],
  [
    "a storage type outside torch",
    latin("\x80\x02(X\x07\x00\x00\x00storagecos\nsystem\n"),
    /refuses global os\.system/,
  ],
  [
    "OrderedDict with arguments",
    latin("\x80\x02ccollections\nOrderedDict\n]\x85R."),
    /OrderedDict\(\) with arguments/,
  ],
  [
    "BUILD on a tensor-rebuild global",
    latin("\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b."),
    /BUILD on global/,
  ],
  [
    "REDUCE of a storage class",
    latin("\x80\x02ctorch\nFloatStorage\n)R."),
    /REDUCE calls torch\.FloatStorage/,
  ],
];

for (const [name, pickle, message] of hostile) {
  Deno.test(`a hostile pickle is refused, nothing run: ${name}`, async () => {
    await assert.rejects(
      () => decodeTorchCheckpoint(withPickle(pickle)),
      (e: Error) => e instanceof TorchCheckpointError && message.test(e.message),
    );
  });
}

Deno.test("a tensor reading past its storage is refused before any value is read", async () => {
  const good = encodeTorchCheckpoint([
    { name: "w", shape: [2, 2], dtype: "F32", data: new Float32Array(4) },
  ]);
  await decodeTorchCheckpoint(good);
  // The same pickle, with the storage claiming 4 elements but holding 8 bytes.
  const pickle = latin(
    "\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n" +
      "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04" +
      "tQK\x00(K\x02K\x02t(K\x02K\x01t\x89ccollections\nOrderedDict\n)RtRu.",
  );
  await assert.rejects(
    () => decodeTorchCheckpoint(withPickle(pickle, new Uint8Array(8))),
    /claims 4 elements of 4 bytes but data\/0 holds 8 bytes/,
  );
  const offset = latin(String.fromCharCode(...pickle).replace("QK\x00", "QK\x01"));
  await assert.rejects(() => decodeTorchCheckpoint(withPickle(offset)), /reads past its storage/);
});

Deno.test("not a zip, pre-1.6 pickles and big-endian files are refused with a clear error", async () => {
  await assert.rejects(
    () => decodeTorchCheckpoint(latin("\x80\x02}q\x00.")),
    /not a PyTorch checkpoint/,
  );
  const big = storedZip([
    ["a/data.pkl", latin("\x80\x02}.")],
    ["a/byteorder", latin("big")],
  ]);
  await assert.rejects(() => decodeTorchCheckpoint(big), /byte order "big"/);
});

/** Resolves to "ok" or the error's class name; fails the test on a hang or a non-named error. */
async function outcome(bytes: Uint8Array): Promise<string> {
  try {
    await decodeTorchCheckpoint(bytes);
    return "ok";
  } catch (error) {
    if (!(error instanceof TorchCheckpointError)) throw error;
    return "TorchCheckpointError";
  }
}

function mutate(bytes: Uint8Array, g: Generator): Uint8Array {
  const pick = (n: number) => Math.floor(g.uniform() * n);
  const kind = pick(4);
  if (kind === 0) return bytes.slice(0, pick(bytes.length)); // truncate
  const out = bytes.slice();
  if (kind === 1) { // flip a few bytes
    for (let i = 0, n = 1 + pick(4); i < n; i++) out[pick(out.length)] = pick(256);
    return out;
  }
  if (kind === 2) { // an extreme value
    const at = pick(out.length - 4);
    new DataView(out.buffer).setUint32(at, [0xffffffff, 0x7fffffff, 0x80000000, 0][pick(4)], true);
    return out;
  }
  const at = pick(out.length); // duplicate a slice
  const slice = bytes.subarray(pick(bytes.length), pick(bytes.length));
  return Uint8Array.from([...out.subarray(0, at), ...slice, ...out.subarray(at)]);
}

Deno.test("fuzz: 300 mutations of a torch.save file and 300 of its pickle end in a TorchCheckpointError or a valid state dict", async () => {
  const file = await Deno.readFile(fixture);
  const g = new Generator(13);
  const counts: Record<string, number> = {};
  const started = performance.now();
  for (let i = 0; i < 300; i++) {
    const result = await outcome(mutate(file, g));
    counts[`file ${result}`] = (counts[`file ${result}`] ?? 0) + 1;
  }
  // The pickle alone, re-zipped with valid CRCs, so the unpickler sees every mutation.
  const pickle = encodeTorchCheckpoint([
    { name: "a", shape: [2, 3], dtype: "F32", data: new Float32Array(6) },
    { name: "b.num_batches_tracked", shape: [], dtype: "I64", data: new BigInt64Array(1) },
  ]);
  const entries = readEntries(pickle);
  for (let i = 0; i < 300; i++) {
    const files = entries.map(([name, data]) =>
      [name, name.endsWith("data.pkl") ? mutate(data, g) : data] as [string, Uint8Array]
    );
    const result = await outcome(storedZip(files));
    counts[`pickle ${result}`] = (counts[`pickle ${result}`] ?? 0) + 1;
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`fuzz outcomes: ${JSON.stringify(counts)} in ${seconds.toFixed(1)} s`);
  assert.ok(seconds < 60, `fuzzing took ${seconds} s`);
  assert.ok((counts["pickle TorchCheckpointError"] ?? 0) > 100);
});
