// adam_multi_step: PyTorch 1.13's Adam and AdamW updates (torch/optim/adam.py and adamw.py,
// _single_tensor_*, amsgrad off) of many parameters in one dispatch, like PyTorch's foreach
// optimizers: the parameters, their gradients, exp_avg and exp_avg_sq lie in four flat buffers of
// one layout, and a chunk table lists the pieces to update. Each parameter's step-dependent
// factors come from adam_prepare's output, so parameters at different step counts share one
// dispatch. The same operations in the same order as adam_step, so the results are equal.
// Bindings: 0 uniform Params (below);
//   1 p: array<f32> flat parameters (read-write), 2 g: array<f32> flat gradients (read),
//   3 m: array<f32> flat exp_avg (read-write), 4 v: array<f32> flat exp_avg_sq (read-write),
//   5 table: array<vec4u> chunk table: (first element, element count <= 2048, parameter index,
//     0); this dispatch reads chunks first_chunk .. first_chunk + chunks - 1. Parameters without
//     a gradient have no chunks.
//   6 factors: array<vec4f> (read): parameter i's (step_size, bc2_sqrt, 0, 0) at index 16 * i,
//     written by adam_prepare for its step count t: step_size = lr / (1 - beta1^t),
//     bc2_sqrt = sqrt(1 - beta2^t).
// Uniform Params { first_chunk, chunks: u32; beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
//   l2, decay: f32 }. Adam: l2 = weight decay, decay = 1; AdamW: l2 = 0,
//   decay = 1 - lr * weight decay.
// Workgroup 256; dispatch grid1d(chunks * 256, 256): workgroup c (x + y * groups in x) updates
// chunk first_chunk + c, invocation l its elements l, l + 256, ... In place, per element:
//   p = p * decay; g = g + l2 * p; m = beta1 * m + (1 - beta1) * g;
//   v = beta2 * v + (1 - beta2) * g * g; p = p - step_size * m / (sqrt(v) / bc2_sqrt + eps).
struct Params {
  first_chunk: u32,
  chunks: u32,
  beta1: f32,
  one_minus_beta1: f32,
  beta2: f32,
  one_minus_beta2: f32,
  eps: f32,
  l2: f32,
  decay: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> table: array<vec4u>;
@group(0) @binding(6) var<storage, read> factors: array<vec4f>;

// The new (p, m, v), as adam_step computes them.
fn update(p_in: f32, g_in: f32, m_in: f32, v_in: f32, step_size: f32, bc2_sqrt: f32) -> vec3f {
  let p = p_in * u.decay;
  let g = g_in + u.l2 * p;
  let m = m_in * u.beta1 + u.one_minus_beta1 * g;
  let v = v_in * u.beta2 + u.one_minus_beta2 * g * g;
  let denom = sqrt(v) / bc2_sqrt + u.eps;
  return vec3f(p - step_size * m / denom, m, v);
}

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= u.chunks) {
    return;
  }
  let e = table[u.first_chunk + c];
  let f = factors[16u * e.z];
  for (var k = lid; k < e.y; k += 256u) {
    let i = e.x + k;
    let r = update(p[i], g[i], m[i], v[i], f.x, f.y);
    p[i] = r.x;
    m[i] = r.y;
    v[i] = r.z;
  }
}
