// batch_norm_stats_forward: the software family's training-mode batch norm in one pass per
// channel: the batch mean and 1/sqrt(biased var + eps) of x as batch_norm_stats computes them (the
// same sums in the same order), then y = act((x - mean) * (invstd * weight) + bias + res) as
// batch_norm_forward computes it, and (entry points main_running, main_running_counter) PyTorch's
// in-place running-statistics update and counter.
// Bindings: 0 uniform Params; 1 x: array<vec4f> [N, C, H, W] (reads; pool buffers are whole
// vec4s, so every element is inside one); 2 stats: array<f32> [3, C] = (mean, invstd,
// scale = invstd * weight) (writes; what batch_norm_backward reads); 3 weight: array<f32> [C];
// 4 bias: array<f32> [C]; 5 res: array<vec4f> [N, C, H, W] (3 to 5: any buffer but stats, y and
// running when absent, then not read); 6 y: array<vec4f> [N, C, H, W] (writes every element);
// 7 running: array<f32>, one binding over the running mean [C] at mean_at, the running variance
// [C] at var_at (both updated in place, main_running*) and the counter [1] at counter_at (adds 1,
// main_running_counter only): three tensors of one buffer, so that the entry points fit in 7
// storage bindings.
// Params { batch: N, channels: C, hw: H*W, lanes, rows: WG / lanes, count: N*H*W (f32),
//   momentum, eps (f32), mean_at, var_at, counter_at (u32, elements from running's start;
//   main_running* only) }. lanes (a power of two <= WG) invocations share one image's plane (in
//   vec4s when VEC4, else in values), rows images are read at once (reductionLanes in
//   src/ops/batch_norm.ts); the normalization walks the same values in the same way.
// Overrides HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, RELU (what follows the normalization) and VEC4:
// H*W % 4 == 0, so that each (n, c) plane is whole vec4s and is read and written as vec4s.
// Workgroup WG = 64; dispatch grid1d(C, 1): one workgroup per channel, which reduces its values
// (one pass of shifted sums, see batch_norm_stats.wgsl), so that every invocation holds the
// channel's statistics, then normalizes them (a second pass).
struct Params {
  batch: u32,
  channels: u32,
  hw: u32,
  lanes: u32,
  rows: u32,
  count: f32,
  momentum: f32,
  eps: f32,
  mean_at: u32,
  var_at: u32,
  counter_at: u32,
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
@group(0) @binding(7) var<storage, read_write> running: array<f32>;

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

// (mean, sum of squared deviations) of channel c, in every invocation.
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

// Writes channel c's y over the values this invocation reduced, and (tid 0) its stats; returns
// nothing to read back, as every invocation derived the same mean and invstd from the same sums.
fn normalize(c: u32, tid: u32, m: vec2f) {
  let mean = m.x;
  let invstd = 1.0 / sqrt(m.y / p.count + p.eps);
  var scale = invstd;
  if (HAS_WEIGHT) { scale *= weight[c]; }
  var shift = 0.0;
  if (HAS_BIAS) { shift = bias[c]; }
  if (tid == 0u) {
    stats[c] = mean;
    stats[p.channels + c] = invstd;
    stats[2u * p.channels + c] = scale;
  }
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  if (VEC4) {
    let plane4 = p.hw / 4u;
    let image4 = p.channels * plane4;
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image4 + c * plane4;
      for (var i = base + lane; i < base + plane4; i += p.lanes) {
        var v = (x[i] - mean) * scale + shift;
        if (HAS_RESIDUAL) { v += res[i]; }
        if (RELU) { v = select(v, vec4f(0.0), v < vec4f(0.0)); }
        y[i] = v;
      }
    }
  } else {
    let image = p.channels * p.hw;
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image + c * p.hw;
      for (var i = base + lane; i < base + p.hw; i += p.lanes) {
        var v = (x[i / 4u][i % 4u] - mean) * scale + shift;
        if (HAS_RESIDUAL) { v += res[i / 4u][i % 4u]; }
        if (RELU) { v = select(v, 0.0, v < 0.0); }
        y[i / 4u][i % 4u] = v;
      }
    }
  }
}

fn update_running(c: u32, m: vec2f) {
  let unbiased = m.y / (p.count - 1.0);
  let mi = p.mean_at + c;
  let vi = p.var_at + c;
  running[mi] = p.momentum * m.x + (1.0 - p.momentum) * running[mi];
  running[vi] = p.momentum * unbiased + (1.0 - p.momentum) * running[vi];
}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  normalize(c, tid, moments(c, tid));
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
    update_running(c, m);
  }
  normalize(c, tid, m);
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
    update_running(c, m);
    if (c == 0u) {
      running[p.counter_at] = running[p.counter_at] + 1.0;
    }
  }
  normalize(c, tid, m);
}
