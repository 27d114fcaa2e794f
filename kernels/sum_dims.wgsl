// sum_dims: sums x over a set of dimensions, scaled (sum: scale 1, mean: 1 / R), optionally split
// into partial sums so that a large reduction is not one invocation looping over millions.
// The CPU merges neighbouring dimensions that are both kept or both reduced, so x is described by
// at most 8 kept and 8 reduced dimensions, each with its size and its element stride in x, listed
// innermost first.
// Bindings: 0 uniform Params (below); 1 x: array<f32> (reads, any layout the strides describe);
// 2 out: array<f32> [count, splits] row-major (writes; with splits == 1 that is the kept shape).
// Params { count: u32 (kept elements), splits: u32 (partial sums per kept element), chunk: u32
//   (reduced elements per split), rcount: u32 (R, all reduced elements), nk: u32, nr: u32,
//   ksize, kstride, rsize, rstride: array<vec4u, 2> (8 entries each, innermost first, at 16-byte
//   offsets as WGSL aligns them), scale: f32 }.
// Workgroup 64; dispatch grid1d(count * splits, 64); one invocation sums the reduced elements
// [s * chunk, min(R, (s + 1) * chunk)) of kept element o (flat index o * splits + s), walking the
// innermost reduced dimension in a tight loop, and writes the scaled sum.
struct Params {
  count: u32,
  splits: u32,
  chunk: u32,
  rcount: u32,
  nk: u32,
  nr: u32,
  ksize: array<vec4u, 2>,
  kstride: array<vec4u, 2>,
  rsize: array<vec4u, 2>,
  rstride: array<vec4u, 2>,
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn ksize(d: u32) -> u32 { return p.ksize[d >> 2u][d & 3u]; }
fn kstride(d: u32) -> u32 { return p.kstride[d >> 2u][d & 3u]; }
fn rsize(d: u32) -> u32 { return p.rsize[d >> 2u][d & 3u]; }
fn rstride(d: u32) -> u32 { return p.rstride[d >> 2u][d & 3u]; }

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.count * p.splits) { return; }
  let s = i % p.splits;
  var rem = i / p.splits;
  var base = 0u;
  for (var d = 0u; d < p.nk; d++) {
    let size = ksize(d);
    base += (rem % size) * kstride(d);
    rem /= size;
  }
  let inner = rsize(0u);
  let innerStride = rstride(0u);
  var r = s * p.chunk;
  let end = min(p.rcount, r + p.chunk);
  var acc = 0.0;
  while (r < end) {
    // Offset of reduced element r: its innermost coordinate j, then the outer ones.
    let j = r % inner;
    var q = r / inner;
    var offset = base + j * innerStride;
    for (var d = 1u; d < p.nr; d++) {
      let size = rsize(d);
      offset += (q % size) * rstride(d);
      q /= size;
    }
    let n = min(end - r, inner - j);
    for (var t = 0u; t < n; t++) {
      acc += x[offset];
      offset += innerStride;
    }
    r += n;
  }
  out[i] = acc * p.scale;
}
