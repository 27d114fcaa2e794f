// conv2d_backward_input: gx = d(sum(y * gy)) / dx for y = conv2d(x, w), gathered (no atomics):
// gx[n, c, iy, ix] = sum of gy[n, o, oy, ox] * w[o, c, ky, kx] over the (o, ky, kx) with
// iy = oy * stride_h - pad_h + ky and ix = ox * stride_w - pad_w + kx for an output position
// (oy, ox) inside [OH, OW], plus res[n, c, iy, ix] when HAS_RESIDUAL (autograd's gradient of the
// input from its other consumers, added here instead of by add_inplace).
// Bindings: 0 uniform Params (below); 1 gy: array<f32> [N, O, OH, OW]; 2 w: array<f32>
// [O, C, KH, KW] (OIHW); 3 res: array<f32> [N, C, H, W], read when HAS_RESIDUAL (any buffer
// otherwise); 4 gx: array<f32> [N, C, H, W] (writes every element, zero (or res) where no output
// position reads it).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// rows = ceil(H / stride_h), blocks_w = ceil(ceil(W / stride_w) / 8),
// pixel_blocks = N * rows * blocks_w.
// Overrides: WG (workgroup size, default 64), HAS_RESIDUAL (0 or 1). Grid: x and z cover the pixel blocks flat
// (f = gid.x + wid.z * nwg.x * WG, as grid1d splits them); y = ceil(C / 8) * stride_h * stride_w
// enumerates the input-channel block and the residues (ry, rx) of the input pixels modulo the
// stride.
// One invocation computes a register block of 8 input channels x 8 input pixels of one row that
// share their residue modulo the stride: iy = ry + stride_h * my and
// ix = rx + stride_w * (8 * wb + j).
// They are reached by the same taps, only ky = iy + pad_h and kx = ix + pad_w (mod stride), from
// the consecutive output columns ox0 + j, so no divisibility test is left in the loops. Channel
// block, residues and so the taps come from the workgroup id: the weight loads are uniform.
// Accumulators a<pixel>l / a<pixel>h hold input channels 0-3 / 4-7.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, rows: u32, blocks_w: u32, pixel_blocks: u32,
}

override WG: u32 = 64;
override HAS_RESIDUAL: u32 = 0;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> res: array<f32>;
@group(0) @binding(4) var<storage, read_write> gx: array<f32>;

// Writes v at gx[at], plus res[at] when HAS_RESIDUAL.
fn put(at: u32, v: f32) {
  if (HAS_RESIDUAL != 0u) {
    gx[at] = v + res[at];
  } else {
    gx[at] = v;
  }
}

