// batch_norm_eval_stats: (mean, invstd) from the running statistics, for eval mode; a snapshot,
// so the backward still sees these values if a later training call updates the running ones.
// Bindings: 0 uniform Params { channels: C, eps }; 1 running_mean: array<f32> [C] (reads);
// 2 running_var: array<f32> [C] (reads); 3 stats: array<f32> [2, C] = (mean, invstd) (writes).
// Workgroup 64; dispatch grid1d(C, 64); one invocation writes one channel.
struct Params { channels: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> running_mean: array<f32>;
@group(0) @binding(2) var<storage, read> running_var: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  stats[c] = running_mean[c];
  stats[p.channels + c] = 1.0 / sqrt(running_var[c] + p.eps);
}
