// conv2d_backward_input_tiled: gx = d(sum(y * gy)) / dx for y = conv2d(x, w), the gpu family's
// input gradient (any kernel, stride and padding), as an implicit GEMM gathered without atomics:
// GX[m, c] = sum over k of G[m, k] * W[k, c] with m = (n, iy, ix) over M = N * H * W input
// pixels, c over the C input channels and k = (o, ky, kx) over K = O * KH * KW,
// G[m, k] = gy[n, o, oy, ox] for oy = (iy + pad_h - ky) / stride_h and
// ox = (ix + pad_w - kx) / stride_w when both divide exactly and lie inside [OH, OW] (else 0),
// gathered on the fly, and W[k, c] = w[o, c, ky, kx]; plus res[n, c, iy, ix] when HAS_RESIDUAL
// (autograd's gradient of the input from its other consumers, added here instead of by
// add_inplace).
// Bindings: 0 uniform Params (below); 1 gy: array<f32> [N, O, OH, OW]; 2 w: array<f32>
// [O, C, KH, KW] (OIHW); 3 res: array<f32> [N, C, H, W], read when HAS_RESIDUAL (any buffer
// otherwise); 4 gx: array<f32> [N, C, H, W] (writes every element, 0 (or res) where no output
// position reads it).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// m = N * H * W, k = O * KH * KW.
// Overrides: TM (pixels per tile: 16, 32, 64 or 128), TN (channels per tile: 16, 32 or 64),
// WG = TM * TN / 16 invocations (64 to 256; a multiple of TM), HAS_RESIDUAL (0 or 1).
// Grid: x and z cover the ceil(M / TM) pixel tiles flat (tile = wid.x + wid.z * nwg.x), y the
// ceil(C / TN) channel tiles.
// One workgroup computes a TM x TN tile of GX as conv2d_forward_tiled computes one of Y: per step
// of BK = 16 values of k it stages the G tile [BK, TM] and the W tile [BK, TN] in workgroup
// memory (as vec4s: 12 KiB at most), then each invocation multiplies them into its 4 pixels x 4
// channels (16 accumulators), reading one vec4 of each tile per k. Invocation t owns pixels
// 4 * (t % (TM / 4)) .. + 3 and channels 4 * (t / (TM / 4)) .. + 3 of the tile. At stride s only
// one tap in s * s reaches a pixel, so (s * s - 1) / (s * s) of the G tile is zeros.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, m: u32, k: u32,
}

override TM: u32 = 64;
override TN: u32 = 64;
override WG: u32 = 256;
override HAS_RESIDUAL: u32 = 0;
const BK: u32 = 16u;

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

// [BK, TM / 4] and [BK, TN / 4] vec4s, sized for the largest tiles (TM = 128, TN = 64).
var<workgroup> g_tile: array<vec4f, 512>;
var<workgroup> w_tile: array<vec4f, 256>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) t: u32,
) {
  let m0 = (wid.x + wid.z * nwg.x) * TM;
  let c0 = wid.y * TN;
  let ohw = p.oh * p.ow;
  let khw = p.kh * p.kw;
  let hw = p.h * p.w;
  let per_o = p.c * khw;

  // The input pixel this invocation loads into the G tile (the same for every step of k).
  let lm = t % TM;
  let gm = m0 + lm;
  let m_in = gm < p.m;
  let ln = gm / hw;
  let lp = gm - ln * hw;
  let liy = lp / p.w;
  let lix = lp - liy * p.w;
  // oy * stride_h = ry - ky, ox * stride_w = rx - kx.
  let ry = i32(liy + p.pad_h);
  let rx = i32(lix + p.pad_w);
  let gbase = ln * p.o * ohw;

  let tm = t % (TM / 4u);
  let tn = t / (TM / 4u);
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  for (var k0 = 0u; k0 < p.k; k0 += BK) {
    // G tile: element (kk, lm) for kk = t / TM, + WG / TM, ...
    for (var kk = t / TM; kk < BK; kk += WG / TM) {
      let k = k0 + kk;
      var v = 0.0;
      if (m_in && k < p.k) {
        let o = k / khw;
        let r = k - o * khw;
        let ky = r / p.kw;
        let dy = ry - i32(ky);
        let dx = rx - i32(r - ky * p.kw);
        let oy = dy / i32(p.stride_h);
        let ox = dx / i32(p.stride_w);
        if (dy >= 0 && dx >= 0 && oy * i32(p.stride_h) == dy && ox * i32(p.stride_w) == dx &&
            oy < i32(p.oh) && ox < i32(p.ow)) {
          v = gy[gbase + o * ohw + u32(oy) * p.ow + u32(ox)];
        }
      }
      g_tile[kk * (TM / 4u) + lm / 4u][lm % 4u] = v;
    }
    // W tile: element (kk, nn) for i = t, t + WG, ... with kk = i % BK, nn = i / BK.
    for (var i = t; i < BK * TN; i += WG) {
      let kk = i % BK;
      let nn = i / BK;
      let k = k0 + kk;
      let c = c0 + nn;
      var v = 0.0;
      if (k < p.k && c < p.c) {
        let o = k / khw;
        v = wt[o * per_o + c * khw + (k - o * khw)];
      }
      w_tile[kk * (TN / 4u) + nn / 4u][nn % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = g_tile[kk * (TM / 4u) + tm];
      let b = w_tile[kk * (TN / 4u) + tn];
      acc0 += a * b.x;
      acc1 += a * b.y;
      acc2 += a * b.z;
      acc3 += a * b.w;
    }
    workgroupBarrier();
  }

  // Stores: channel c0 + 4 * tn + j of pixels m0 + 4 * tm + i.
  let cc = c0 + 4u * tn;
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + 4u * tm + i;
    if (m >= p.m) { break; }
    let n = m / hw;
    let at = n * p.c * hw + (m - n * hw);
    if (cc < p.c) { put(at + cc * hw, acc0[i]); }
    if (cc + 1u < p.c) { put(at + (cc + 1u) * hw, acc1[i]); }
    if (cc + 2u < p.c) { put(at + (cc + 2u) * hw, acc2[i]); }
    if (cc + 3u < p.c) { put(at + (cc + 3u) * hw, acc3[i]); }
  }
}
