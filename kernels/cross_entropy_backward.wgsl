// cross_entropy_backward: gradient of cross-entropy with respect to the logits,
// gx[n, c] = (exp(x[n, c] - lse[n]) - (1 - eps) * (c == t[n]) - eps / C) * gy[n or 0] * scale
// (softmax minus the smoothed one-hot; scale is 1 / N for the mean reduction, 1 otherwise).
// Bindings: 0 uniform Params { N: u32, C: u32, per_row: u32 (1: gy is [N], reduction "none";
// 0: gy is one element), nan_bits: u32 (0x7fc00000), scale: f32, smoothing: f32 (eps in
// [0, 1]) };
// 1 logits: array<f32> [N, C] (reads); 2 targets: array<f32> [N] (reads; class indices as
// floats); 3 lse: array<f32> [N] (reads; saved by the forward); 4 gy: array<f32> [N] or [1]
// (reads); 5 gx: array<f32> [N, C] (writes). Rows with an invalid target get NaN.
// Workgroup 256; dispatch grid1d(N * C, 256); one invocation writes one element of gx.
struct Params { N: u32, C: u32, per_row: u32, nan_bits: u32, scale: f32, smoothing: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.N * p.C) { return; }
  let row = i / p.C;
  let c = i % p.C;
  let t = targets[row];
  if (!(t >= 0.0 && t < f32(p.C) && t == floor(t))) {
    gx[i] = bitcast<f32>(p.nan_bits);
    return;
  }
  let g = gy[select(0u, row, p.per_row == 1u)] * p.scale;
  let prob = exp(logits[i] - lse[row]);
  let smoothed = select(0.0, 1.0 - p.smoothing, c == u32(t)) + p.smoothing / f32(p.C);
  gx[i] = (prob - smoothed) * g;
}
