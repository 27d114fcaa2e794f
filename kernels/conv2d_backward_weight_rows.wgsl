// conv2d_backward_weight_rows: the weight gradient of a stride-1 or stride-2 convolution whose
// rows are whole vec4s, the fast path of conv2d_backward_weight (same result, same split-K
// layout): gw[o, c, ky, kx] = sum over (n, oy, ox) of gy[n, o, oy, ox] *
// x[n, c, STRIDE * oy - pad_h + ky, STRIDE * ox - PAD_W + kx] (zero outside the input). The
// N * OH output rows are cut into `chunks` runs of `rows_per_chunk`; each chunk writes its own
// partial sums, which conv2d_reduce_chunks adds up (with one chunk, `out` is gw).
// Requires W % 4 == 0, OW % 4 == 0, KW <= 3, PAD_W <= 1 and KW - 1 - PAD_W <= 1 (as
// conv2d_forward_rows).
// Bindings: 0 uniform Params (below); 1 x: array<vec4f> [N, C, H, W]; 2 gy: array<vec4f>
// [N, O, OH, OW]; 3 out: array<f32> [chunks, O, C, KH, KW] (writes every element).
// Params (u32): n, c, h, w, o, oh, ow, kh, pad_h, rows = N * OH, rows_per_chunk, chunks.
// Overrides: WG (workgroup size), STRIDE (1 or 2), KW, PAD_W, QO and QC (output / input
// channels per invocation, in groups of 4: 1 or 2).
// Grid: x = ceil(chunks / WG) (one invocation per chunk), y = ceil(C / (4 * QC)) * KH (input
// channel block, ky), z = ceil(O / (4 * QO)) (output channel block).
// One invocation computes, over its chunk, 4 * QO output channels x 4 * QC input channels of
// every tap (ky, kx) of one kernel row ky: QO x QC x KW accumulators of 4 x 4 channels
// (mat4x4f, column = input channel, row = output channel). A step covers 4 output columns and
// adds transpose(G) * X: G holds 4 output channels' gy at those columns, X 4 input channels' x
// at the columns the tap reads. The x row is walked with a sliding window of vec4s (the one left
// of the step's columns, and the one or two under them, and at stride 1 the one right of them),
// so a step loads 4 * QO vec4s of gy and STRIDE vec4s of x per input channel, for
// 64 * QO * QC * KW multiply-adds (llvmpipe loads each vec4 lane by lane: the multiply-adds per
// loaded float set the speed).
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  pad_h: u32, rows: u32, rows_per_chunk: u32, chunks: u32,
}

override WG: u32 = 64;
override STRIDE: u32 = 1;
override KW: u32 = 3;
override PAD_W: u32 = 1;
override QO: u32 = 2;
override QC: u32 = 2;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> gy: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// t<kx><o group><c group>.
struct Acc {
  t000: mat4x4f, t001: mat4x4f, t010: mat4x4f, t011: mat4x4f,
  t100: mat4x4f, t101: mat4x4f, t110: mat4x4f, t111: mat4x4f,
  t200: mat4x4f, t201: mat4x4f, t210: mat4x4f, t211: mat4x4f,
}

// One input channel's row around a step: the vec4 left of the columns it reads (prev), and at
// stride 1 the vec4 under the step (cur) and the one right of it (next), at stride 2 the two
// vec4s under the step (cur, next).
struct Window { prev: vec4f, cur: vec4f, next: vec4f }

// The input columns that tap offset d (-1, 0 or 1) reads for the step's 4 output columns.
fn operand(d: i32, v: Window) -> vec4f {
  if (STRIDE == 1u) {
    if (d < 0) { return vec4f(v.prev.w, v.cur.xyz); }
    if (d == 0) { return v.cur; }
    return vec4f(v.cur.yzw, v.next.x);
  }
  if (d < 0) { return vec4f(v.prev.w, v.cur.y, v.cur.w, v.next.y); }
  if (d == 0) { return vec4f(v.cur.x, v.cur.z, v.next.x, v.next.z); }
  return vec4f(v.cur.y, v.cur.w, v.next.y, v.next.w);
}

