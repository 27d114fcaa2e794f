// conv2d_forward: y = conv2d(x, w) + b, a direct convolution with PyTorch's semantics
// (cross-correlation, zero padding, dilation 1, groups 1).
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 w: array<f32> [O, C, KH, KW]
// (OIHW); 3 bias: array<f32> [O] (any buffer of >= O floats when has_bias = 0: then not added);
// 4 y: array<f32> [N, O, OH, OW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w, has_bias,
// blocks_w = ceil(OW / 8), pixel_blocks = N * OH * blocks_w.
// Workgroup WG (override, default 64). Grid: x and z cover the pixel blocks flat
// (f = gid.x + wid.z * nwg.x * WG, as grid1d splits them), y = ceil(O / 8) channel blocks.
// One invocation computes a register block of 8 output channels x 8 adjacent output pixels of
// one row (accumulators a<pixel>l / a<pixel>h: channels 0-3 / 4-7), with the channel loop
// innermost so each (ky, kx) tap's clamped columns and padding masks are computed once. On
// llvmpipe every load costs far more than an FMA: the 8x8 block does 64 FMAs per 16 loads, and
// the channel block comes from the workgroup id, so the weight loads are uniform.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, has_bias: u32, blocks_w: u32, pixel_blocks: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Writes channels 0..count-1 of one output pixel (channel stride OH * OW).
fn store(at: u32, count: u32, lo: vec4f, hi: vec4f) {
  let opix = p.oh * p.ow;
  for (var i = 0u; i < min(count, 4u); i++) { y[at + i * opix] = lo[i]; }
  for (var i = 4u; i < count; i++) { y[at + i * opix] = hi[i - 4u]; }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let f = gid.x + wid.z * nwg.x * WG;
  if (f >= p.pixel_blocks) { return; }
  let wb = f % p.blocks_w;
  let rest = f / p.blocks_w;
  let oy = rest % p.oh;
  let n = rest / p.oh;
  let ox0 = wb * 8u;
  let o0 = wid.y * 8u;

  // Rows of the 8 filters, clamped to the last one past O (their sums are never stored).
  let ksize = p.kh * p.kw;
  let per_o = p.c * ksize;
  let last_o = p.o - 1u;
  let w0 = min(o0, last_o) * per_o;
  let w1 = min(o0 + 1u, last_o) * per_o;
  let w2 = min(o0 + 2u, last_o) * per_o;
  let w3 = min(o0 + 3u, last_o) * per_o;
  let w4 = min(o0 + 4u, last_o) * per_o;
  let w5 = min(o0 + 5u, last_o) * per_o;
  let w6 = min(o0 + 6u, last_o) * per_o;
  let w7 = min(o0 + 7u, last_o) * per_o;

  let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
  let ix_first = i32(ox0 * p.stride_w) - i32(p.pad_w);
  let stride_w = i32(p.stride_w);
  let wlast = i32(p.w) - 1;
  let plane = p.h * p.w;
  let xbase = n * p.c * plane;

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
  for (var ky = 0u; ky < p.kh; ky++) {
    let iy = iy0 + i32(ky);
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let row = xbase + u32(iy) * p.w;
    for (var kx = 0u; kx < p.kw; kx++) {
      // Columns clamped into the row; the masks zero the padding.
      let ix = ix_first + i32(kx);
      let ix0 = ix;
      let col0 = row + u32(clamp(ix0, 0, wlast));
      let in0 = ix0 >= 0 && ix0 <= wlast;
      let ix1 = ix + stride_w;
      let col1 = row + u32(clamp(ix1, 0, wlast));
      let in1 = ix1 >= 0 && ix1 <= wlast;
      let ix2 = ix + 2 * stride_w;
      let col2 = row + u32(clamp(ix2, 0, wlast));
      let in2 = ix2 >= 0 && ix2 <= wlast;
      let ix3 = ix + 3 * stride_w;
      let col3 = row + u32(clamp(ix3, 0, wlast));
      let in3 = ix3 >= 0 && ix3 <= wlast;
      let ix4 = ix + 4 * stride_w;
      let col4 = row + u32(clamp(ix4, 0, wlast));
      let in4 = ix4 >= 0 && ix4 <= wlast;
      let ix5 = ix + 5 * stride_w;
      let col5 = row + u32(clamp(ix5, 0, wlast));
      let in5 = ix5 >= 0 && ix5 <= wlast;
      let ix6 = ix + 6 * stride_w;
      let col6 = row + u32(clamp(ix6, 0, wlast));
      let in6 = ix6 >= 0 && ix6 <= wlast;
      let ix7 = ix + 7 * stride_w;
      let col7 = row + u32(clamp(ix7, 0, wlast));
      let in7 = ix7 >= 0 && ix7 <= wlast;
      var k = ky * p.kw + kx;
      var xo = 0u;
      for (var c = 0u; c < p.c; c++) {
        let wl = vec4f(wt[w0 + k], wt[w1 + k], wt[w2 + k], wt[w3 + k]);
        let wh = vec4f(wt[w4 + k], wt[w5 + k], wt[w6 + k], wt[w7 + k]);
        let x0 = select(0.0, x[col0 + xo], in0);
        a0l += x0 * wl;
        a0h += x0 * wh;
        let x1 = select(0.0, x[col1 + xo], in1);
        a1l += x1 * wl;
        a1h += x1 * wh;
        let x2 = select(0.0, x[col2 + xo], in2);
        a2l += x2 * wl;
        a2h += x2 * wh;
        let x3 = select(0.0, x[col3 + xo], in3);
        a3l += x3 * wl;
        a3h += x3 * wh;
        let x4 = select(0.0, x[col4 + xo], in4);
        a4l += x4 * wl;
        a4h += x4 * wh;
        let x5 = select(0.0, x[col5 + xo], in5);
        a5l += x5 * wl;
        a5h += x5 * wh;
        let x6 = select(0.0, x[col6 + xo], in6);
        a6l += x6 * wl;
        a6h += x6 * wh;
        let x7 = select(0.0, x[col7 + xo], in7);
        a7l += x7 * wl;
        a7h += x7 * wh;
        k += ksize;
        xo += plane;
      }
    }
  }

  var bl = vec4f(0.0);
  var bh = vec4f(0.0);
  if (p.has_bias != 0u) {
    bl = vec4f(bias[min(o0, last_o)], bias[min(o0 + 1u, last_o)], bias[min(o0 + 2u, last_o)],
      bias[min(o0 + 3u, last_o)]);
    bh = vec4f(bias[min(o0 + 4u, last_o)], bias[min(o0 + 5u, last_o)],
      bias[min(o0 + 6u, last_o)], bias[min(o0 + 7u, last_o)]);
  }
  let count = min(8u, p.o - o0);
  let base = (n * p.o + o0) * p.oh * p.ow + oy * p.ow + ox0;
  store(base, count, a0l + bl, a0h + bh);
  if (ox0 + 1u < p.ow) { store(base + 1u, count, a1l + bl, a1h + bh); }
  if (ox0 + 2u < p.ow) { store(base + 2u, count, a2l + bl, a2h + bh); }
  if (ox0 + 3u < p.ow) { store(base + 3u, count, a3l + bl, a3h + bh); }
  if (ox0 + 4u < p.ow) { store(base + 4u, count, a4l + bl, a4h + bh); }
  if (ox0 + 5u < p.ow) { store(base + 5u, count, a5l + bl, a5h + bh); }
  if (ox0 + 6u < p.ow) { store(base + 6u, count, a6l + bl, a6h + bh); }
  if (ox0 + 7u < p.ow) { store(base + 7u, count, a7l + bl, a7h + bh); }
}
