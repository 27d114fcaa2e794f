// fill: writes one value into every element of a float32 buffer.
// Bindings: 0 uniform Params { count: u32, value: f32 }; 1 out: array<f32> [count] (writes).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes one element.
struct Params { count: u32, value: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  out[i] = p.value;
}
