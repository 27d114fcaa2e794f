// add_inplace: accumulates one float32 buffer into another (gradient accumulation).
// Bindings: 0 uniform Params { count: u32 }; 1 target: array<f32> [count] (adds into);
// 2 source: array<f32> [count] (reads).
// Workgroup 256; dispatch grid1d(count, 256); one invocation adds one element.
struct Params { count: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> target_: array<f32>;
@group(0) @binding(2) var<storage, read> source: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  target_[i] = target_[i] + source[i];
}
