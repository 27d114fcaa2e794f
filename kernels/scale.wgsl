// scale: out = x * s + t elementwise (mulScalar with t = 0, addScalar with s = 1, and
// mulScalar's backward), four elements per invocation.
// Bindings: 0 uniform Params { count4: u32 (ceil(size / 4)), s: f32, t: f32 };
// 1 x: array<vec4f> (reads); 2 out: array<vec4f> (writes). Pooled buffers are padded to 16 bytes,
// so the last vec4 stays inside every buffer; its padding lanes hold garbage nobody reads.
// Workgroup 256; dispatch grid1d(count4, 256); one invocation writes one vec4 of out.
struct Params { count4: u32, s: f32, t: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4f>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  out[i] = x[i] * p.s + p.t;
}
