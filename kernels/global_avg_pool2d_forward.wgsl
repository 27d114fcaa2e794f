// global_avg_pool2d_forward: the mean of each (n, c) plane, [N, C, H, W] -> [N, C].
// Bindings: 0 uniform Params { planes: N*C, hw: H*W }; 1 x: array<f32> [N, C, H, W] (reads);
// 2 y: array<f32> [N, C] (writes).
// Workgroup 64; dispatch grid1d(planes, 64); one invocation sums one plane with four
// interleaved accumulators (shorter dependency chains, smaller rounding error).
struct Params { planes: u32, hw: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let plane = gid.x + gid.y * nwg.x * 64u;
  if (plane >= p.planes) { return; }
  let base = plane * p.hw;
  var acc = vec4f(0.0);
  var i = 0u;
  for (; i + 4u <= p.hw; i += 4u) {
    acc += vec4f(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]);
  }
  for (; i < p.hw; i++) {
    acc.x += x[base + i];
  }
  y[plane] = ((acc.x + acc.y) + (acc.z + acc.w)) / f32(p.hw);
}
