// conv2d_backward_weight: gw = d(sum(y * gy)) / dw for y = conv2d(x, w):
// gw[o, c, ky, kx] = sum over (n, oy, ox) of gy[n, o, oy, ox] *
// x[n, c, oy * stride_h - pad_h + ky, ox * stride_w - pad_w + kx] (zero outside the input).
// Split-K: the N * OH output rows are cut into `chunks` runs of `rows_per_chunk`; each chunk
// writes its own partial sums, which conv2d_reduce_chunks adds up (with one chunk, `out` is gw).
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 gy: array<f32>
// [N, O, OH, OW]; 3 out: array<f32> [chunks, O, C, KH, KW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// lanes = ceil(C / 8) * KH * KW, rows_per_chunk, rows = N * OH.
// Workgroup WG (override, default 64). Grid: x = ceil(lanes / WG) over (input-channel block, ky,
// kx), y = ceil(O / 8) output-channel blocks, z = chunks.
// One invocation computes a register block of 8 output channels x 8 input channels of one tap
// (ky, kx) over its chunk (accumulators a<input channel>l / h hold output channels 0-3 / 4-7).
// The output-channel block and the chunk come from the workgroup id, so the gy loads are uniform.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, lanes: u32, rows_per_chunk: u32, rows: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Writes output channels 0..count-1 of one (c, ky, kx) weight (channel stride C * KH * KW).
fn store(at: u32, count: u32, lo: vec4f, hi: vec4f) {
  let per_o = p.c * p.kh * p.kw;
  for (var i = 0u; i < min(count, 4u); i++) { out[at + i * per_o] = lo[i]; }
  for (var i = 4u; i < count; i++) { out[at + i * per_o] = hi[i - 4u]; }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let l = gid.x;
  if (l >= p.lanes) { return; }
  let kx = l % p.kw;
  let rest = l / p.kw;
  let ky = rest % p.kh;
  let c0 = (rest / p.kh) * 8u;
  let o0 = wid.y * 8u;
  let chunk = wid.z;

  // Channel offsets clamped to the last channel past C or O (those sums are never stored).
  let ipix = p.h * p.w;
  let opix = p.oh * p.ow;
  let last_c = p.c - 1u;
  let last_o = p.o - 1u;
  let xc0 = min(c0, last_c) * ipix;
  let xc1 = min(c0 + 1u, last_c) * ipix;
  let xc2 = min(c0 + 2u, last_c) * ipix;
  let xc3 = min(c0 + 3u, last_c) * ipix;
  let xc4 = min(c0 + 4u, last_c) * ipix;
  let xc5 = min(c0 + 5u, last_c) * ipix;
  let xc6 = min(c0 + 6u, last_c) * ipix;
  let xc7 = min(c0 + 7u, last_c) * ipix;
  let go0 = min(o0, last_o) * opix;
  let go1 = min(o0 + 1u, last_o) * opix;
  let go2 = min(o0 + 2u, last_o) * opix;
  let go3 = min(o0 + 3u, last_o) * opix;
  let go4 = min(o0 + 4u, last_o) * opix;
  let go5 = min(o0 + 5u, last_o) * opix;
  let go6 = min(o0 + 6u, last_o) * opix;
  let go7 = min(o0 + 7u, last_o) * opix;

  let row_begin = chunk * p.rows_per_chunk;
  let row_end = min(row_begin + p.rows_per_chunk, p.rows);
  let wlast = i32(p.w) - 1;
  let ix0 = i32(kx) - i32(p.pad_w);

  var a0l = vec4f(0.0);
  var a0h = vec4f(0.0);
  var a1l = vec4f(0.0);
  var a1h = vec4f(0.0);
  var a2l = vec4f(0.0);
  var a2h = vec4f(0.0);
  var a3l = vec4f(0.0);
  var a3h = vec4f(0.0);
  var a4l = vec4f(0.0);
  var a4h = vec4f(0.0);
  var a5l = vec4f(0.0);
  var a5h = vec4f(0.0);
  var a6l = vec4f(0.0);
  var a6h = vec4f(0.0);
  var a7l = vec4f(0.0);
  var a7h = vec4f(0.0);
  for (var r = row_begin; r < row_end; r++) {
    let oy = r % p.oh;
    let n = r / p.oh;
    let iy = i32(oy * p.stride_h + ky) - i32(p.pad_h);
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let xrow = n * p.c * ipix + u32(iy) * p.w;
    var g = n * p.o * opix + oy * p.ow;
    var ix = ix0;
    for (var ox = 0u; ox < p.ow; ox++) {
      let gl = vec4f(gy[go0 + g], gy[go1 + g], gy[go2 + g], gy[go3 + g]);
      let gh = vec4f(gy[go4 + g], gy[go5 + g], gy[go6 + g], gy[go7 + g]);
      // The column clamped into the row; the mask zeroes the padding.
      let xi = xrow + u32(clamp(ix, 0, wlast));
      let inside = ix >= 0 && ix <= wlast;
      let x0 = select(0.0, x[xc0 + xi], inside);
      a0l += x0 * gl;
      a0h += x0 * gh;
      let x1 = select(0.0, x[xc1 + xi], inside);
      a1l += x1 * gl;
      a1h += x1 * gh;
      let x2 = select(0.0, x[xc2 + xi], inside);
      a2l += x2 * gl;
      a2h += x2 * gh;
      let x3 = select(0.0, x[xc3 + xi], inside);
      a3l += x3 * gl;
      a3h += x3 * gh;
      let x4 = select(0.0, x[xc4 + xi], inside);
      a4l += x4 * gl;
      a4h += x4 * gh;
      let x5 = select(0.0, x[xc5 + xi], inside);
      a5l += x5 * gl;
      a5h += x5 * gh;
      let x6 = select(0.0, x[xc6 + xi], inside);
      a6l += x6 * gl;
      a6h += x6 * gh;
      let x7 = select(0.0, x[xc7 + xi], inside);
      a7l += x7 * gl;
      a7h += x7 * gh;
      g += 1u;
      ix += i32(p.stride_w);
    }
  }

  let ksize = p.kh * p.kw;
  let count = min(8u, p.o - o0);
  let base = (chunk * p.o + o0) * p.c * ksize + c0 * ksize + ky * p.kw + kx;
  store(base, count, a0l, a0h);
  if (c0 + 1u < p.c) { store(base + ksize, count, a1l, a1h); }
  if (c0 + 2u < p.c) { store(base + 2u * ksize, count, a2l, a2h); }
  if (c0 + 3u < p.c) { store(base + 3u * ksize, count, a3l, a3h); }
  if (c0 + 4u < p.c) { store(base + 4u * ksize, count, a4l, a4h); }
  if (c0 + 5u < p.c) { store(base + 5u * ksize, count, a5l, a5h); }
  if (c0 + 6u < p.c) { store(base + 6u * ksize, count, a6l, a6h); }
  if (c0 + 7u < p.c) { store(base + 7u * ksize, count, a7l, a7h); }
}
