// batch_norm_backward_reduce: per channel, with g = dy masked by the ReLU (dy where y > 0, else
// 0; dy itself without RELU), the gradient of the normalization's output:
// sum_dy[c] = sum(g) (the bias gradient), sum_dy_xhat[c] = sum(g * xhat) with
// xhat = (x - mean) * invstd (the weight gradient), and the per-channel coefficients of
// batch_norm_backward_input: coef = [4, C] = (mean, scale = invstd * weight, a = sum_dy / n,
// k = sum_dy_xhat * invstd / n), a and k zero without TRAINING (running statistics are
// constants).
// Bindings: 0 uniform Params { batch: N, channels: C, hw: H*W, lanes, rows: 64 / lanes (u32),
// n: N*H*W (f32) }: lanes (a power of two <= 64, the fewest that keep every invocation busy:
// reductionLanes in src/ops/batch_norm.ts) invocations share one image's plane (in vec4s
// when VEC4, else in values), rows images are read at once; 1 dy: array<vec4f> [N, C, H, W];
// 2 y: array<vec4f> [N, C, H, W] (the forward's output; any buffer without RELU, then not read);
// 3 x: array<vec4f> [N, C, H, W]; 4 stats: array<f32> [2, C] = (mean, invstd); 5 weight:
// array<f32> [C] (any buffer without HAS_WEIGHT); 6 sum_dy: array<f32> [C]; 7 sum_dy_xhat:
// array<f32> [C]; 8 coef: array<f32> [4, C] (6 to 8: writes every element).
// Overrides RELU (a constant, so that the mask's load is not in a branch, which llvmpipe would
// run masked lane by lane), HAS_WEIGHT, TRAINING, and VEC4: H*W % 4 == 0, planes read as vec4s.
// Workgroup 64; dispatch grid1d(C, 1): one workgroup per channel, one pass over its values.
struct Params { batch: u32, channels: u32, hw: u32, lanes: u32, rows: u32, n: f32 }

override RELU: bool = false;
override HAS_WEIGHT: bool = true;
override TRAINING: bool = true;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> sum_dy_xhat: array<f32>;
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;

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

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
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
  if (tid == 0u) {
    var total = vec2f(0.0);
    for (var k = 0u; k < GROUPS; k++) {
      total += group_sum[k];
    }
    let invstd = stats[p.channels + c];
    let dxhat = total.y * invstd;
    sum_dy[c] = total.x;
    sum_dy_xhat[c] = dxhat;
    var scale = invstd;
    if (HAS_WEIGHT) { scale *= weight[c]; }
    coef[c] = mean;
    coef[p.channels + c] = scale;
    if (TRAINING) {
      coef[2u * p.channels + c] = total.x / p.n;
      coef[3u * p.channels + c] = dxhat * invstd / p.n;
    } else {
      coef[2u * p.channels + c] = 0.0;
      coef[3u * p.channels + c] = 0.0;
    }
  }
}
