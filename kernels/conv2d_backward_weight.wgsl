// conv2d_backward_weight: gw = d(sum(y * gy)) / dw for y = conv2d(x, w):
// gw[o, c, ky, kx] = sum over (n, oy, ox) of gy[n, o, oy, ox] *
// x[n, c, oy * stride_h - pad_h + ky, ox * stride_w - pad_w + kx] (zero outside the input).
// Split-K: the N * OH output rows are cut into `chunks` runs of `rows_per_chunk`; each chunk
// writes its own partial sums, added up by conv2d_reduce_chunks (with chunks = 1, `out` is gw).
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 gy: array<f32>
// [N, O, OH, OW]; 3 out: array<f32> [chunks, O, C, KH, KW] (writes every element).
// Params: n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// lanes = ceil(C / 4) * KH * KW, rows_per_chunk, rows = N * OH (all u32).
// Workgroup WG (override, default 64). Grid: x = ceil(lanes / WG) over (channel block, ky, kx),
// y = ceil(O / 4) output-channel blocks, z = chunks.
// One invocation computes 4 output channels x 4 input channels of one tap (ky, kx) over its
// chunk, accumulating in vec4<f32> (one per input channel, lanes = output channels). Output
// channel block and chunk come from the workgroup id, so the gy loads are uniform.
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

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let l = gid.x;
  if (l >= p.lanes) { return; }
  let kx = l % p.kw;
  let rest = l / p.kw;
  let ky = rest % p.kh;
  let c0 = (rest / p.kh) * 4u;
  let o0 = wid.y * 4u;
  let chunk = wid.z;

  let ipix = p.h * p.w;
  let opix = p.oh * p.ow;
  let last_c = p.c - 1u;
  let xc0 = min(c0, last_c) * ipix;
  let xc1 = min(c0 + 1u, last_c) * ipix;
  let xc2 = min(c0 + 2u, last_c) * ipix;
  let xc3 = min(c0 + 3u, last_c) * ipix;
  let last_o = p.o - 1u;
  let go0 = min(o0, last_o) * opix;
  let go1 = min(o0 + 1u, last_o) * opix;
  let go2 = min(o0 + 2u, last_o) * opix;
  let go3 = min(o0 + 3u, last_o) * opix;

  let row_begin = chunk * p.rows_per_chunk;
  let row_end = min(row_begin + p.rows_per_chunk, p.rows);
  let wlast = i32(p.w) - 1;
  let sw = i32(p.stride_w);
  let ix0 = i32(kx) - i32(p.pad_w);

  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  for (var r = row_begin; r < row_end; r++) {
    let oy = r % p.oh;
    let n = r / p.oh;
    let iy = i32(oy * p.stride_h + ky) - i32(p.pad_h);
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let xrow = n * p.c * ipix + u32(iy) * p.w;
    let grow = n * p.o * opix + oy * p.ow;
    for (var ox = 0u; ox < p.ow; ox++) {
      let g = grow + ox;
      let gv = vec4f(gy[go0 + g], gy[go1 + g], gy[go2 + g], gy[go3 + g]);
      let ix = i32(ox) * sw + ix0;
      let xi = xrow + u32(clamp(ix, 0, wlast));
      let inside = ix >= 0 && ix <= wlast;
      a0 += select(0.0, x[xc0 + xi], inside) * gv;
      a1 += select(0.0, x[xc1 + xi], inside) * gv;
      a2 += select(0.0, x[xc2 + xi], inside) * gv;
      a3 += select(0.0, x[xc3 + xi], inside) * gv;
    }
  }

  let ksize = p.kh * p.kw;
  let per_o = p.c * ksize;
  let base = chunk * p.o * per_o + o0 * per_o + c0 * ksize + ky * p.kw + kx;
  let results = array<vec4f, 4>(a0, a1, a2, a3);
  for (var j = 0u; j < 4u; j++) {
    if (c0 + j >= p.c) { break; }
    let v = results[j];
    for (var i = 0u; i < 4u; i++) {
      if (o0 + i >= p.o) { break; }
      out[base + i * per_o + j * ksize] = v[i];
    }
  }
}
