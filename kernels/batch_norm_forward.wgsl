// batch_norm_forward: y = act((x - mean[c]) * (invstd[c] * weight[c]) + bias[c] + res), the
// normalization of batchNorm2d with the residual addition and the ReLU (NaN kept) of a ResNet
// block in the same pass; subtracting the mean first avoids the cancellation of
// x * alpha - mean * alpha when |mean| >> std. Entry point main reads (mean, invstd); main_partials
// (the gpu family's training) derives them from the chunk sums of batch_norm_stats_chunks, as
// batch_norm_stats does from its sums, and main_partials_running also applies PyTorch's in-place
// running-statistics update.
// Bindings: 0 uniform Params (below); 1 x: array<vec4f> [N, C, H, W] (pool buffers are whole
// vec4s); 2 stats: array<f32>: main: [2, C] = (mean, invstd) (reads); main_partials*: the
// 2 * C + 2 * C * partials values of batch_norm_stats_chunks: a [2, C] head = (mean, invstd)
// (writes), then (sum of d, sum of d^2), d = x - x[0, c, 0, 0], of chunk z of channel c at
// 2 * C + 2 * (c * partials + z) (reads); 3 weight: array<f32> [C]; 4 bias: array<f32> [C]; 5 res:
// array<vec4f> [N, C, H, W] (3 to 5: any buffer but stats when absent, then not read); 6 y:
// array<vec4f> [N, C, H, W] (writes every element); 7 running_mean: array<f32> [C] (updates in
// place, main_partials_running only); 8 running_var: array<f32> [C] (updates in place with the
// unbiased variance, main_partials_running only).
// Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks, partials: chunk sums
// per channel (u32; main_partials* only); n: N*H*W, momentum, eps (f32; main_partials* only) }.
// Overrides HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, RELU (what follows the normalization) and VEC4:
// H*W % 4 == 0, so that every vec4 lies in one (n, c) plane and is read and written whole;
// otherwise each invocation walks its up to 4 values one by one.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes chunk t: the 4 consecutive
// values 4 * (t % chunks) .. of plane t / chunks (fewer at the end of a plane without VEC4), so
// the channel is found with one division per 4 values. With main_partials* every invocation adds
// its channel's chunk sums, z = 0, 1, ... in order (so all of them, and the head, get the same
// values); the one of the channel's first chunk, t = c * chunks, alone writes the channel's head
// and running statistics, which no other invocation of the dispatch reads.
struct Params {
  channels: u32,
  hw: u32,
  chunks: u32,
  count: u32,
  partials: u32,
  n: f32,
  momentum: f32,
  eps: f32,
}

override HAS_WEIGHT: bool = true;
override HAS_BIAS: bool = true;
override HAS_RESIDUAL: bool = false;
override RELU: bool = false;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;

// Normalizes chunk t of channel c with its mean and invstd.
fn normalize(t: u32, c: u32, mean: f32, invstd: f32) {
  var scale = invstd;
  if (HAS_WEIGHT) { scale *= weight[c]; }
  var shift = 0.0;
  if (HAS_BIAS) { shift = bias[c]; }
  if (VEC4) {
    // chunks = H*W / 4: chunk t is vec4 t.
    var v = (x[t] - mean) * scale + shift;
    if (HAS_RESIDUAL) { v += res[t]; }
    if (RELU) { v = select(v, vec4f(0.0), v < vec4f(0.0)); }
    y[t] = v;
  } else {
    let plane = t / p.chunks;
    let first = (t - plane * p.chunks) * 4u;
    let base = plane * p.hw;
    for (var i = base + first; i < base + min(first + 4u, p.hw); i++) {
      var v = (x[i / 4u][i % 4u] - mean) * scale + shift;
      if (HAS_RESIDUAL) { v += res[i / 4u][i % 4u]; }
      if (RELU) { v = select(v, 0.0, v < 0.0); }
      y[i / 4u][i % 4u] = v;
    }
  }
}

// (mean, sum of squared deviations) of channel c from its chunk sums, added in order; var =
// E[d^2] - E[d]^2 on the shifted values keeps the digits that E[x^2] - E[x]^2 loses (see
// batch_norm_stats.wgsl).
fn moments(c: u32) -> vec2f {
  var sums = vec2f(0.0);
  let base = 2u * (p.channels + c * p.partials);
  for (var z = 0u; z < p.partials; z++) {
    sums += vec2f(stats[base + 2u * z], stats[base + 2u * z + 1u]);
  }
  let i = c * p.hw;
  let shift = x[i / 4u][i % 4u];
  let centre = sums.x / p.n;
  return vec2f(shift + centre, max(sums.y - sums.x * centre, 0.0));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let c = (t / p.chunks) % p.channels;
  normalize(t, c, stats[c], stats[p.channels + c]);
}

@compute @workgroup_size(256)
fn main_partials(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let c = (t / p.chunks) % p.channels;
  let m = moments(c);
  let invstd = 1.0 / sqrt(m.y / p.n + p.eps);
  if (t == c * p.chunks) {
    stats[c] = m.x;
    stats[p.channels + c] = invstd;
  }
  normalize(t, c, m.x, invstd);
}

@compute @workgroup_size(256)
fn main_partials_running(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let c = (t / p.chunks) % p.channels;
  let m = moments(c);
  let invstd = 1.0 / sqrt(m.y / p.n + p.eps);
  if (t == c * p.chunks) {
    stats[c] = m.x;
    stats[p.channels + c] = invstd;
    let unbiased = m.y / (p.n - 1.0);
    running_mean[c] = p.momentum * m.x + (1.0 - p.momentum) * running_mean[c];
    running_var[c] = p.momentum * unbiased + (1.0 - p.momentum) * running_var[c];
  }
  normalize(t, c, m.x, invstd);
}