fn taps(d: i32, a: Window, b: Window, c: Window, e: Window) -> mat4x4f {
  return mat4x4f(operand(d, a), operand(d, b), operand(d, c), operand(d, e));
}

// x[at] when the vec4 index i is inside the row (w4 vec4s), else zero.
fn load_x(at: u32, i: u32, w4: u32) -> vec4f {
  if (i < w4) { return x[at]; }
  return vec4f(0.0);
}

// A channel's window before step 0 of the row at `row` (in vec4s): at stride 1 nothing is left
// of the row and `next` holds the first vec4, which advance() moves under the step.
fn start(row: u32, w4: u32) -> Window {
  if (STRIDE == 1u) { return Window(vec4f(0.0), vec4f(0.0), load_x(row, 0u, w4)); }
  return Window(vec4f(0.0), vec4f(0.0), vec4f(0.0));
}

// The window of step s from that of step s - 1: one new vec4 at stride 1, two at stride 2.
fn advance(v: Window, row: u32, s: u32, w4: u32) -> Window {
  if (STRIDE == 1u) {
    return Window(v.cur, v.next, load_x(row + s + 1u, s + 1u, w4));
  }
  let i = 2u * s;
  return Window(v.next, load_x(row + i, i, w4), load_x(row + i + 1u, i + 1u, w4));
}

// Writes the 4 x 4 block m of tap kx for output channels o0.. and input channels c0...
fn store(m: mat4x4f, chunk: u32, o0: u32, c0: u32, ky: u32, kx: u32) {
  let per_o = p.c * p.kh * KW;
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      if (o0 + i < p.o && c0 + j < p.c) {
        out[(chunk * p.o + o0 + i) * per_o + ((c0 + j) * p.kh + ky) * KW + kx] = m[j][i];
      }
    }
  }
}

