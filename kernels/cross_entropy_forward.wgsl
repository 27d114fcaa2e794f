// cross_entropy_forward: per-row cross-entropy of logits with integer class targets, through a
// stable log-softmax: lse = max + log(sum(exp(x - max))), loss = log(sum) - (x[t] - max); with
// label smoothing eps, PyTorch's (1 - eps) * (-log p[t]) + eps * mean_c(-log p[c]), that is
// log(sum) - (1 - eps) * (x[t] - max) - eps * (mean_c(x[c]) - max).
// Bindings: 0 uniform Params { N: u32, C: u32, nan_bits: u32 (0x7fc00000, a NaN the CPU supplies
// because WGSL has no NaN literal), smoothing: f32 (eps in [0, 1]) };
// 1 logits: array<f32> [N, C] (reads); 2 targets: array<f32> [N] (reads; class indices stored as floats); 3 loss: array<f32> [N]
// (writes); 4 lse: array<f32> [N] (writes; the log-sum-exp the backward needs).
// A target that is not an integer in [0, C) gives a NaN loss (targets on the GPU cannot be checked
// without a readback).
// Workgroup 64; dispatch grid1d(N, 64); one invocation handles one row.
struct Params { N: u32, C: u32, nan_bits: u32, smoothing: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.N) { return; }
  let base = row * p.C;
  var mx = logits[base];
  for (var c = 1u; c < p.C; c++) { mx = max(mx, logits[base + c]); }
  var s = 0.0;
  var centered = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let d = logits[base + c] - mx;
    s += exp(d);
    centered += d;
  }
  let logS = log(s);
  lse[row] = mx + logS;
  let t = targets[row];
  if (t >= 0.0 && t < f32(p.C) && t == floor(t)) {
    var l = logS - (logits[base + u32(t)] - mx);
    if (p.smoothing > 0.0) {
      // -log p[c] = logS - (x[c] - max); its mean over c is logS - centered / C.
      l = (1.0 - p.smoothing) * l + p.smoothing * (logS - centered / f32(p.C));
    }
    loss[row] = l;
  } else {
    loss[row] = bitcast<f32>(p.nan_bits);
  }
}
