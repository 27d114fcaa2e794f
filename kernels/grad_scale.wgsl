// grad_scale: the last pass of clipGradNorm: multiplies up to seven gradient tensors ("slots") in
// place by the clipping coefficient that grad_norm_total wrote.
// Bindings: 0 uniform Params (below); 1 coef: array<f32> [1] (reads); 2..8 g0..g6: array<f32>
//   [n0]..[n6], the gradients (read-write; unused slots bind distinct small dummies, n = 0).
// Params { n0..n6: u32 (elements per slot, 0 when unused) }.
// Workgroup 256; dispatch grid1d(n0 + ... + n6, 256); invocation i scales one element: element i
// of slot 0 when i < n0, else element i - n0 of slot 1 when i < n0 + n1, and so on.
struct Params {
  n0: u32,
  n1: u32,
  n2: u32,
  n3: u32,
  n4: u32,
  n5: u32,
  n6: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> coef: array<f32>;
@group(0) @binding(2) var<storage, read_write> g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> g1: array<f32>;
@group(0) @binding(4) var<storage, read_write> g2: array<f32>;
@group(0) @binding(5) var<storage, read_write> g3: array<f32>;
@group(0) @binding(6) var<storage, read_write> g4: array<f32>;
@group(0) @binding(7) var<storage, read_write> g5: array<f32>;
@group(0) @binding(8) var<storage, read_write> g6: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var i = gid.x + gid.y * nwg.x * 256u;
  let c = coef[0];
  if (i < u.n0) { g0[i] *= c; return; }
  i -= u.n0;
  if (i < u.n1) { g1[i] *= c; return; }
  i -= u.n1;
  if (i < u.n2) { g2[i] *= c; return; }
  i -= u.n2;
  if (i < u.n3) { g3[i] *= c; return; }
  i -= u.n3;
  if (i < u.n4) { g4[i] *= c; return; }
  i -= u.n4;
  if (i < u.n5) { g5[i] *= c; return; }
  i -= u.n5;
  if (i < u.n6) { g6[i] *= c; }
}
