// conv2d_forward_rows: y = epilogue(conv2d(x, w)) for stride 1 or 2 and rows of whole vec4s, the
// fast path of conv2d_forward (same semantics: cross-correlation, zero padding). conv2d's input
// gradient at stride 1 runs through it too, as the convolution of gy with the flipped,
// transposed filters (with res = autograd's gradient of the input from its other consumers, when
// it holds one), and conv2dBatchNormEval through its epilogue.
// Requires W % 4 == 0 and OW % 4 == 0 (rows and planes start on vec4 boundaries), KW <= 3,
// PAD_W <= 1 and KW - 1 - PAD_W <= 1 (every tap reads the input column STRIDE * ox - 1, + 0 or
// + 1).
// Bindings: 0 uniform Params (below); 1 x: array<vec4f> [N, C, H, W]; 2 wp: array<vec4f>
// [C, KH, KW, OP], the filters packed by conv2d_pack_weight (OP = O rounded up to 4 * QV, zero
// past O); 3 chan: array<f32>, per-channel values of the epilogue (below; any buffer when
// epilogue = 0); 4 res: array<vec4f> [N, O, OH, OW], added when has_residual (any buffer
// otherwise); 5 y: array<vec4f> [N, O, OH, OW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, pad_h, op, blocks_w = ceil(OW / (4 * PV)),
// pixel_blocks = N * ceil(OH / PY) * blocks_w, epilogue, has_residual, relu.
// Epilogue of each output value v of channel o: epilogue 0: v; 1: v + chan[o] (a bias [O]);
// 2: (v - chan[o]) * chan[O + o] + chan[2 * O + o] (an eval-mode batch norm folded with the
// bias, chan = [3, O] from batch_norm_fold); then + res when has_residual, then
// max(v, 0) (NaN kept) when relu.
// Overrides: WG (workgroup size), STRIDE (1 or 2, both directions), KW, PAD_W, PV (vec4s of
// output columns per invocation, 1..4), PY (output rows per invocation, PV * PY <= 4), QV (vec4s
// of output channels per invocation, 1..4).
// Grid: x and z cover the pixel blocks flat (f = gid.x + wid.z * nwg.x * WG, as grid1d splits
// them), y = ceil(O / (4 * QV)) channel blocks.
// One invocation computes 4 * PV adjacent output columns of PY adjacent rows for 4 * QV
// channels, as (PV * PY) x QV accumulators of 4 columns x 4 channels (mat4x4f, column j =
// channel j); pixel vec4 i is column vec4 i % PV of row i / PV.
// Why this shape on llvmpipe: every storage load is a loop over the 8 SIMD lanes, one scalar load
// per lane and component, so a load costs ~10x a multiply-add and a vec4 load about twice a
// scalar one for four times the data. Each input row is read once per (c, ky) as aligned vec4s
// (a window of STRIDE * 4 * PV + 4..8 columns) and all KW taps are shuffled out of those
// registers; the weights of a tap are read as vec4s of 4 channels. Per (c, ky) that is
// PY * (PV + 2) (stride 2: PY * (2 * PV + 1)) + KW * QV vec4 loads for 16 * KW * PV * PY * QV
// multiply-adds. Narrow planes (8 or 4 columns: PV < 4) take PY = 4 / PV rows, so that each
// weight load still serves four pixel vec4s. Loops over kx or blocks are spelled out (guarded by
// override constants, which the compiler folds): llvmpipe does not unroll loops, and a
// dynamically indexed accumulator array lives in memory.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  pad_h: u32, op: u32, blocks_w: u32, pixel_blocks: u32,
  epilogue: u32, has_residual: u32, relu: u32,
}

override WG: u32 = 64;
override STRIDE: u32 = 1;
override KW: u32 = 3;
override PAD_W: u32 = 1;
override PV: u32 = 4;
override PY: u32 = 1;
override QV: u32 = 2;

// Pixel vec4s per invocation.
override PT: u32 = PV * PY;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> wp: array<vec4f>;
@group(0) @binding(3) var<storage, read> chan: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4f>;

// m<pixel vec4><channel vec4>.
struct Acc {
  m00: mat4x4f, m01: mat4x4f, m02: mat4x4f, m03: mat4x4f,
  m10: mat4x4f, m11: mat4x4f, m12: mat4x4f, m13: mat4x4f,
  m20: mat4x4f, m21: mat4x4f, m22: mat4x4f, m23: mat4x4f,
  m30: mat4x4f, m31: mat4x4f, m32: mat4x4f, m33: mat4x4f,
}

// 4 columns x 4 channels: column j of the result is xs * w[j].
fn outer(xs: vec4f, w: vec4f) -> mat4x4f {
  return mat4x4f(xs * w.x, xs * w.y, xs * w.z, xs * w.w);
}

