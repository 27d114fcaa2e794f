// batch_norm_stats: per-channel batch mean and 1/sqrt(biased var + eps) of x, and (entry points
// main_running, main_running_counter) PyTorch's in-place running-statistics update.
// Bindings: 0 uniform Params; 1 x: array<f32> [N, C, H, W] (reads);
// 2 stats: array<f32> [2, C] = (mean, invstd) (writes);
// 3 running_mean: array<f32> [C] (updates in place, main_running*);
// 4 running_var: array<f32> [C] (updates in place with the unbiased variance, main_running*);
// 5 counter: array<f32> [1] (adds 1, main_running_counter only).
// Params { batch: N, channels: C, hw: H*W, lanes, rows: 256 / lanes, count: N*H*W (f32),
//   momentum, eps }. lanes (a power of two <= 256) invocations cover one image's H*W, rows
//   images are read at once, so that small H*W still keeps all 256 invocations busy.
// Workgroup 256; dispatch grid1d(C, 1): one workgroup per channel. The variance takes a second
// pass over the channel's values around the mean (stable, unlike E[x^2] - E[x]^2).
struct Params {
  batch: u32,
  channels: u32,
  hw: u32,
  lanes: u32,
  rows: u32,
  count: f32,
  momentum: f32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read_write> counter: array<f32>;

const WG: u32 = 256u;
const GROUPS: u32 = 16u;
var<workgroup> partial: array<f32, 256>;
var<workgroup> group_sum: array<f32, 16>;

// Two levels of 16 instead of a log2(256)-step tree: only two barriers, which matters on CPU
// implementations where each barrier switches every invocation. Every invocation returns the sum.
fn workgroup_sum(v: f32, tid: u32) -> f32 {
  partial[tid] = v;
  workgroupBarrier();
  if (tid < GROUPS) {
    var s = 0.0;
    for (var k = 0u; k < WG / GROUPS; k++) {
      s += partial[tid * (WG / GROUPS) + k];
    }
    group_sum[tid] = s;
  }
  workgroupBarrier();
  var total = 0.0;
  for (var k = 0u; k < GROUPS; k++) {
    total += group_sum[k];
  }
  return total;
}

// (mean, sum of squared deviations) of channel c. Both passes sum differences from the channel's
// first value, which are exact and small when the values sit far from zero (say 100 +- 0.1), so
// the mean is not lost in the rounding of large partial sums.
fn moments(c: u32, tid: u32) -> vec2f {
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  let image = p.channels * p.hw;
  let shift = x[c * p.hw];
  var s = 0.0;
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = lane; i < p.hw; i += p.lanes) {
      s += x[base + i] - shift;
    }
  }
  let centre = workgroup_sum(s, tid) / p.count;
  var q = 0.0;
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = lane; i < p.hw; i += p.lanes) {
      let d = (x[base + i] - shift) - centre;
      q += d * d;
    }
  }
  return vec2f(shift + centre, workgroup_sum(q, tid));
}

fn write_stats(c: u32, m: vec2f) {
  stats[c] = m.x;
  stats[p.channels + c] = 1.0 / sqrt(m.y / p.count + p.eps);
}

fn update_running(c: u32, m: vec2f) {
  let unbiased = m.y / (p.count - 1.0);
  running_mean[c] = p.momentum * m.x + (1.0 - p.momentum) * running_mean[c];
  running_var[c] = p.momentum * unbiased + (1.0 - p.momentum) * running_var[c];
}

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  let m = moments(c, tid);
  if (tid == 0u) {
    write_stats(c, m);
  }
}

@compute @workgroup_size(256)
fn main_running(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  let m = moments(c, tid);
  if (tid == 0u) {
    write_stats(c, m);
    update_running(c, m);
  }
}

@compute @workgroup_size(256)
fn main_running_counter(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  let m = moments(c, tid);
  if (tid == 0u) {
    write_stats(c, m);
    update_running(c, m);
    if (c == 0u) {
      counter[0] = counter[0] + 1.0;
    }
  }
}
