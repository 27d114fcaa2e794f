// batch_norm_backward: the software family's training-mode batch-norm backward in one pass per
// channel, with g = dy masked by the ReLU (dy where y > 0, else 0; dy itself without RELU): the
// sums of batch_norm_backward_reduce (the same sums in the same order), sum_dy[c] = sum(g) (the
// bias gradient) and sum_dy_xhat[c] = sum(g * xhat), xhat = (x - mean) * invstd (the weight
// gradient), then the input gradient of batch_norm_backward_input's training closed form,
// dx = (g - a - (x - mean) * k) * scale with a = sum(g) / n, k = sum(g * xhat) * invstd / n, and
// (entry point main_residual) the residual's gradient dres = g.
// Bindings: 0 uniform Params { batch: N, channels: C, hw: H*W, lanes, rows: 64 / lanes (u32),
// n: N*H*W (f32) }: lanes (a power of two <= 64: reductionLanes in src/ops/batch_norm.ts)
// invocations share one image's plane (in vec4s when VEC4, else in values), rows images are read
// at once, in both passes; 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f> [N, C, H, W] (the
// forward's output; any buffer without RELU, then not read); 3 x: array<vec4f> [N, C, H, W];
// 4 stats: array<f32> [3, C] = (mean, invstd, scale = invstd * weight), as
// batch_norm_stats_forward wrote it; 5 sum_dy: array<f32> [C]; 6 sum_dy_xhat: array<f32> [C];
// 7 dx: array<vec4f> [N, C, H, W]; 8 dres: array<vec4f> [N, C, H, W] (main_residual only) (5 to
// 8: writes every element). The forward's scale stands in for the weight, so that main_residual
// fits in 8 storage bindings.
// Overrides RELU (a constant, so that the mask's load is not in a branch, which llvmpipe would
// run masked lane by lane) and VEC4: H*W % 4 == 0, planes read and written as vec4s.
// Workgroup 64; dispatch grid1d(C, 1): one workgroup per channel, which reduces its values, so
// that every invocation holds the channel's sums, then writes their gradients (a second pass).
struct Params { batch: u32, channels: u32, hw: u32, lanes: u32, rows: u32, n: f32 }

override RELU: bool = false;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> sum_dy_xhat: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> dres: array<vec4f>;

const WG: u32 = 64u;
const GROUPS: u32 = 8u;
var<workgroup> partial: array<vec2f, 64>;
var<workgroup> group_sum: array<vec2f, 8>;

// (sum g, sum g * (x - mean)) over the values one invocation walks.
fn partial_sums(c: u32, mean: f32, tid: u32) -> vec2f {
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  if (VEC4) {
    let plane4 = p.hw / 4u;
    let image4 = p.channels * plane4;
    var s = vec4f(0.0);
    var t = vec4f(0.0);
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image4 + c * plane4;
      for (var i = lane; i < plane4; i += p.lanes) {
        var g = dy[base + i];
        if (RELU) { g = select(vec4f(0.0), g, y[base + i] > vec4f(0.0)); }
        s += g;
        t += g * (x[base + i] - mean);
      }
    }
    return vec2f((s.x + s.y) + (s.z + s.w), (t.x + t.y) + (t.z + t.w));
  }
  let image = p.channels * p.hw;
  var st = vec2f(0.0);
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = base + lane; i < base + p.hw; i += p.lanes) {
      var g = dy[i / 4u][i % 4u];
      if (RELU) { g = select(0.0, g, y[i / 4u][i % 4u] > 0.0); }
      st += vec2f(g, g * (x[i / 4u][i % 4u] - mean));
    }
  }
  return st;
}

// The channel's (mean, scale, a, k), in every invocation; tid 0 writes the weight and bias
// gradients.
fn coefficients(c: u32, tid: u32) -> vec4f {
  let mean = stats[c];
  // invstd is factored out of the second sum and applied once at the end.
  // Two levels of 8 rather than a tree: two barriers only.
  partial[tid] = partial_sums(c, mean, tid);
  workgroupBarrier();
  if (tid < GROUPS) {
    var u = vec2f(0.0);
    for (var k = 0u; k < WG / GROUPS; k++) {
      u += partial[tid * (WG / GROUPS) + k];
    }
    group_sum[tid] = u;
  }
  workgroupBarrier();
  var total = vec2f(0.0);
  for (var k = 0u; k < GROUPS; k++) {
    total += group_sum[k];
  }
  let invstd = stats[p.channels + c];
  let dxhat = total.y * invstd;
  if (tid == 0u) {
    sum_dy[c] = total.x;
    sum_dy_xhat[c] = dxhat;
  }
  return vec4f(mean, stats[2u * p.channels + c], total.x / p.n, dxhat * invstd / p.n);
}

// g and dx of vec4 i (VEC4).
fn gradients4(i: u32, cf: vec4f) -> array<vec4f, 2> {
  var g = dy[i];
  if (RELU) { g = select(vec4f(0.0), g, y[i] > vec4f(0.0)); }
  return array<vec4f, 2>(g, (g - cf.z - (x[i] - cf.x) * cf.w) * cf.y);
}

// g and dx of value i (not VEC4).
fn gradients1(i: u32, cf: vec4f) -> vec2f {
  var g = dy[i / 4u][i % 4u];
  if (RELU) { g = select(0.0, g, y[i / 4u][i % 4u] > 0.0); }
  return vec2f(g, (g - cf.z - (x[i / 4u][i % 4u] - cf.x) * cf.w) * cf.y);
}

// Writes dx of channel c over the values this invocation reduced. (write_dx_dres repeats the
// loops, as an entry point whose call tree names dres would need it bound.)
fn write_dx(c: u32, tid: u32, cf: vec4f) {
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  if (VEC4) {
    let plane4 = p.hw / 4u;
    let image4 = p.channels * plane4;
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image4 + c * plane4;
      for (var i = base + lane; i < base + plane4; i += p.lanes) {
        dx[i] = gradients4(i, cf)[1];
      }
    }
    return;
  }
  let image = p.channels * p.hw;
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = base + lane; i < base + p.hw; i += p.lanes) {
      dx[i / 4u][i % 4u] = gradients1(i, cf).y;
    }
  }
}

// write_dx, and dres = g.
fn write_dx_dres(c: u32, tid: u32, cf: vec4f) {
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  if (VEC4) {
    let plane4 = p.hw / 4u;
    let image4 = p.channels * plane4;
    for (var n = row; n < p.batch; n += p.rows) {
      let base = n * image4 + c * plane4;
      for (var i = base + lane; i < base + plane4; i += p.lanes) {
        let r = gradients4(i, cf);
        dx[i] = r[1];
        dres[i] = r[0];
      }
    }
    return;
  }
  let image = p.channels * p.hw;
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = base + lane; i < base + p.hw; i += p.lanes) {
      let r = gradients1(i, cf);
      dx[i / 4u][i % 4u] = r.y;
      dres[i / 4u][i % 4u] = r.x;
    }
  }
}

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  write_dx(c, tid, coefficients(c, tid));
}

@compute @workgroup_size(64)
fn main_residual(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  write_dx_dres(c, tid, coefficients(c, tid));
}
