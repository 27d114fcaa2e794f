// conv2d_backward_weight_tiled: the gpu family's weight gradient of y = conv2d(x, w) (any kernel,
// stride and padding) as a split-K GEMM: partial[z, o, k] = sum over the pixels q of chunk z of
// G[q, o] * X[q, k], with q = (n, oy, ox) over the Q = N * OH * OW output pixels,
// G[q, o] = gy[n, o, oy, ox], k = (c, ky, kx) over K = C * KH * KW and X[q, k] =
// x[n, c, oy * stride_h - pad_h + ky, ox * stride_w - pad_w + kx] (0 in the padding), gathered
// on the fly. conv2d_reduce_chunks adds the chunks up (one chunk: partial is the gradient).
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 gy: array<f32>
// [N, O, OH, OW]; 3 partial: array<f32> [chunks, O, C, KH, KW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// q = N * OH * OW, k = C * KH * KW, per_chunk (pixels per chunk, a multiple of 16).
// Overrides: TM (output channels per tile: 16, 32 or 64), TN (values of k per tile: 16, 32 or
// 64), WG = TM * TN / 16 invocations (64 to 256).
// Grid: x = ceil(K / TN) tiles of k, y = ceil(O / TM) tiles of channels, z = chunks.
// One workgroup computes a TM x TN tile of one chunk's partial sums: per step of BK = 16 pixels
// it stages the G tile [BK, TM] and the X tile [BK, TN] in workgroup memory (as vec4s: 8 KiB at
// most, within WebGPU's default 16 KiB), then each invocation multiplies them into its
// 4 channels x 4 values of k (16 accumulators: 4 channel vec4s, one per value of k), reading one
// vec4 of each tile per pixel. Invocation t owns channels 4 * (t % (TM / 4)) .. + 3 and values
// 4 * (t / (TM / 4)) .. + 3 of k. Loads: pixel t % BK of the step (consecutive invocations read
// consecutive pixels), so each invocation splits its pixel into (n, oy, ox) once per step.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, q: u32, k: u32, per_chunk: u32,
}

override TM: u32 = 64;
override TN: u32 = 64;
override WG: u32 = 256;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

// [BK, TM / 4] and [BK, TN / 4] vec4s, sized for the largest tiles (64).
var<workgroup> g_tile: array<vec4f, 256>;
var<workgroup> x_tile: array<vec4f, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let k_first = wid.x * TN;
  let o_first = wid.y * TM;
  let q_first = wid.z * p.per_chunk;
  let q_end = min(q_first + p.per_chunk, p.q);
  let ohw = p.oh * p.ow;
  let khw = p.kh * p.kw;
  let hw = p.h * p.w;

  let kk = t % BK;
  let tm = t % (TM / 4u);
  let tn = t / (TM / 4u);
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  for (var q0 = q_first; q0 < q_end; q0 += BK) {
    // This invocation's pixel of the step.
    let q = q0 + kk;
    let q_in = q < q_end;
    let n = q / ohw;
    let pix = q - n * ohw;
    let oy = pix / p.ow;
    let ox = pix - oy * p.ow;
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_w);
    // G tile: channels mm = t / BK, + WG / BK, ...
    for (var mm = t / BK; mm < TM; mm += WG / BK) {
      let o = o_first + mm;
      var v = 0.0;
      if (q_in && o < p.o) { v = gy[(n * p.o + o) * ohw + pix]; }
      g_tile[kk * (TM / 4u) + mm / 4u][mm % 4u] = v;
    }
    // X tile: values nn = t / BK, + WG / BK, ... of k.
    for (var nn = t / BK; nn < TN; nn += WG / BK) {
      let k = k_first + nn;
      var v = 0.0;
      if (q_in && k < p.k) {
        let c = k / khw;
        let r = k - c * khw;
        let ky = r / p.kw;
        let iy = iy0 + i32(ky);
        let ix = ix0 + i32(r - ky * p.kw);
        if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
          v = x[(n * p.c + c) * hw + u32(iy) * p.w + u32(ix)];
        }
      }
      x_tile[kk * (TN / 4u) + nn / 4u][nn % 4u] = v;
    }
    workgroupBarrier();
    for (var s = 0u; s < BK; s++) {
      let a = g_tile[s * (TM / 4u) + tm];
      let b = x_tile[s * (TN / 4u) + tn];
      acc0 += a * b.x;
      acc1 += a * b.y;
      acc2 += a * b.z;
      acc3 += a * b.w;
    }
    workgroupBarrier();
  }

  // Stores: value k_first + 4 * tn + j of k for channels o_first + 4 * tm + i.
  let kc = k_first + 4u * tn;
  let base = wid.z * p.o * p.k;
  for (var i = 0u; i < 4u; i++) {
    let o = o_first + 4u * tm + i;
    if (o >= p.o) { break; }
    let at = base + o * p.k + kc;
    if (kc < p.k) { partial[at] = acc0[i]; }
    if (kc + 1u < p.k) { partial[at + 1u] = acc1[i]; }
    if (kc + 2u < p.k) { partial[at + 2u] = acc2[i]; }
    if (kc + 3u < p.k) { partial[at + 3u] = acc3[i]; }
  }
}
