// matmul: c = op(a) op(b) (+ bias per column), op = identity or transpose, chosen by override
// constants TRANS_A / TRANS_B, so one kernel serves matmul, linear and their backwards.
// op(a) is [M, K]: a is stored [M, K], or [K, M] when TRANS_A. op(b) is [K, N]: b is stored
// [K, N], or [N, K] when TRANS_B. c is [M, N] row-major.
// Bindings: 0 uniform Params { M: u32, N: u32, K: u32, has_bias: u32 };
// 1 a: array<vec4f> (reads); 2 b: array<vec4f> (reads); 3 bias: array<f32> [N] (reads only when
// has_bias is 1; another read-only buffer is bound otherwise); 4 c: array<f32> [M, N] (writes).
// a and b are read as vec4s when the stored rows have a multiple of 4 elements (pooled buffers are
// padded to 16 bytes, so such loads stay inside the buffer), without bounds checks for blocks
// inside c, element by element with bounds checks otherwise.
// Workgroup 64; dispatch grid1d(ceil(M / 4) * ceil(N / 4), 64); one invocation computes a 4x4
// block of c (rows m0..m0+3, columns n0..n0+3) in registers, 4 steps of K at a time as
// 4x4 outer products, and writes the block's in-range elements.
override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct Params { M: u32, N: u32, K: u32, has_bias: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4f>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// Stored a[row, col..col+3] of a rows x cols matrix (col is a multiple of 4), zero outside it.
fn loadA(row: u32, col: u32, rows: u32, cols: u32) -> vec4f {
  if (row >= rows || col >= cols) { return vec4f(0.0); }
  let base = row * cols + col;
  if ((cols & 3u) == 0u) { return a[base >> 2u]; }
  var v = vec4f(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (col + i < cols) { v[i] = a[(base + i) >> 2u][(base + i) & 3u]; }
  }
  return v;
}

// Stored b[row, col..col+3] of a rows x cols matrix (col is a multiple of 4), zero outside it.
fn loadB(row: u32, col: u32, rows: u32, cols: u32) -> vec4f {
  if (row >= rows || col >= cols) { return vec4f(0.0); }
  let base = row * cols + col;
  if ((cols & 3u) == 0u) { return b[base >> 2u]; }
  var v = vec4f(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (col + i < cols) { v[i] = b[(base + i) >> 2u][(base + i) & 3u]; }
  }
  return v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let blocksN = (p.N + 3u) / 4u;
  let idx = gid.x + gid.y * nwg.x * 64u;
  if (idx >= ((p.M + 3u) / 4u) * blocksN) { return; }
  let m0 = (idx / blocksN) * 4u;
  let n0 = (idx % blocksN) * 4u;
  // acc[r] = c[m0 + r, n0..n0+3]
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  // Blocks inside c whose stored rows of a and b are vec4-aligned take unchecked vec4 loads for
  // the whole multiple-of-4 part of K (about twice as fast); the rest goes through loadA/loadB.
  let alignedA = select((p.K & 3u) == 0u, (p.M & 3u) == 0u, TRANS_A);
  let alignedB = select((p.N & 3u) == 0u, (p.K & 3u) == 0u, TRANS_B);
  var kChecked = 0u;
  if (alignedA && alignedB && m0 + 3u < p.M && n0 + 3u < p.N) {
    kChecked = p.K & ~3u;
    // Vec4 index of the first load, distance between the 4 loads, advance per 4 steps of K.
    var ia = select((m0 * p.K) >> 2u, m0 >> 2u, TRANS_A);
    let sa = select(p.K >> 2u, p.M >> 2u, TRANS_A);
    let stepA = select(1u, p.M, TRANS_A);
    var ib = select(n0 >> 2u, (n0 * p.K) >> 2u, TRANS_B);
    let sb = select(p.N >> 2u, p.K >> 2u, TRANS_B);
    let stepB = select(p.N, 1u, TRANS_B);
    for (var k = 0u; k < kChecked; k += 4u) {
      var ar = mat4x4f(a[ia], a[ia + sa], a[ia + 2u * sa], a[ia + 3u * sa]);
      if (TRANS_A) { ar = transpose(ar); }
      var bk = mat4x4f(b[ib], b[ib + sb], b[ib + 2u * sb], b[ib + 3u * sb]);
      if (TRANS_B) { bk = transpose(bk); }
      acc0 += bk * ar[0];
      acc1 += bk * ar[1];
      acc2 += bk * ar[2];
      acc3 += bk * ar[3];
      ia += stepA;
      ib += stepB;
    }
  }
  for (var k = kChecked; k < p.K; k += 4u) {
    // ar[r] = op(a)[m0 + r, k..k+3]
    var ar: mat4x4f;
    if (TRANS_A) {
      ar = transpose(mat4x4f(
        loadA(k, m0, p.K, p.M),
        loadA(k + 1u, m0, p.K, p.M),
        loadA(k + 2u, m0, p.K, p.M),
        loadA(k + 3u, m0, p.K, p.M),
      ));
    } else {
      ar = mat4x4f(
        loadA(m0, k, p.M, p.K),
        loadA(m0 + 1u, k, p.M, p.K),
        loadA(m0 + 2u, k, p.M, p.K),
        loadA(m0 + 3u, k, p.M, p.K),
      );
    }
    // Column j of bk = op(b)[k + j, n0..n0+3], so bk * ar[r] sums over the 4 steps of k.
    var bk: mat4x4f;
    if (TRANS_B) {
      bk = transpose(mat4x4f(
        loadB(n0, k, p.N, p.K),
        loadB(n0 + 1u, k, p.N, p.K),
        loadB(n0 + 2u, k, p.N, p.K),
        loadB(n0 + 3u, k, p.N, p.K),
      ));
    } else {
      bk = mat4x4f(
        loadB(k, n0, p.K, p.N),
        loadB(k + 1u, n0, p.K, p.N),
        loadB(k + 2u, n0, p.K, p.N),
        loadB(k + 3u, n0, p.K, p.N),
      );
    }
    acc0 += bk * ar[0];
    acc1 += bk * ar[1];
    acc2 += bk * ar[2];
    acc3 += bk * ar[3];
  }
  var bv = vec4f(0.0);
  if (p.has_bias == 1u) {
    for (var i = 0u; i < 4u; i++) {
      if (n0 + i < p.N) { bv[i] = bias[n0 + i]; }
    }
  }
  var acc = array<vec4f, 4>(acc0 + bv, acc1 + bv, acc2 + bv, acc3 + bv);
  for (var r = 0u; r < 4u; r++) {
    let m = m0 + r;
    if (m >= p.M) { break; }
    let row = acc[r];
    for (var i = 0u; i < 4u; i++) {
      if (n0 + i < p.N) { c[m * p.N + n0 + i] = row[i]; }
    }
  }
}
