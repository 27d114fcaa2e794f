// sgd_step: PyTorch 1.13's SGD update (torch/optim/sgd.py, _single_tensor_sgd) for two parameter
// tensors per dispatch ("slots"), so that a step needs half as many dispatches; eight storage
// buffers at most, WebGPU's guaranteed minimum per shader stage.
// Bindings: 0 uniform Params (below);
//   1 p0: array<f32> [n0] parameter (read-write), 2 g0: array<f32> [n0] gradient (read),
//   3 buf0: array<f32> [n0] momentum buffer (read-write; a dummy when momentum is off),
//   4 p1, 5 g1, 6 buf1: the same for slot 1 [n1] (dummies with n1 = 0 when unused).
// Uniform Params { n0, n1, init0, init1, use_momentum, nesterov: u32,
//   lr, momentum, one_minus_dampening, weight_decay: f32 }; init<k> = 1 on the first step that
//   slot's parameter takes, when its momentum buffer holds nothing yet (PyTorch clones d_p then).
// Workgroup 256; dispatch grid1d(n0 + n1, 256); invocation i < n0 updates element i of slot 0,
// n0 <= i < n0 + n1 element i - n0 of slot 1. Overwrites p (and buf) in place:
//   d = g + wd * p; buf = init ? d : momentum * buf + (1 - dampening) * d;
//   d = nesterov ? d + momentum * buf : buf (with momentum); p = p - lr * d.
struct Params {
  n0: u32,
  n1: u32,
  init0: u32,
  init1: u32,
  use_momentum: u32,
  nesterov: u32,
  lr: f32,
  momentum: f32,
  one_minus_dampening: f32,
  weight_decay: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> p0: array<f32>;
@group(0) @binding(2) var<storage, read> g0: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf0: array<f32>;
@group(0) @binding(4) var<storage, read_write> p1: array<f32>;
@group(0) @binding(5) var<storage, read> g1: array<f32>;
@group(0) @binding(6) var<storage, read_write> buf1: array<f32>;

// The new parameter value and momentum buffer, as PyTorch computes them (same operation order).
// Selects rather than an early return: on llvmpipe the divergent return made the kernel ~20x
// slower (1.06 ms against 0.055 ms for 2x1024 values).
fn update(p: f32, g: f32, buf: f32, init: bool) -> vec2f {
  let d = g + u.weight_decay * p;
  let b = select(buf * u.momentum + u.one_minus_dampening * d, d, init);
  let with_momentum = select(b, d + u.momentum * b, u.nesterov != 0u);
  let step = select(d, with_momentum, u.use_momentum != 0u);
  return vec2f(p - u.lr * step, b);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let momentum = u.use_momentum != 0u;
  if (i < u.n0) {
    let init = u.init0 != 0u;
    var buf = 0.0;
    if (momentum && !init) {
      buf = buf0[i];
    }
    let r = update(p0[i], g0[i], buf, init);
    p0[i] = r.x;
    if (momentum) {
      buf0[i] = r.y;
    }
    return;
  }
  let j = i - u.n0;
  if (j >= u.n1) {
    return;
  }
  let init = u.init1 != 0u;
  var buf = 0.0;
  if (momentum && !init) {
    buf = buf1[j];
  }
  let r = update(p1[j], g1[j], buf, init);
  p1[j] = r.x;
  if (momentum) {
    buf1[j] = r.y;
  }
}
