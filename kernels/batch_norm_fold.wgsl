// batch_norm_fold: per channel, the three values of an eval-mode batch norm folded with the bias
// of the convolution before it, for conv2dBatchNormEval's epilogue in conv2d_forward_rows
// y = (v - params[0, c]) * params[1, c] + params[2, c], v the convolution without its bias:
// params[0, c] = running_mean[c] - conv_bias[c], params[1, c] = weight[c] / sqrt(running_var[c]
// + eps) (batch_norm_forward's scale), params[2, c] = bias[c]; an absent conv bias counts as 0,
// an absent weight as 1, an absent bias as 0.
// Bindings: 0 uniform Params { channels: C (u32), eps (f32) }; 1 running_mean: array<f32> [C];
// 2 running_var: array<f32> [C]; 3 conv_bias: array<f32> [C]; 4 weight: array<f32> [C];
// 5 bias: array<f32> [C] (3 to 5: any buffer of >= C floats when absent, then not read);
// 6 params: array<f32> [3, C] (writes every element).
// Overrides HAS_CONV_BIAS, HAS_WEIGHT, HAS_BIAS: which of 3 to 5 are given.
// Workgroup 64; dispatch grid1d(C, 64); one invocation writes one channel's three values.
struct Params { channels: u32, eps: f32 }

override HAS_CONV_BIAS: bool = true;
override HAS_WEIGHT: bool = true;
override HAS_BIAS: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> running_mean: array<f32>;
@group(0) @binding(2) var<storage, read> running_var: array<f32>;
@group(0) @binding(3) var<storage, read> conv_bias: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  var shift = running_mean[c];
  if (HAS_CONV_BIAS) { shift -= conv_bias[c]; }
  var scale = 1.0 / sqrt(running_var[c] + p.eps);
  if (HAS_WEIGHT) { scale *= weight[c]; }
  var offset = 0.0;
  if (HAS_BIAS) { offset = bias[c]; }
  params[c] = shift;
  params[p.channels + c] = scale;
  params[2u * p.channels + c] = offset;
}