// Writes channels 0..count-1 of one input pixel (channel stride H * W).
fn store(at: u32, count: u32, lo: vec4f, hi: vec4f) {
  let ipix = p.h * p.w;
  for (var i = 0u; i < min(count, 4u); i++) { put(at + i * ipix, lo[i]); }
  for (var i = 4u; i < count; i++) { put(at + i * ipix, hi[i - 4u]); }
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
  let my = rest % p.rows;
  let n = rest / p.rows;
  let rx = wid.y % p.stride_w;
  let ry = (wid.y / p.stride_w) % p.stride_h;
  let c0 = (wid.y / (p.stride_w * p.stride_h)) * 8u;
  let m0 = wb * 8u;
  let iy = ry + p.stride_h * my;
  let ix0 = rx + p.stride_w * m0;
  // Rows and column blocks are counted for the largest residue class; some start past the edge.
  if (iy >= p.h || ix0 >= p.w) { return; }

  // Weight offsets of the 8 channels, clamped to the last one past C (never stored).
  let ksize = p.kh * p.kw;
  let last_c = p.c - 1u;
  let wc0 = min(c0, last_c) * ksize;
  let wc1 = min(c0 + 1u, last_c) * ksize;
  let wc2 = min(c0 + 2u, last_c) * ksize;
  let wc3 = min(c0 + 3u, last_c) * ksize;
  let wc4 = min(c0 + 4u, last_c) * ksize;
  let wc5 = min(c0 + 5u, last_c) * ksize;
  let wc6 = min(c0 + 6u, last_c) * ksize;
  let wc7 = min(c0 + 7u, last_c) * ksize;
  let per_o = p.c * ksize;
  let opix = p.oh * p.ow;
  let olast = i32(p.ow) - 1;
  let gbase = n * p.o * opix;

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
  for (var ky = (ry + p.pad_h) % p.stride_h; ky < p.kh; ky += p.stride_h) {
    let oy = i32(my) + (i32(ry + p.pad_h) - i32(ky)) / i32(p.stride_h);
    if (oy < 0 || oy >= i32(p.oh)) { continue; }
    let row = gbase + u32(oy) * p.ow;
    for (var kx = (rx + p.pad_w) % p.stride_w; kx < p.kw; kx += p.stride_w) {
      // Output columns clamped into the row; the masks drop those outside it.
      let ox = i32(m0) + (i32(rx + p.pad_w) - i32(kx)) / i32(p.stride_w);
      let ox0 = ox;
      let col0 = row + u32(clamp(ox0, 0, olast));
      let in0 = ox0 >= 0 && ox0 <= olast;
      let ox1 = ox + 1;
      let col1 = row + u32(clamp(ox1, 0, olast));
      let in1 = ox1 >= 0 && ox1 <= olast;
      let ox2 = ox + 2;
      let col2 = row + u32(clamp(ox2, 0, olast));
      let in2 = ox2 >= 0 && ox2 <= olast;
      let ox3 = ox + 3;
      let col3 = row + u32(clamp(ox3, 0, olast));
      let in3 = ox3 >= 0 && ox3 <= olast;
      let ox4 = ox + 4;
      let col4 = row + u32(clamp(ox4, 0, olast));
      let in4 = ox4 >= 0 && ox4 <= olast;
      let ox5 = ox + 5;
      let col5 = row + u32(clamp(ox5, 0, olast));
      let in5 = ox5 >= 0 && ox5 <= olast;
      let ox6 = ox + 6;
      let col6 = row + u32(clamp(ox6, 0, olast));
      let in6 = ox6 >= 0 && ox6 <= olast;
      let ox7 = ox + 7;
      let col7 = row + u32(clamp(ox7, 0, olast));
      let in7 = ox7 >= 0 && ox7 <= olast;
      var k = ky * p.kw + kx;
      var go = 0u;
      for (var o = 0u; o < p.o; o++) {
          let wl = vec4f(wt[wc0 + k], wt[wc1 + k], wt[wc2 + k], wt[wc3 + k]);
          let wh = vec4f(wt[wc4 + k], wt[wc5 + k], wt[wc6 + k], wt[wc7 + k]);
        let g0 = select(0.0, gy[col0 + go], in0);
        a0l += g0 * wl;
        a0h += g0 * wh;
        let g1 = select(0.0, gy[col1 + go], in1);
        a1l += g1 * wl;
        a1h += g1 * wh;
        let g2 = select(0.0, gy[col2 + go], in2);
        a2l += g2 * wl;
        a2h += g2 * wh;
        let g3 = select(0.0, gy[col3 + go], in3);
        a3l += g3 * wl;
        a3h += g3 * wh;
        let g4 = select(0.0, gy[col4 + go], in4);
        a4l += g4 * wl;
        a4h += g4 * wh;
        let g5 = select(0.0, gy[col5 + go], in5);
        a5l += g5 * wl;
        a5h += g5 * wh;
        let g6 = select(0.0, gy[col6 + go], in6);
        a6l += g6 * wl;
        a6h += g6 * wh;
        let g7 = select(0.0, gy[col7 + go], in7);
        a7l += g7 * wl;
        a7h += g7 * wh;
          k += per_o;
          go += opix;
      }
    }
  }

  let count = min(8u, p.c - c0);
  let base = (n * p.c + c0) * p.h * p.w + iy * p.w + ix0;
  store(base, count, a0l, a0h);
  if (ix0 + p.stride_w < p.w) { store(base + p.stride_w, count, a1l, a1h); }
  if (ix0 + 2u * p.stride_w < p.w) { store(base + 2u * p.stride_w, count, a2l, a2h); }
  if (ix0 + 3u * p.stride_w < p.w) { store(base + 3u * p.stride_w, count, a3l, a3h); }
  if (ix0 + 4u * p.stride_w < p.w) { store(base + 4u * p.stride_w, count, a4l, a4h); }
  if (ix0 + 5u * p.stride_w < p.w) { store(base + 5u * p.stride_w, count, a5l, a5h); }
  if (ix0 + 6u * p.stride_w < p.w) { store(base + 6u * p.stride_w, count, a6l, a6h); }
  if (ix0 + 7u * p.stride_w < p.w) { store(base + 7u * p.stride_w, count, a7l, a7h); }
}
