// batch_norm_act_backward_reduce: per channel, with g = dy masked by the ReLU (dy where y > 0,
// else 0; dy itself without ReLU), the gradient of the normalization's output:
// sum_dy[c] = sum(g) (the bias gradient), sum_dy_xhat[c] = sum(g * xhat) with
// xhat = (x - mean) * invstd (the weight gradient), and the per-channel coefficients of
// batch_norm_act_backward_input: coef = [4, C] = (mean, scale = invstd * weight,
// a = sum_dy / n, k = sum_dy_xhat * invstd / n), a and k zero in eval mode (!training).
// Requires H * W % 4 == 0.
// Bindings: 0 uniform Params { batch: N, channels: C, hw4: H*W/4, lanes, rows: 64 / lanes,
// has_weight, training: u32, n: N*H*W (f32) }: lanes (a power of two <= 64, the fewest that keep
// every invocation busy: reductionLanes) invocations share one image's plane, rows images are
// read at once; 1 dy: array<vec4f> [N, C, H, W];
// 2 y: array<vec4f> [N, C, H, W] (the forward's output; any buffer without relu, then not read);
// 3 x: array<vec4f> [N, C, H, W]; 4 stats: array<f32> [2, C] = (mean, invstd); 5 weight:
// array<f32> [C] (any buffer when !has_weight); 6 sum_dy: array<f32> [C]; 7 sum_dy_xhat:
// array<f32> [C]; 8 coef: array<f32> [4, C] (6 to 8: writes every element).
// Override RELU: mask dy by y > 0 (a constant, so that the mask's load is not in a branch, which
// llvmpipe would run masked lane by lane).
// Workgroup 64; dispatch grid1d(C, 1): one workgroup per channel, one pass over its values.
struct Params {
  batch: u32,
  channels: u32,
  hw4: u32,
  lanes: u32,
  rows: u32,
  has_weight: u32,
  training: u32,
  n: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> sum_dy_xhat: array<f32>;
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;

override RELU: bool = true;

const WG: u32 = 64u;
const GROUPS: u32 = 8u;
var<workgroup> partial: array<vec2f, 64>;
var<workgroup> group_sum: array<vec2f, 8>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) tid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= p.channels) { return; }
  let mean = stats[c];
  let lane = tid % p.lanes;
  let row = tid / p.lanes;
  let image4 = p.channels * p.hw4;
  // invstd is factored out of the second sum and applied once at the end.
  var s = vec4f(0.0);
  var t = vec4f(0.0);
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image4 + c * p.hw4;
    for (var i = lane; i < p.hw4; i += p.lanes) {
      var g = dy[base + i];
      if (RELU) { g = select(vec4f(0.0), g, y[base + i] > vec4f(0.0)); }
      s += g;
      t += g * (x[base + i] - mean);
    }
  }
  // Two levels of 8 rather than a tree: two barriers only.
  partial[tid] = vec2f((s.x + s.y) + (s.z + s.w), (t.x + t.y) + (t.z + t.w));
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
    if (p.has_weight != 0u) { scale *= weight[c]; }
    coef[c] = mean;
    coef[p.channels + c] = scale;
    if (p.training != 0u) {
      coef[2u * p.channels + c] = total.x / p.n;
      coef[3u * p.channels + c] = dxhat * invstd / p.n;
    } else {
      coef[2u * p.channels + c] = 0.0;
      coef[3u * p.channels + c] = 0.0;
    }
  }
}
