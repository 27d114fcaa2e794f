// grad_norm_total: the second pass of clipGradNorm: combines the partials of grad_norm_partial
// into the total norm and the clipping coefficient of torch.nn.utils.clip_grad_norm_.
// Bindings: 0 uniform Params (below); 1 partials: array<f32> [count] (reads); 2 norm: array<f32>
//   [1] (writes the total norm); 3 coef: array<f32> [1] (writes min(1, max_norm / (norm + 1e-6))).
// Params { count: u32, mode: u32 (0: sum of |g|^p, 1: sum of g^2, 2: max |g|), p: f32,
//   max_norm: f32 }.
// Workgroup 256; dispatch [1]: each invocation combines every 256th partial, the workgroup
// combines the 256 results in shared memory, and invocation 0 writes norm = (sum)^(1/p) (mode 0),
// sqrt(sum) (mode 1) or the max (mode 2), and coef.
struct Params {
  count: u32,
  mode: u32,
  p: f32,
  max_norm: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;

var<workgroup> shared_acc: array<f32, 256>;

fn combine(a: f32, b: f32) -> f32 {
  return select(a + b, max(a, b), u.mode == 2u);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) l: u32) {
  var acc = 0.0;
  for (var i = l; i < u.count; i += 256u) { acc = combine(acc, partials[i]); }
  shared_acc[l] = acc;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (l < stride) { shared_acc[l] = combine(shared_acc[l], shared_acc[l + stride]); }
    workgroupBarrier();
  }
  if (l == 0u) {
    let s = shared_acc[0];
    var total = s;
    if (u.mode == 1u) {
      total = sqrt(s);
    } else if (u.mode == 0u) {
      total = pow(s, 1.0 / u.p);
    }
    norm[0] = total;
    coef[0] = min(u.max_norm / (total + 1e-6), 1.0);
  }
}
