// batch_norm_backward_reduce_combine: the second pass of the gpu family's batch-norm backward
// reduction: per channel, adds the chunks of batch_norm_backward_reduce_chunks and writes what
// batch_norm_backward_reduce writes: sum_dy[c] = sum(g) (the bias gradient),
// sum_dy_xhat[c] = sum(g * xhat) (the weight gradient) and the coefficients of
// batch_norm_backward_input, coef = [4, C] = (mean, scale = invstd * weight, a = sum_dy / n,
// k = sum_dy_xhat * invstd / n), a and k zero without TRAINING.
// Bindings: 0 uniform Params { channels: C, chunks (u32), n: N * H * W (f32) }; 1 stats:
// array<f32> [2, C] = (mean, invstd); 2 weight: array<f32> [C] (any buffer without HAS_WEIGHT);
// 3 partial: array<vec2f> [C, chunks] = (sum g, sum g * (x - mean)); 4 sum_dy: array<f32> [C];
// 5 sum_dy_xhat: array<f32> [C]; 6 coef: array<f32> [4, C] (4 to 6: writes every element).
// Overrides HAS_WEIGHT, TRAINING.
// Workgroup 64; dispatch grid1d(C, 64); one invocation per channel adds its chunks in order.
struct Params { channels: u32, chunks: u32, n: f32 }

override HAS_WEIGHT: bool = true;
override TRAINING: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> partial: array<vec2f>;
@group(0) @binding(4) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> sum_dy_xhat: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = gid.x + gid.y * nwg.x * 64u;
  if (c >= p.channels) { return; }
  var total = vec2f(0.0);
  for (var z = 0u; z < p.chunks; z++) {
    total += partial[c * p.chunks + z];
  }
  let mean = stats[c];
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
