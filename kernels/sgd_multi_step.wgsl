// sgd_multi_step: PyTorch 1.13's SGD update (torch/optim/sgd.py, _single_tensor_sgd) of many
// parameters in one dispatch, like PyTorch's foreach optimizers: the parameters, their gradients
// and their momentum buffers lie in three flat buffers of one layout, and a chunk table lists the
// pieces to update. The same operations in the same order as sgd_step, so the results are equal.
// Bindings: 0 uniform Params (below);
//   1 p: array<f32> flat parameters (read-write), 2 g: array<f32> flat gradients (read),
//   3 buf: array<f32> flat momentum buffers (read-write; a small dummy when momentum is off),
//   4 table: array<vec4u> [chunks] chunk table: (first element, element count <= 2048,
//     init, 0); init = 1 on the first step that chunk's parameter takes, when its momentum buffer
//     holds nothing yet (PyTorch clones d_p then). Parameters without a gradient have no chunks.
// Uniform Params { chunks, use_momentum, nesterov: u32, lr, momentum, one_minus_dampening,
//   weight_decay: f32 }.
// Workgroup 256; dispatch grid1d(chunks * 256, 256): workgroup c (x + y * groups in x) updates
// chunk c, invocation l its elements l, l + 256, ... In place, per element:
//   d = g + wd * p; buf = init ? d : momentum * buf + (1 - dampening) * d;
//   d = nesterov ? d + momentum * buf : buf (with momentum); p = p - lr * d.
struct Params {
  chunks: u32,
  use_momentum: u32,
  nesterov: u32,
  lr: f32,
  momentum: f32,
  one_minus_dampening: f32,
  weight_decay: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf: array<f32>;
@group(0) @binding(4) var<storage, read> table: array<vec4u>;

// The new parameter value and momentum buffer, as sgd_step computes them.
fn update(p: f32, g: f32, buf: f32, init: bool) -> vec2f {
  let d = g + u.weight_decay * p;
  let b = select(buf * u.momentum + u.one_minus_dampening * d, d, init);
  let with_momentum = select(b, d + u.momentum * b, u.nesterov != 0u);
  let step = select(d, with_momentum, u.use_momentum != 0u);
  return vec2f(p - u.lr * step, b);
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
  let e = table[c];
  let init = e.z != 0u;
  let momentum = u.use_momentum != 0u;
  for (var k = lid; k < e.y; k += 256u) {
    let i = e.x + k;
    var b = 0.0;
    if (momentum && !init) {
      b = buf[i];
    }
    let r = update(p[i], g[i], b, init);
    p[i] = r.x;
    if (momentum) {
      buf[i] = r.y;
    }
  }
}
