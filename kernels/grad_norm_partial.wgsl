// grad_norm_partial: partial p-norm reductions of up to seven gradient tensors ("slots") per
// dispatch, the first pass of clipGradNorm (torch.nn.utils.clip_grad_norm_).
// Bindings: 0 uniform Params (below); 1..7 g0..g6: array<f32> [n0]..[n6], the gradients (reads;
//   unused slots bind g0 again with n = 0); 8 partials: array<f32> (writes elements
//   [base, base + 7 * chunks)).
// Params { n0..n6: u32 (elements per slot, 0 when unused), base: u32 (first partial written),
//   chunks: u32 (workgroups per slot), mode: u32 (0: sum of |g|^p, 1: sum of g^2, 2: max |g|),
//   p: f32 (the norm's order for mode 0) }.
// Workgroup 256; dispatch [7, chunks]: workgroup (s, k) reduces the elements
// k * 256 + l + j * 256 * chunks (l its invocation, j = 0, 1, ...) of slot s, each invocation
// accumulating its elements and the workgroup combining the 256 results in shared memory;
// invocation 0 writes partials[base + s * chunks + k]. An empty slot writes 0.
struct Params {
  n0: u32,
  n1: u32,
  n2: u32,
  n3: u32,
  n4: u32,
  n5: u32,
  n6: u32,
  base: u32,
  chunks: u32,
  mode: u32,
  p: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> g0: array<f32>;
@group(0) @binding(2) var<storage, read> g1: array<f32>;
@group(0) @binding(3) var<storage, read> g2: array<f32>;
@group(0) @binding(4) var<storage, read> g3: array<f32>;
@group(0) @binding(5) var<storage, read> g4: array<f32>;
@group(0) @binding(6) var<storage, read> g5: array<f32>;
@group(0) @binding(7) var<storage, read> g6: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<f32>;

var<workgroup> shared_acc: array<f32, 256>;

fn count(slot: u32) -> u32 {
  switch slot {
    case 0u: { return u.n0; }
    case 1u: { return u.n1; }
    case 2u: { return u.n2; }
    case 3u: { return u.n3; }
    case 4u: { return u.n4; }
    case 5u: { return u.n5; }
    default: { return u.n6; }
  }
}

fn load(slot: u32, i: u32) -> f32 {
  switch slot {
    case 0u: { return g0[i]; }
    case 1u: { return g1[i]; }
    case 2u: { return g2[i]; }
    case 3u: { return g3[i]; }
    case 4u: { return g4[i]; }
    case 5u: { return g5[i]; }
    default: { return g6[i]; }
  }
}

fn combine(a: f32, b: f32) -> f32 {
  return select(a + b, max(a, b), u.mode == 2u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) l: u32) {
  let slot = wid.x;
  let n = count(slot);
  var acc = 0.0;
  for (var i = wid.y * 256u + l; i < n; i += 256u * u.chunks) {
    let a = abs(load(slot, i));
    if (u.mode == 1u) {
      acc += a * a;
    } else if (u.mode == 2u) {
      acc = max(acc, a);
    } else {
      acc += pow(a, u.p);
    }
  }
  shared_acc[l] = acc;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (l < stride) { shared_acc[l] = combine(shared_acc[l], shared_acc[l + stride]); }
    workgroupBarrier();
  }
  if (l == 0u) { partials[u.base + slot * u.chunks + wid.y] = shared_acc[0]; }
}
