// batch_norm_backward_input: the input gradient. Training (batch statistics):
//   dx = weight * invstd / n * (n * dy - sum(dy) - xhat * sum(dy * xhat)), n = N*H*W;
// eval (running statistics are constants): dx = dy * weight * invstd.
// Bindings: 0 uniform Params; 1 dy: array<f32> [N, C, H, W] (reads); 2 x: array<f32>
// [N, C, H, W] (reads); 3 stats: array<f32> [2, C] = (mean, invstd) (reads); 4 weight:
// array<f32> [C] (reads; any buffer when !HAS_WEIGHT); 5 sum_dy: array<f32> [C] (reads; any
// buffer when !TRAINING); 6 sum_dy_xhat: array<f32> [C] (reads; any buffer when !TRAINING);
// 7 dx: array<f32> [N, C, H, W] (writes).
// Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks, n: N*H*W (f32) }.
// Overrides TRAINING, HAS_WEIGHT (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive elements
// of one (n, c) plane.
struct Params { channels: u32, hw: u32, chunks: u32, count: u32, n: f32 }

override TRAINING: bool = true;
override HAS_WEIGHT: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> sum_dy: array<f32>;
@group(0) @binding(6) var<storage, read> sum_dy_xhat: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let plane = t / p.chunks;
  let chunk = t - plane * p.chunks;
  let c = plane % p.channels;
  let invstd = stats[p.channels + c];
  var scale = invstd;
  if (HAS_WEIGHT) { scale *= weight[c]; }
  let start = chunk * 4u;
  let end = min(start + 4u, p.hw);
  let base = plane * p.hw;
  if (TRAINING) {
    let mean = stats[c];
    let mean_dy = sum_dy[c] / p.n;
    // xhat * sum(dy * xhat) / n, with xhat = (x - mean) * invstd, as (x - mean) * k.
    let k = sum_dy_xhat[c] * invstd / p.n;
    for (var i = start; i < end; i++) {
      dx[base + i] = (dy[base + i] - mean_dy - (x[base + i] - mean) * k) * scale;
    }
  } else {
    for (var i = start; i < end; i++) {
      dx[base + i] = dy[base + i] * scale;
    }
  }
}
