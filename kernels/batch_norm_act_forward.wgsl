// batch_norm_act_forward: y = act((x - mean[c]) * (invstd[c] * weight[c]) + bias[c] + res), the
// normalization of batchNormAct (batch_norm_forward's arithmetic, in vec4s) with the residual
// addition and the ReLU (NaN kept) of a ResNet block in the same pass.
// Requires H * W % 4 == 0, so that every vec4 lies in one (n, c) plane.
// Bindings: 0 uniform Params { channels: C, hw4: H*W/4, count4: N*C*H*W/4, has_weight, has_bias,
// has_residual, relu } (u32); 1 x: array<vec4f> [N, C, H, W]; 2 stats: array<f32> [2, C] =
// (mean, invstd); 3 weight: array<f32> [C]; 4 bias: array<f32> [C]; 5 res: array<vec4f>
// [N, C, H, W] (3 to 5: any buffer when absent, then not read); 6 y: array<vec4f> [N, C, H, W]
// (writes every element).
// Workgroup 256; dispatch grid1d(count4, 256); one invocation writes one vec4 of y.
struct Params {
  channels: u32,
  hw4: u32,
  count4: u32,
  has_weight: u32,
  has_bias: u32,
  has_residual: u32,
  relu: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> y: array<vec4f>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  let c = (i / p.hw4) % p.channels;
  var scale = stats[p.channels + c];
  if (p.has_weight != 0u) { scale *= weight[c]; }
  var shift = 0.0;
  if (p.has_bias != 0u) { shift = bias[c]; }
  var v = (x[i] - stats[c]) * scale + shift;
  if (p.has_residual != 0u) { v += res[i]; }
  if (p.relu != 0u) { v = select(v, vec4f(0.0), v < vec4f(0.0)); }
  y[i] = v;
}
