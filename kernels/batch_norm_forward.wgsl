// batch_norm_forward: y = (x - mean[c]) * (invstd[c] * weight[c]) + bias[c]; subtracting the mean
// first avoids the cancellation of x * alpha - mean * alpha when |mean| >> std.
// Bindings: 0 uniform Params; 1 x: array<f32> [N, C, H, W] (reads); 2 stats: array<f32> [2, C] =
// (mean, invstd) (reads); 3 weight: array<f32> [C] (reads; any buffer when !HAS_WEIGHT);
// 4 bias: array<f32> [C] (reads; any buffer when !HAS_BIAS); 5 y: array<f32> [N, C, H, W]
// (writes).
// Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks }.
// Overrides HAS_WEIGHT, HAS_BIAS (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive elements
// of one (n, c) plane, so the channel is found with one division per 4 elements.
struct Params { channels: u32, hw: u32, chunks: u32, count: u32 }

override HAS_WEIGHT: bool = true;
override HAS_BIAS: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let plane = t / p.chunks;
  let chunk = t - plane * p.chunks;
  let c = plane % p.channels;
  let mean = stats[c];
  var scale = stats[p.channels + c];
  if (HAS_WEIGHT) { scale *= weight[c]; }
  var shift = 0.0;
  if (HAS_BIAS) { shift = bias[c]; }
  let start = chunk * 4u;
  let end = min(start + 4u, p.hw);
  let base = plane * p.hw;
  for (var i = start; i < end; i++) {
    y[base + i] = (x[base + i] - mean) * scale + shift;
  }
}
