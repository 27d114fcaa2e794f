// mul: out = a * b elementwise (same shape), four elements per invocation.
// Bindings: 0 uniform Params { count4: u32 } (ceil(size / 4)); 1 a: array<vec4f> (reads);
// 2 b: array<vec4f> (reads); 3 out: array<vec4f> (writes). Pooled buffers are padded to 16 bytes,
// so the last vec4 stays inside every buffer; its padding lanes hold garbage nobody reads.
// Workgroup 256; dispatch grid1d(count4, 256); one invocation writes one vec4 of out.
// Used by mul's forward and by its backward (ga = gy * b, gb = gy * a).
struct Params { count4: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4f>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  out[i] = a[i] * b[i];
}
