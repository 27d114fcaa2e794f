// adam_step: PyTorch 1.13's Adam and AdamW updates (torch/optim/adam.py and adamw.py,
// _single_tensor_*, amsgrad off) for two parameter tensors per dispatch ("slots"), so that a step
// needs half as many dispatches; eight storage buffers, WebGPU's guaranteed minimum per stage.
// Bindings: 0 uniform Params (below);
//   1 p0: array<f32> [n0] parameter (read-write), 2 g0: array<f32> [n0] gradient (read),
//   3 m0: array<f32> [n0] exp_avg (read-write), 4 v0: array<f32> [n0] exp_avg_sq (read-write),
//   5 p1, 6 g1, 7 m1, 8 v1: the same for slot 1 [n1] (dummies with n1 = 0 when unused);
//   9 f0, 10 f1: uniform vec4f, each slot's parameter's (step_size, bc2_sqrt, 0, 0) from
//   adam_prepare's output (slot 0's again when slot 1 is unused): for its step count t,
//   step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t).
// Uniform Params { n0, n1: u32; beta1, one_minus_beta1, beta2, one_minus_beta2, eps, l2,
//   decay: f32 }. Adam: l2 = weight decay, decay = 1; AdamW: l2 = 0,
//   decay = 1 - lr * weight decay.
// Workgroup 256; dispatch grid1d(n0 + n1, 256); invocation i < n0 updates element i of slot 0,
// n0 <= i < n0 + n1 element i - n0 of slot 1. Overwrites p, m and v in place:
//   p = p * decay; g = g + l2 * p; m = beta1 * m + (1 - beta1) * g;
//   v = beta2 * v + (1 - beta2) * g * g; p = p - step_size * m / (sqrt(v) / bc2_sqrt + eps).
struct Params {
  n0: u32,
  n1: u32,
  beta1: f32,
  one_minus_beta1: f32,
  beta2: f32,
  one_minus_beta2: f32,
  eps: f32,
  l2: f32,
  decay: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> p0: array<f32>;
@group(0) @binding(2) var<storage, read> g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> m0: array<f32>;
@group(0) @binding(4) var<storage, read_write> v0: array<f32>;
@group(0) @binding(5) var<storage, read_write> p1: array<f32>;
@group(0) @binding(6) var<storage, read> g1: array<f32>;
@group(0) @binding(7) var<storage, read_write> m1: array<f32>;
@group(0) @binding(8) var<storage, read_write> v1: array<f32>;
@group(0) @binding(9) var<uniform> f0: vec4f;
@group(0) @binding(10) var<uniform> f1: vec4f;

// The new (p, m, v), in PyTorch's operation order.
fn update(p_in: f32, g_in: f32, m_in: f32, v_in: f32, step_size: f32, bc2_sqrt: f32) -> vec3f {
  let p = p_in * u.decay;
  let g = g_in + u.l2 * p;
  let m = m_in * u.beta1 + u.one_minus_beta1 * g;
  let v = v_in * u.beta2 + u.one_minus_beta2 * g * g;
  let denom = sqrt(v) / bc2_sqrt + u.eps;
  return vec3f(p - step_size * m / denom, m, v);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < u.n0) {
    let r = update(p0[i], g0[i], m0[i], v0[i], f0.x, f0.y);
    p0[i] = r.x;
    m0[i] = r.y;
    v0[i] = r.z;
    return;
  }
  let j = i - u.n0;
  if (j >= u.n1) {
    return;
  }
  let r = update(p1[j], g1[j], m1[j], v1[j], f1.x, f1.y);
  p1[j] = r.x;
  m1[j] = r.y;
  v1[j] = r.z;
}
