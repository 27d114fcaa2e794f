// relu_forward: y = max(x, 0) elementwise, four elements per invocation; NaN stays NaN (as in
// PyTorch), which is why it is a select on x < 0 and not max().
// Bindings: 0 uniform Params { count4: u32 } (ceil(size / 4)); 1 x: array<vec4f> (reads);
// 2 y: array<vec4f> (writes). Pooled buffers are padded to 16 bytes, so the last vec4 stays inside
// every buffer; its padding lanes hold garbage nobody reads.
// Workgroup 256; dispatch grid1d(count4, 256); one invocation writes one vec4 of y.
struct Params { count4: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4f>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count4) { return; }
  let v = x[i];
  y[i] = select(v, vec4f(0.0), v < vec4f(0.0));
}
