// broadcast_dims: spreads a reduced gradient back over the reduced dimensions, scaled
// (backward of sum: scale 1, of mean: 1 / R): out[i] = g[offset of i's kept coordinates] * scale.
// The CPU merges neighbouring dimensions that are both kept or both reduced (at most 8 remain).
// Bindings: 0 uniform Params { count: u32 (elements of out), ndim: u32,
//   size: array<vec4u, 2> (out's merged sizes, innermost first), gstride: array<vec4u, 2> (the
//   element stride of each dimension in g; 0 for reduced ones), scale: f32 };
// 1 g: array<f32> [kept elements] (reads); 2 out: array<f32> [count], x's shape (writes).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes one element of out.
struct Params {
  count: u32,
  ndim: u32,
  size: array<vec4u, 2>,
  gstride: array<vec4u, 2>,
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  var rem = i;
  var offset = 0u;
  for (var d = 0u; d < p.ndim; d++) {
    let size = p.size[d >> 2u][d & 3u];
    offset += (rem % size) * p.gstride[d >> 2u][d & 3u];
    rem /= size;
  }
  out[i] = g[offset] * p.scale;
}