// The input columns that tap offset d (-1, 0 or 1) reads for output vec4 i, from the window v
// (v[k] = input columns STRIDE * ox0 - 4 + 4k).
fn operand(d: i32, i: u32, v: array<vec4f, 9>) -> vec4f {
  if (STRIDE == 1u) {
    // Columns ox - 1 + j .. : four consecutive ones around v[i + 1].
    if (d < 0) { return vec4f(v[i].w, v[i + 1u].xyz); }
    if (d == 0) { return v[i + 1u]; }
    return vec4f(v[i + 1u].yzw, v[i + 2u].x);
  }
  // Stride 2: columns 2 ox + d, every other one of v[2i + 1] and v[2i + 2].
  let a = v[2u * i + 1u];
  let b = v[2u * i + 2u];
  if (d < 0) { return vec4f(v[2u * i].w, a.y, a.w, b.y); }
  if (d == 0) { return vec4f(a.x, a.z, b.x, b.z); }
  return vec4f(a.y, a.w, b.y, b.w);
}

// One tap: the packed weights at wi (QV vec4s) times the PT pixel operand vec4s x0..x3.
fn tap_x(a: ptr<function, Acc>, x0: vec4f, x1: vec4f, x2: vec4f, x3: vec4f, wi: u32) {
  let w0 = wp[wi];
  (*a).m00 += outer(x0, w0);
  if (PT > 1u) { (*a).m10 += outer(x1, w0); }
  if (PT > 2u) { (*a).m20 += outer(x2, w0); }
  if (PT > 3u) { (*a).m30 += outer(x3, w0); }
  if (QV > 1u) {
    let w1 = wp[wi + 1u];
    (*a).m01 += outer(x0, w1);
    if (PT > 1u) { (*a).m11 += outer(x1, w1); }
    if (PT > 2u) { (*a).m21 += outer(x2, w1); }
    if (PT > 3u) { (*a).m31 += outer(x3, w1); }
  }
  if (QV > 2u) {
    let w2 = wp[wi + 2u];
    (*a).m02 += outer(x0, w2);
    if (PT > 1u) { (*a).m12 += outer(x1, w2); }
    if (PT > 2u) { (*a).m22 += outer(x2, w2); }
    if (PT > 3u) { (*a).m32 += outer(x3, w2); }
  }
  if (QV > 3u) {
    let w3 = wp[wi + 3u];
    (*a).m03 += outer(x0, w3);
    if (PT > 1u) { (*a).m13 += outer(x1, w3); }
    if (PT > 2u) { (*a).m23 += outer(x2, w3); }
    if (PT > 3u) { (*a).m33 += outer(x3, w3); }
  }
}

// One tap of offset d for one row (PY = 1): the operands are column vec4s 0..3 of window v.
fn tap(a: ptr<function, Acc>, d: i32, v: array<vec4f, 9>, wi: u32) {
  tap_x(a, operand(d, 0u, v), operand(d, 1u, v), operand(d, 2u, v), operand(d, 3u, v), wi);
}

// One tap of offset d for PY = 2 rows of PV = 2 column vec4s (windows va, vb) or PY = 4 rows of
// one (va to vd).
fn tap_rows(
  a: ptr<function, Acc>,
  d: i32,
  va: array<vec4f, 9>,
  vb: array<vec4f, 9>,
  vc: array<vec4f, 9>,
  vd: array<vec4f, 9>,
  wi: u32,
) {
  if (PY == 2u) {
    tap_x(a, operand(d, 0u, va), operand(d, 1u, va), operand(d, 0u, vb), operand(d, 1u, vb), wi);
  } else {
    tap_x(a, operand(d, 0u, va), operand(d, 0u, vb), operand(d, 0u, vc), operand(d, 0u, vd), wi);
  }
}

// Window vec4 k of an input row (columns STRIDE * ox0 - 4 + 4k, zero outside the row).
fn window(row: u32, col: i32, k: i32) -> vec4f {
  let nv = select(2 * i32(PV) + 1, i32(PV) + 2, STRIDE == 1u);
  let c = col + k;
  if (k < nv && c >= 0 && c < i32(p.w / 4u)) {
    return x[row + u32(c)];
  }
  return vec4f(0.0);
}

// The window of input row iy (all zero outside the image).
fn row_window(xrow: u32, iy: i32, col: i32) -> array<vec4f, 9> {
  if (iy < 0 || iy >= i32(p.h)) { return array<vec4f, 9>(); }
  let row = xrow + u32(iy) * p.w / 4u;
  return array<vec4f, 9>(
    window(row, col, 0),
    window(row, col, 1),
    window(row, col, 2),
    window(row, col, 3),
    window(row, col, 4),
    window(row, col, 5),
    window(row, col, 6),
    window(row, col, 7),
    window(row, col, 8),
  );
}

