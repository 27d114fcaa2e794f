// global_avg_pool2d_backward: spreads gy / (H*W) over each plane.
// Bindings: 0 uniform Params { count: N*C*H*W, hw: H*W }; 1 gy: array<f32> [N, C] (reads);
// 2 gx: array<f32> [N, C, H, W] (writes).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes one element.
struct Params { count: u32, hw: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  gx[i] = gy[i / p.hw] / f32(p.hw);
}
