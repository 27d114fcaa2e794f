// batch_norm_stats_combine: the second pass of the gpu family's batch statistics: per channel,
// adds the chunks of batch_norm_stats_chunks and writes the batch mean and
// 1 / sqrt(biased var + eps), and (entry points main_running, main_running_counter) PyTorch's
// in-place running-statistics update, as batch_norm_stats does.
// Bindings: 0 uniform Params { channels: C, chunks, hw: H * W (u32), count: N * H * W, momentum,
// eps (f32) };
// 1 x: array<vec4f> [N, C, H, W] (only x[0, c, 0, 0], the shift, is read); 2 partial:
// array<vec2f> [C, chunks] = (sum of d, sum of d^2), d = x - shift; 3 stats: array<f32> [2, C] =
// (mean, invstd) (writes); 4 running_mean: array<f32> [C] (updates in place, main_running*);
// 5 running_var: array<f32> [C] (updates in place with the unbiased variance, main_running*);
// 6 counter: array<f32> [1] (adds 1, main_running_counter only).
// Workgroup 64; dispatch grid1d(C, 64); one invocation per channel adds its chunks in order.
// var = E[d^2] - E[d]^2 on the shifted values keeps the digits that E[x^2] - E[x]^2 loses (see
// batch_norm_stats.wgsl).
struct Params { channels: u32, chunks: u32, hw: u32, count: f32, momentum: f32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> partial: array<vec2f>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> counter: array<f32>;

// (mean, sum of squared deviations) of channel c; writes its stats.
fn combine(c: u32) -> vec2f {
  var sums = vec2f(0.0);
  for (var z = 0u; z < p.chunks; z++) {
    sums += partial[c * p.chunks + z];
  }
  let i = c * p.hw;
  let shift = x[i / 4u][i % 4u];
  let centre = sums.x / p.count;
  let m = vec2f(shift + centre, max(sums.y - sums.x * centre, 0.0));
  stats[c] = m.x;
  stats[p.channels + c] = 1.0 / sqrt(m.y / p.count + p.eps);
  return m;
}

fn update_running(c: u32, m: vec2f) {
  let unbiased = m.y / (p.count - 1.0);
  running_mean[c] = p.momentum * m.x + (1.0 - p.momentum) * running_mean[c];
  running_var[c] = p.momentum * unbiased + (1.0 - p.momentum) * running_var[c];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  combine(c);
}

@compute @workgroup_size(64)
fn main_running(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  update_running(c, combine(c));
}

@compute @workgroup_size(64)
fn main_running_counter(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  update_running(c, combine(c));
  if (c == 0u) { counter[0] = counter[0] + 1.0; }
}
