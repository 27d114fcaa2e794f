// global_avg_pool2d_backward: spreads gy / (H*W) over each plane.
// Bindings: 0 uniform Params { hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks };
// 1 gy: array<f32> [N, C] (reads); 2 gx: array<f32> [N, C, H, W] (writes).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive elements
// of one plane (integer division is slow on CPU implementations: one per 4 elements).
struct Params { hw: u32, chunks: u32, count: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let plane = t / p.chunks;
  let start = (t - plane * p.chunks) * 4u;
  let end = min(start + 4u, p.hw);
  let g = gy[plane] / f32(p.hw);
  let base = plane * p.hw;
  for (var i = start; i < end; i++) {
    gx[base + i] = g;
  }
}