// Writes the 4 columns x 4 channels of m, after the epilogue, at pixel vec4 i (column vec4
// i % PV of row i / PV), channel vec4 qv.
fn store(m: mat4x4f, i: u32, qv: u32, ybase: u32, ox0: u32, oy0: u32, o0: u32) {
  let r = i / PV;
  let j = i % PV;
  if (ox0 + 4u * j >= p.ow || oy0 + r >= p.oh) { return; }
  let opix4 = p.oh * p.ow / 4u;
  for (var k = 0u; k < 4u; k++) {
    let o = o0 + 4u * qv + k;
    if (o < p.o) {
      let at = ybase + o * opix4 + r * (p.ow / 4u) + j;
      var v = m[k];
      if (p.epilogue == 1u) {
        v += chan[o];
      } else if (p.epilogue == 2u) {
        v = (v - chan[o]) * chan[p.o + o] + chan[2u * p.o + o];
      }
      if (p.has_residual != 0u) { v += res[at]; }
      if (p.relu != 0u) { v = select(v, vec4f(0.0), v < vec4f(0.0)); }
      y[at] = v;
    }
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  // Past-the-end invocations compute the last block again and store nothing: no early return,
  // so the loads below are not inside a branch (llvmpipe masks every load in one).
  let f0 = gid.x + wid.z * nwg.x * WG;
  let f = min(f0, p.pixel_blocks - 1u);
  let wb = f % p.blocks_w;
  let rest = f / p.blocks_w;
  let row_blocks = (p.oh + PY - 1u) / PY;
  let oy0 = (rest % row_blocks) * PY;
  let n = rest / row_blocks;
  let ox0 = wb * 4u * PV;
  let o0 = wid.y * 4u * QV;
  let col = i32(STRIDE * ox0 / 4u) - 1;

  var acc: Acc;
  let plane4 = p.h * p.w / 4u;
  let taps4 = p.op / 4u;
  var xrow = n * p.c * plane4;
  var wi = o0 / 4u;
  for (var c = 0u; c < p.c; c++) {
    for (var ky = 0u; ky < p.kh; ky++) {
      let iy = i32(oy0 * STRIDE + ky) - i32(p.pad_h);
      let t = wi + ky * KW * taps4;
      if (PY == 1u) {
        if (iy >= 0 && iy < i32(p.h)) {
          let v = row_window(xrow, iy, col);
          tap(&acc, -i32(PAD_W), v, t);
          if (KW > 1u) { tap(&acc, 1 - i32(PAD_W), v, t + taps4); }
          if (KW > 2u) { tap(&acc, 2 - i32(PAD_W), v, t + 2u * taps4); }
        }
      } else {
        // Rows outside the image read as zeros: their taps add nothing.
        let s = i32(STRIDE);
        let va = row_window(xrow, iy, col);
        let vb = row_window(xrow, iy + s, col);
        var vc = va;
        var vd = va;
        if (PY > 2u) {
          vc = row_window(xrow, iy + 2 * s, col);
          vd = row_window(xrow, iy + 3 * s, col);
        }
        tap_rows(&acc, -i32(PAD_W), va, vb, vc, vd, t);
        if (KW > 1u) { tap_rows(&acc, 1 - i32(PAD_W), va, vb, vc, vd, t + taps4); }
        if (KW > 2u) { tap_rows(&acc, 2 - i32(PAD_W), va, vb, vc, vd, t + 2u * taps4); }
      }
    }
    xrow += plane4;
    wi += p.kh * KW * taps4;
  }

  if (f0 >= p.pixel_blocks) { return; }
  let ybase = (n * p.o * p.oh + oy0) * (p.ow / 4u) + ox0 / 4u;
  store(acc.m00, 0u, 0u, ybase, ox0, oy0, o0);
  if (PT > 1u) { store(acc.m10, 1u, 0u, ybase, ox0, oy0, o0); }
  if (PT > 2u) { store(acc.m20, 2u, 0u, ybase, ox0, oy0, o0); }
  if (PT > 3u) { store(acc.m30, 3u, 0u, ybase, ox0, oy0, o0); }
  if (QV > 1u) {
    store(acc.m01, 0u, 1u, ybase, ox0, oy0, o0);
    if (PT > 1u) { store(acc.m11, 1u, 1u, ybase, ox0, oy0, o0); }
    if (PT > 2u) { store(acc.m21, 2u, 1u, ybase, ox0, oy0, o0); }
    if (PT > 3u) { store(acc.m31, 3u, 1u, ybase, ox0, oy0, o0); }
  }
  if (QV > 2u) {
    store(acc.m02, 0u, 2u, ybase, ox0, oy0, o0);
    if (PT > 1u) { store(acc.m12, 1u, 2u, ybase, ox0, oy0, o0); }
    if (PT > 2u) { store(acc.m22, 2u, 2u, ybase, ox0, oy0, o0); }
    if (PT > 3u) { store(acc.m32, 3u, 2u, ybase, ox0, oy0, o0); }
  }
  if (QV > 3u) {
    store(acc.m03, 0u, 3u, ybase, ox0, oy0, o0);
    if (PT > 1u) { store(acc.m13, 1u, 3u, ybase, ox0, oy0, o0); }
    if (PT > 2u) { store(acc.m23, 2u, 3u, ybase, ox0, oy0, o0); }
    if (PT > 3u) { store(acc.m33, 3u, 3u, ybase, ox0, oy0, o0); }
  }
}
