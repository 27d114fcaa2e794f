// batch_norm_stats: per-channel batch mean and 1/sqrt(biased var + eps) of x, and (entry points
// main_running, main_running_counter) PyTorch's in-place running-statistics update.
// Bindings: 0 uniform Params; 1 x: array<vec4f> [N, C, H, W] (reads; pool buffers are whole
// vec4s, so every element is inside one); 2 stats: array<f32> [2, C] = (mean, invstd) (writes);
// 3 running_mean: array<f32> [C] (updates in place, main_running*);
// 4 running_var: array<f32> [C] (updates in place with the unbiased variance, main_running*);
// 5 counter: array<f32> [1] (adds 1, main_running_counter only).
// Params { batch: N, channels: C, hw: H*W, lanes, rows: WG / lanes, count: N*H*W (f32),
//   momentum, eps }. lanes (a power of two <= WG) invocations share one image's plane (in vec4s
//   when VEC4, else in values), rows images are read at once; the host picks the fewest lanes
//   that keep every invocation busy (reductionLanes in src/ops/batch_norm.ts), so each
//   invocation walks long runs of a plane.
// Override VEC4: H*W % 4 == 0, so that each (n, c) plane is whole vec4s and is read as vec4s.
// Workgroup WG = 64; dispatch grid1d(C, 1): one workgroup per channel, one pass over its values.
// Why one pass of shifted sums: on llvmpipe a storage load costs ~10x an add (a loop over the
// SIMD lanes), so reading x twice (mean, then squared deviations) doubled the time. Sums of
// d = x - shift and d^2 with shift = one of the channel's own values give
// var = E[d^2] - E[d]^2 without the cancellation of E[x^2] - E[x]^2: E[d] is about the spread of
// the values, not their distance from zero (values 100 +- 0.1 keep 4+ digits of variance).
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

override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read_write> counter: array<f32>;

const WG: u32 = 64u;
const GROUPS: u32 = 8u;
var<workgroup> partial: array<vec2f, 64>;
var<workgroup> group_sum: array<vec2f, 8>;

// Two levels of 8 instead of a log2(64)-step tree: only two barriers, which matters on CPU
// implementations where each barrier switches every invocation. Every invocation returns the sum.
fn workgroup_sum(v: vec2f, tid: u32) -> vec2f {
  partial[tid] = v;
  workgroupBarrier();
  if (tid < GROUPS) {
    var s = vec2f(0.0);
    for (var k = 0u; k < WG / GROUPS; k++) {
      s += partial[tid * (WG / GROUPS) + k];
    }
    group_sum[tid] = s;
  }
  workgroupBarrier();
  var total = vec2f(0.0);
  for (var k = 0u; k < GROUPS; k++) {
    total += group_sum[k];
  }
  return total;
}

fn scalar_at(i: u32) -> f32 {
  return x[i / 4u][i % 4u];
}

// (mean, sum of squared deviations) of channel c.
fn moments(c: u32, tid: u32) -> vec2f {
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  let shift = scalar_at(c * p.hw);
  var s = 0.0;
  var q = 0.0;
  if (VEC4) {
    let plane4 = p.hw / 4u;
    let image4 = p.channels * plane4;
    var s4 = vec4f(0.0);
    var q4 = vec4f(0.0);
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image4 + c * plane4;
      for (var i = lane; i < plane4; i += p.lanes) {
        let d = x[base + i] - shift;
        s4 += d;
        q4 += d * d;
      }
    }
    s = (s4.x + s4.y) + (s4.z + s4.w);
    q = (q4.x + q4.y) + (q4.z + q4.w);
  } else {
    let image = p.channels * p.hw;
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image + c * p.hw;
      for (var i = lane; i < p.hw; i += p.lanes) {
        let d = scalar_at(base + i) - shift;
        s += d;
        q += d * d;
      }
    }
  }
  let sums = workgroup_sum(vec2f(s, q), tid);
  let centre = sums.x / p.count;
  // Sum of (d - centre)^2 = sum d^2 - count * centre^2, never below 0 after rounding.
  return vec2f(shift + centre, max(sums.y - sums.x * centre, 0.0));
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

@compute @workgroup_size(64)
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

@compute @workgroup_size(64)
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

@compute @workgroup_size(64)
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