// Offset (in vec4s) of channel `ch` clamped to `count` (past it the sums are never stored).
fn plane(ch: u32, count: u32, size4: u32) -> u32 {
  return min(ch, count - 1u) * size4;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let chunk = gid.x;
  let ky = wid.y % p.kh;
  let c0 = (wid.y / p.kh) * 4u * QC;
  let o0 = wid.z * 4u * QO;
  // Invocations past the last chunk walk no rows and store nothing.
  let row_begin = min(chunk * p.rows_per_chunk, p.rows);
  let row_end = min(row_begin + p.rows_per_chunk, p.rows);
  let w4 = p.w / 4u;
  let ow4 = p.ow / 4u;
  let ipix4 = p.h * w4;
  let opix4 = p.oh * ow4;
  let xc0 = plane(c0, p.c, ipix4);
  let xc1 = plane(c0 + 1u, p.c, ipix4);
  let xc2 = plane(c0 + 2u, p.c, ipix4);
  let xc3 = plane(c0 + 3u, p.c, ipix4);
  let xc4 = plane(c0 + 4u, p.c, ipix4);
  let xc5 = plane(c0 + 5u, p.c, ipix4);
  let xc6 = plane(c0 + 6u, p.c, ipix4);
  let xc7 = plane(c0 + 7u, p.c, ipix4);
  let go0 = plane(o0, p.o, opix4);
  let go1 = plane(o0 + 1u, p.o, opix4);
  let go2 = plane(o0 + 2u, p.o, opix4);
  let go3 = plane(o0 + 3u, p.o, opix4);
  let go4 = plane(o0 + 4u, p.o, opix4);
  let go5 = plane(o0 + 5u, p.o, opix4);
  let go6 = plane(o0 + 6u, p.o, opix4);
  let go7 = plane(o0 + 7u, p.o, opix4);
  let d0 = -i32(PAD_W);
  let d1 = 1 - i32(PAD_W);
  let d2 = 2 - i32(PAD_W);

  var acc: Acc;
  for (var r = row_begin; r < row_end; r++) {
    let oy = r % p.oh;
    let n = r / p.oh;
    let iy = i32(oy * STRIDE + ky) - i32(p.pad_h);
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let xrow = n * p.c * ipix4 + u32(iy) * w4;
    let grow = n * p.o * opix4 + oy * ow4;
    var x0 = start(xrow + xc0, w4);
    var x1 = start(xrow + xc1, w4);
    var x2 = start(xrow + xc2, w4);
    var x3 = start(xrow + xc3, w4);
    var x4 = Window();
    var x5 = Window();
    var x6 = Window();
    var x7 = Window();
    if (QC > 1u) {
      x4 = start(xrow + xc4, w4);
      x5 = start(xrow + xc5, w4);
      x6 = start(xrow + xc6, w4);
      x7 = start(xrow + xc7, w4);
    }
    for (var s = 0u; s < ow4; s++) {
      x0 = advance(x0, xrow + xc0, s, w4);
      x1 = advance(x1, xrow + xc1, s, w4);
      x2 = advance(x2, xrow + xc2, s, w4);
      x3 = advance(x3, xrow + xc3, s, w4);
      if (QC > 1u) {
        x4 = advance(x4, xrow + xc4, s, w4);
        x5 = advance(x5, xrow + xc5, s, w4);
        x6 = advance(x6, xrow + xc6, s, w4);
        x7 = advance(x7, xrow + xc7, s, w4);
      }
      let g = grow + s;
      let ga = transpose(mat4x4f(gy[go0 + g], gy[go1 + g], gy[go2 + g], gy[go3 + g]));
      var gb = mat4x4f();
      if (QO > 1u) {
        gb = transpose(mat4x4f(gy[go4 + g], gy[go5 + g], gy[go6 + g], gy[go7 + g]));
      }
      let a0 = taps(d0, x0, x1, x2, x3);
      acc.t000 += ga * a0;
      if (QO > 1u) { acc.t010 += gb * a0; }
      if (QC > 1u) {
        let b0 = taps(d0, x4, x5, x6, x7);
        acc.t001 += ga * b0;
        if (QO > 1u) { acc.t011 += gb * b0; }
      }
      if (KW > 1u) {
        let a1 = taps(d1, x0, x1, x2, x3);
        acc.t100 += ga * a1;
        if (QO > 1u) { acc.t110 += gb * a1; }
        if (QC > 1u) {
          let b1 = taps(d1, x4, x5, x6, x7);
          acc.t101 += ga * b1;
          if (QO > 1u) { acc.t111 += gb * b1; }
        }
      }
      if (KW > 2u) {
        let a2 = taps(d2, x0, x1, x2, x3);
        acc.t200 += ga * a2;
        if (QO > 1u) { acc.t210 += gb * a2; }
        if (QC > 1u) {
          let b2 = taps(d2, x4, x5, x6, x7);
          acc.t201 += ga * b2;
          if (QO > 1u) { acc.t211 += gb * b2; }
        }
      }
    }
  }

  if (chunk >= p.chunks) { return; }
  let c1 = c0 + 4u;
  let o1 = o0 + 4u;
  store(acc.t000, chunk, o0, c0, ky, 0u);
  if (QO > 1u) { store(acc.t010, chunk, o1, c0, ky, 0u); }
  if (QC > 1u) { store(acc.t001, chunk, o0, c1, ky, 0u); }
  if (QO > 1u && QC > 1u) { store(acc.t011, chunk, o1, c1, ky, 0u); }
  if (KW > 1u) {
    store(acc.t100, chunk, o0, c0, ky, 1u);
    if (QO > 1u) { store(acc.t110, chunk, o1, c0, ky, 1u); }
    if (QC > 1u) { store(acc.t101, chunk, o0, c1, ky, 1u); }
    if (QO > 1u && QC > 1u) { store(acc.t111, chunk, o1, c1, ky, 1u); }
  }
  if (KW > 2u) {
    store(acc.t200, chunk, o0, c0, ky, 2u);
    if (QO > 1u) { store(acc.t210, chunk, o1, c0, ky, 2u); }
    if (QC > 1u) { store(acc.t201, chunk, o0, c1, ky, 2u); }
    if (QO > 1u && QC > 1u) { store(acc.t211, chunk, o1, c1, ky, 2u); }
  }
}
