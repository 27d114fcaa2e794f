// conv2d_backward_bias: gb[o] = sum over (n, oy, ox) of gy[n, o, oy, ox].
// Split-K like conv2d_backward_weight: the N * OH output rows are cut into `chunks` runs of
// `rows_per_chunk`; each chunk writes its partial sums, added up by conv2d_reduce_chunks (with
// chunks = 1, `out` is gb).
// Bindings: 0 uniform Params { o, oh, ow, rows_per_chunk, rows = N * OH, count = O * chunks }
// (u32); 1 gy: array<vec4f> [N, O, OH, OW] (pool buffers are whole vec4s); 2 out: array<f32>
// [chunks, O] (writes every element).
// Override VEC4: OW % 4 == 0, so that every output row is whole vec4s and is read as vec4s (on
// llvmpipe a vec4 load costs about twice a scalar one for four times the data).
// Workgroup 64; dispatch grid1d(count, 64); one invocation sums one channel over one chunk.
struct Params { o: u32, oh: u32, ow: u32, rows_per_chunk: u32, rows: u32, count: u32 }

@group(0) @binding(0) var<uniform> p: Params;
override VEC4: bool = false;

@group(0) @binding(1) var<storage, read> gy: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn at(i: u32) -> f32 {
  return gy[i / 4u][i % 4u];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // Past-the-end invocations sum the last channel again and store nothing: no early return, so
  // the loads below are not inside a branch (llvmpipe masks every load in one).
  let i0 = gid.x + gid.y * nwg.x * 64u;
  let i = min(i0, p.count - 1u);
  let o = i % p.o;
  let chunk = i / p.o;
  let row_begin = chunk * p.rows_per_chunk;
  let row_end = min(row_begin + p.rows_per_chunk, p.rows);
  let opix = p.oh * p.ow;
  var s = vec4f(0.0);
  for (var r = row_begin; r < row_end; r++) {
    let oy = r % p.oh;
    let n = r / p.oh;
    let row = (n * p.o + o) * opix + oy * p.ow;
    if (VEC4) {
      let row4 = row / 4u;
      for (var k = 0u; k < p.ow / 4u; k++) {
        s += gy[row4 + k];
      }
    } else {
      var ox = 0u;
      // Four running sums shorten the dependency chain of one long serial sum.
      for (; ox + 4u <= p.ow; ox += 4u) {
        s += vec4f(at(row + ox), at(row + ox + 1u), at(row + ox + 2u), at(row + ox + 3u));
      }
      for (; ox < p.ow; ox++) {
        s.x += at(row + ox);
      }
    }
  }
  if (i0 < p.count) {
    out[i] = (s.x + s.y) + (s.z + s.w);
  }
}
