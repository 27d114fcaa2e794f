// batch_norm_backward_reduce: per channel, sum(dy) (= dbias) and sum(dy * xhat) (= dweight) with
// xhat = (x - mean) * invstd; the training-mode input gradient needs both.
// Bindings: 0 uniform Params; 1 dy: array<f32> [N, C, H, W] (reads); 2 x: array<f32>
// [N, C, H, W] (reads); 3 stats: array<f32> [2, C] = (mean, invstd) (reads);
// 4 sum_dy: array<f32> [C] (writes); 5 sum_dy_xhat: array<f32> [C] (writes).
// Params { batch: N, channels: C, hw: H*W, lanes, rows: 256 / lanes }: lanes (a power of two
// <= 256, the fewest that keep every invocation busy: reductionLanes) invocations share one
// image's H*W, rows images are read at once.
// Workgroup 256; dispatch grid1d(C, 1): one workgroup per channel, one pass over its values.
struct Params { batch: u32, channels: u32, hw: u32, lanes: u32, rows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> sum_dy_xhat: array<f32>;

const WG: u32 = 256u;
const GROUPS: u32 = 16u;
var<workgroup> partial: array<vec2f, 256>;
var<workgroup> group_sum: array<vec2f, 16>;

@compute @workgroup_size(256)
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
  let image = p.channels * p.hw;
  // invstd is factored out of the second sum and applied once at the end.
  var s = vec2f(0.0);
  for (var n = row; n < p.batch; n += p.rows) {
    let base = n * image + c * p.hw;
    for (var i = lane; i < p.hw; i += p.lanes) {
      let g = dy[base + i];
      s += vec2f(g, g * (x[base + i] - mean));
    }
  }
  // Two levels of 16 rather than a tree: two barriers only.
  partial[tid] = s;
  workgroupBarrier();
  if (tid < GROUPS) {
    var t = vec2f(0.0);
    for (var k = 0u; k < WG / GROUPS; k++) {
      t += partial[tid * (WG / GROUPS) + k];
    }
    group_sum[tid] = t;
  }
  workgroupBarrier();
  if (tid == 0u) {
    var total = vec2f(0.0);
    for (var k = 0u; k < GROUPS; k++) {
      total += group_sum[k];
    }
    sum_dy[c] = total.x;
    sum_dy_xhat[c] = total.y * stats[p.channels + c];
  }
}
