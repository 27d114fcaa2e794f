// conv2d_reduce_chunks: the second pass of the split-K weight and bias gradients:
// out[i] = sum over k of partial[k * count + i].
// Bindings: 0 uniform Params { count, chunks } (u32); 1 partial: array<f32> [chunks, count];
// 2 out: array<f32> [count] (writes every element).
// Workgroup 64; dispatch grid1d(count, 64); one invocation sums one element over the chunks.
struct Params { count: u32, chunks: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.count) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.chunks; k++) {
    s += partial[k * p.count + i];
  }
  out[i] = s;
}
