// avg_pool2d_forward: PyTorch's AvgPool2d (floor mode): the window sum over valid positions
// divided by the window size including padding (COUNT_INCLUDE_PAD) or by the valid count.
// Bindings: 0 uniform Params; 1 x: array<f32> [N, C, H, W] (reads); 2 y: array<f32>
// [N, C, OH, OW] (writes).
// Params { count: N*C*OH*OW, height: H, width: W, out_h: OH, out_w: OW, kernel_h, kernel_w,
//   stride_h, stride_w, pad_h, pad_w }. Override COUNT_INCLUDE_PAD (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes one output.
struct Params {
  count: u32,
  height: u32,
  width: u32,
  out_h: u32,
  out_w: u32,
  kernel_h: u32,
  kernel_w: u32,
  stride_h: u32,
  stride_w: u32,
  pad_h: u32,
  pad_w: u32,
}

override COUNT_INCLUDE_PAD: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  let ow = i % p.out_w;
  let r = i / p.out_w;
  let oh = r % p.out_h;
  let plane = r / p.out_h;
  let hs = i32(oh * p.stride_h) - i32(p.pad_h);
  let ws = i32(ow * p.stride_w) - i32(p.pad_w);
  // PyTorch clips the padded window to the padded input before counting it.
  let he = min(hs + i32(p.kernel_h), i32(p.height + p.pad_h));
  let we = min(ws + i32(p.kernel_w), i32(p.width + p.pad_w));
  let h0 = u32(max(hs, 0));
  let w0 = u32(max(ws, 0));
  let h1 = u32(min(he, i32(p.height)));
  let w1 = u32(min(we, i32(p.width)));
  var divisor = f32((h1 - h0) * (w1 - w0));
  if (COUNT_INCLUDE_PAD) { divisor = f32((he - hs) * (we - ws)); }
  let base = plane * p.height * p.width;
  var s = 0.0;
  for (var ih = h0; ih < h1; ih++) {
    for (var iw = w0; iw < w1; iw++) {
      s += x[base + ih * p.width + iw];
    }
  }
  y[i] = s / divisor;
}
