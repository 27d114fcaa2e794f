// batch_norm_act_backward_input: the input gradient of batchNormAct, with g = dy masked by the
// ReLU (dy where y > 0, else 0; dy itself without ReLU):
// dx = (g - a[c] - (x - mean[c]) * k[c]) * scale[c] (batch_norm_backward_input's arithmetic with
// coef from batch_norm_act_backward_reduce; a = k = 0 in eval mode), and, entry point
// main_residual, the residual's gradient dres = g.
// Requires H * W % 4 == 0.
// Bindings: 0 uniform Params { channels: C, hw4: H*W/4, count4: N*C*H*W/4, relu } (u32);
// 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f> [N, C, H, W] (the forward's output; any
// buffer without relu, then not read); 3 x: array<vec4f> [N, C, H, W]; 4 coef: array<f32>
// [4, C] = (mean, scale, a, k); 5 dx: array<vec4f> [N, C, H, W] (writes every element);
// 6 dres: array<vec4f> [N, C, H, W] (main_residual only; writes every element).
// Workgroup 256; dispatch grid1d(count4, 256); one invocation writes one vec4.
struct Params { channels: u32, hw4: u32, count4: u32, relu: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> dres: array<vec4f>;

// The masked gradient of element vec4 i, and its dx.
fn gradients(i: u32) -> array<vec4f, 2> {
  let c = (i / p.hw4) % p.channels;
  var g = dy[i];
  if (p.relu != 0u) { g = select(vec4f(0.0), g, y[i] > vec4f(0.0)); }
  let mean = coef[c];
  let scale = coef[p.channels + c];
  let a = coef[2u * p.channels + c];
  let k = coef[3u * p.channels + c];
  return array<vec4f, 2>(g, (g - a - (x[i] - mean) * k) * scale);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  dx[i] = gradients(i)[1];
}

@compute @workgroup_size(256)
fn main_residual(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  let g = gradients(i);
  dres[i] = g[0];
  dx[i] = g[1];
}
