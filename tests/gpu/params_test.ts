import assert from "node:assert/strict";
import sumDimsSource from "../../kernels/sum_dims.wgsl" with { type: "text" };
import { dispatch, flush, gpuCounters, readBuffer } from "../../src/gpu/dispatch.ts";
import { packParamsByName, parseParamsStruct } from "../../src/gpu/_params.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

Deno.test("parseParamsStruct() lays out scalars and vec4 arrays by WGSL's uniform rules", () => {
  const layout = parseParamsStruct(sumDimsSource);
  const offsets = Object.fromEntries(layout.fields.map((f) => [f.name, f.offset]));
  // Six u32s fill 24 bytes; the first array<vec4u, 2> aligns to 32, each array takes 32 bytes.
  assert.deepEqual(offsets, {
    count: 0,
    splits: 4,
    chunk: 8,
    rcount: 12,
    nk: 16,
    nr: 20,
    ksize: 32,
    kstride: 64,
    rsize: 96,
    rstride: 128,
    scale: 160,
  });
  assert.equal(layout.size, 176);
  assert.deepEqual(layout.fields.map((f) => f.type), [
    ..."u32 u32 u32 u32 u32 u32 u32 u32 u32 u32".split(" "),
    "f32",
  ]);
});

Deno.test("parseParamsStruct() skips comments and refuses types params cannot hold", () => {
  const layout = parseParamsStruct(
    "struct Params {\n  a: u32, // count\n  b: f32,\n  c: i32 }\nfn main() {}",
  );
  assert.deepEqual(layout.fields.map((f) => [f.name, f.type, f.offset]), [
    ["a", "u32", 0],
    ["b", "f32", 4],
    ["c", "i32", 8],
  ]);
  assert.equal(layout.size, 16);
  assert.throws(() => parseParamsStruct("struct Params { m: mat4x4f }"), /mat4x4f/);
  assert.throws(() => parseParamsStruct("struct Other { a: u32 }"), /no 'struct Params'/);
});

Deno.test("packParamsByName() writes each value at its field's offset as its type", () => {
  const layout = parseParamsStruct("struct Params { a: u32, b: f32, c: i32, v: array<vec4u, 1> }");
  const out = new ArrayBuffer(layout.size);
  packParamsByName("k", layout, { c: -2, b: 0.5, a: 7, v: [1, 2] }, out);
  const u = new Uint32Array(out);
  assert.equal(u[0], 7);
  assert.equal(new Float32Array(out)[1], 0.5);
  assert.equal(new Int32Array(out)[2], -2);
  assert.deepEqual([...u.subarray(4, 8)], [1, 2, 0, 0]);
  assert.throws(
    () => packParamsByName("k", layout, { a: 1, b: 2, c: 3 }, out),
    /params\.v is missing; expected exactly a, b, c, v/,
  );
  assert.throws(
    () => packParamsByName("k", layout, { a: 1, b: 2, c: 3, v: [0], typo: 1 }, out),
    /k: params not in its struct Params: typo/,
  );
  assert.throws(
    () => packParamsByName("k", layout, { a: 1, b: 2, c: 3, v: [0, 0, 0, 0, 0] }, out),
    /params\.v must be at most 4 numbers, got 5/,
  );
});

const FILL_SOURCE = `
struct Params { count: u32, value: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.count) { out[gid.x] = p.value; }
}`;

gpuTest("a launcher's params that miss, add or reorder a WGSL field are refused", () => {
  const out = Tensor.empty([4]);
  const cases: [readonly string[], RegExp][] = [
    [["count"], /missing value/],
    [["count", "value", "extra"], /not in the WGSL: extra/],
    [["value", "count"], /the same fields in another order/],
  ];
  for (const [params, message] of cases) {
    const kernel = { name: "params_test_fill", source: FILL_SOURCE, params };
    assert.throws(
      () =>
        dispatch(kernel, {
          buffers: [out.buffer],
          params: Object.fromEntries(params.map((p) => [p, 1])),
          workgroups: [1],
        }),
      (e: Error) => message.test(e.message) && /struct Params \(count, value\)/.test(e.message),
    );
  }
  out.dispose();
});

gpuTest("params filled by name reach the kernel", async () => {
  const out = Tensor.empty([5]);
  const kernel = { name: "params_test_fill", source: FILL_SOURCE, params: ["count", "value"] };
  dispatch(kernel, { buffers: [out.buffer], params: { value: 2.5, count: 3 }, workgroups: [1] });
  dispatch(kernel, { buffers: [out.buffer], params: { count: 5, value: 2.5 }, workgroups: [0] });
  const values = new Float32Array(await readBuffer(out.buffer, 0, 12));
  assert.deepEqual([...values], [2.5, 2.5, 2.5]);
  assert.equal(gpuCounters().pendingCommands, 0);
  flush();
  out.dispose();
});
