// batch_norm_forward: y = act((x - mean[c]) * (invstd[c] * weight[c]) + bias[c] + res), the
// normalization of batchNorm2d with the residual addition and the ReLU (NaN kept) of a ResNet
// block in the same pass; subtracting the mean first avoids the cancellation of
// x * alpha - mean * alpha when |mean| >> std.
// Bindings: 0 uniform Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks }
// (u32); 1 x: array<vec4f> [N, C, H, W] (pool buffers are whole vec4s); 2 stats: array<f32>
// [2, C] = (mean, invstd); 3 weight: array<f32> [C]; 4 bias: array<f32> [C]; 5 res:
// array<vec4f> [N, C, H, W] (3 to 5: any buffer when absent, then not read); 6 y: array<vec4f>
// [N, C, H, W] (writes every element).
// Overrides HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, RELU (what follows the normalization) and VEC4:
// H*W % 4 == 0, so that every vec4 lies in one (n, c) plane and is read and written whole;
// otherwise each invocation walks its up to 4 values one by one.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes chunk t: the 4 consecutive
// values 4 * (t % chunks) .. of plane t / chunks (fewer at the end of a plane without VEC4), so
// the channel is found with one division per 4 values.
struct Params { channels: u32, hw: u32, chunks: u32, count: u32 }

override HAS_WEIGHT: bool = true;
override HAS_BIAS: bool = true;
override HAS_RESIDUAL: bool = false;
override RELU: bool = false;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> y: array<vec4f>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let plane = t / p.chunks;
  let c = plane % p.channels;
  let mean = stats[c];
  var scale = stats[p.channels + c];
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
