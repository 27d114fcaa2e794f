// conv2d_forward_tiled: y = epilogue(conv2d(x, w)), the gpu family's convolution (PyTorch's
// semantics: cross-correlation, zero padding, dilation 1, groups 1, any kernel, stride and
// padding), as an implicit GEMM: Y[m, o] = sum over k of X[m, k] * W[k, o] with
// m = (n, oy, ox) over M = N * OH * OW output pixels, o over the O output channels and
// k = (c, ky, kx) over K = C * KH * KW, X[m, k] = x[n, c, oy * stride_h - pad_h + ky,
// ox * stride_w - pad_w + kx] (0 in the padding) gathered on the fly (never stored), and
// W[k, o] = w[o, c, ky, kx].
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 w: array<f32>
// [O, C, KH, KW] (OIHW); 3 chan: array<f32>, per-channel values of the epilogue (below; any
// buffer when epilogue = 0); 4 res: array<f32> [N, O, OH, OW], added when has_residual (any
// buffer otherwise); 5 y: array<f32> [N, O, OH, OW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// m = N * OH * OW, k = C * KH * KW, epilogue, has_residual, relu.
// Epilogue of each output value v of channel o: epilogue 0: v; 1: v + chan[o] (a bias [O]);
// 2: (v - chan[o]) * chan[O + o] + chan[2 * O + o] (an eval-mode batch norm folded with the
// bias, chan = [3, O] from batch_norm_fold); then + res when has_residual, then max(v, 0) (NaN
// kept) when relu.
// Overrides: TM (pixels per tile: 16, 32, 64 or 128), TN (channels per tile: 16, 32 or 64),
// WG = TM * TN / 16 invocations (64 to 256; a multiple of TM).
// Grid: x and z cover the ceil(M / TM) pixel tiles flat (tile = wid.x + wid.z * nwg.x), y the
// ceil(O / TN) channel tiles.
// One workgroup computes a TM x TN tile of Y: per step of BK = 16 values of k it stages the
// X tile [BK, TM] and the W tile [BK, TN] in workgroup memory (as vec4s: 12 KiB at most, within
// WebGPU's default 16 KiB), then each invocation multiplies them into its 4 pixels x 4 channels
// (16 accumulators: 4 pixel vec4s, one per channel), reading one vec4 of each tile per k.
// Invocation t owns pixels 4 * (t % (TM / 4)) .. + 3 and channels 4 * (t / (TM / 4)) .. + 3 of
// the tile. Loads: X by pixel (t % TM, consecutive invocations read consecutive columns), W by k
// (consecutive invocations read consecutive weights of one filter).
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, m: u32, k: u32, epilogue: u32,
  has_residual: u32, relu: u32,
}

override TM: u32 = 64;
override TN: u32 = 64;
override WG: u32 = 256;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> chan: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// [BK, TM / 4] and [BK, TN / 4] vec4s, sized for the largest tiles (TM = 128, TN = 64).
var<workgroup> x_tile: array<vec4f, 512>;
var<workgroup> w_tile: array<vec4f, 256>;

fn finish(v: f32, o: u32, at: u32) -> f32 {
  var r = v;
  if (p.epilogue == 1u) {
    r += chan[o];
  } else if (p.epilogue == 2u) {
    r = (r - chan[o]) * chan[p.o + o] + chan[2u * p.o + o];
  }
  if (p.has_residual != 0u) { r += res[at]; }
  if (p.relu != 0u) { r = select(r, 0.0, r < 0.0); }
  return r;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) t: u32,
) {
  let m0 = (wid.x + wid.z * nwg.x) * TM;
  let o0 = wid.y * TN;
  let ohw = p.oh * p.ow;
  let khw = p.kh * p.kw;
  let hw = p.h * p.w;

  // The pixel this invocation loads into the X tile (the same for every step of k).
  let lm = t % TM;
  let gm = m0 + lm;
  let m_in = gm < p.m;
  let ln = gm / ohw;
  let lp = gm - ln * ohw;
  let loy = lp / p.ow;
  let lox = lp - loy * p.ow;
  let iy0 = i32(loy * p.stride_h) - i32(p.pad_h);
  let ix0 = i32(lox * p.stride_w) - i32(p.pad_w);
  let xbase = ln * p.c * hw;

  let tm = t % (TM / 4u);
  let tn = t / (TM / 4u);
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  for (var k0 = 0u; k0 < p.k; k0 += BK) {
    // X tile: element (kk, lm) for kk = t / TM, + WG / TM, ...
    for (var kk = t / TM; kk < BK; kk += WG / TM) {
      let k = k0 + kk;
      var v = 0.0;
      if (m_in && k < p.k) {
        let c = k / khw;
        let r = k - c * khw;
        let ky = r / p.kw;
        let iy = iy0 + i32(ky);
        let ix = ix0 + i32(r - ky * p.kw);
        if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
          v = x[xbase + c * hw + u32(iy) * p.w + u32(ix)];
        }
      }
      x_tile[kk * (TM / 4u) + lm / 4u][lm % 4u] = v;
    }
    // W tile: element (kk, nn) for i = t, t + WG, ... with kk = i % BK, nn = i / BK.
    for (var i = t; i < BK * TN; i += WG) {
      let kk = i % BK;
      let nn = i / BK;
      let k = k0 + kk;
      let o = o0 + nn;
      var v = 0.0;
      if (k < p.k && o < p.o) { v = wt[o * p.k + k]; }
      w_tile[kk * (TN / 4u) + nn / 4u][nn % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = x_tile[kk * (TM / 4u) + tm];
      let b = w_tile[kk * (TN / 4u) + tn];
      acc0 += a * b.x;
      acc1 += a * b.y;
      acc2 += a * b.z;
      acc3 += a * b.w;
    }
    workgroupBarrier();
  }

  // Stores: channel o0 + 4 * tn + j of pixels m0 + 4 * tm + i.
  let oc = o0 + 4u * tn;
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + 4u * tm + i;
    if (m >= p.m) { break; }
    let n = m / ohw;
    let at = n * p.o * ohw + (m - n * ohw);
    if (oc < p.o) { y[at + oc * ohw] = finish(acc0[i], oc, at + oc * ohw); }
    if (oc + 1u < p.o) { y[at + (oc + 1u) * ohw] = finish(acc1[i], oc + 1u, at + (oc + 1u) * ohw); }
    if (oc + 2u < p.o) { y[at + (oc + 2u) * ohw] = finish(acc2[i], oc + 2u, at + (oc + 2u) * ohw); }
    if (oc + 3u < p.o) { y[at + (oc + 3u) * ohw] = finish(acc3[i], oc + 3u, at + (oc + 3u) * ohw); }
  }
}
