// avg_pool2d_forward: PyTorch's AvgPool2d (floor mode): the window sum over valid positions
// divided by the window size including padding (COUNT_INCLUDE_PAD) or by the valid count.
// Bindings: 0 uniform Params; 1 x: array<f32> [N, C, H, W] (reads); 2 y: array<f32>
// [N, C, OH, OW] (writes).
// Params { count: N*C*OH*chunks, height: H, width: W, out_h: OH, out_w: OW, kernel_h, kernel_w,
//   stride_h, stride_w, pad_h, pad_w, chunks: ceil(OW / 4) }. Override COUNT_INCLUDE_PAD
//   (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive outputs of
// one row: integer division, slow on CPU implementations, once per 4.
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
  chunks: u32,
}

override COUNT_INCLUDE_PAD: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// The valid range [lo, hi) of a window starting at `start` (may be negative) along one axis, and
// the count PyTorch divides by, which first clips the window to the padded input.
fn span(start: i32, kernel: u32, pad: u32, size: u32) -> vec3i {
  let end = min(start + i32(kernel), i32(size + pad));
  let lo = max(start, 0);
  let hi = min(end, i32(size));
  return vec3i(lo, hi, select(hi - lo, end - start, COUNT_INCLUDE_PAD));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let row = t / p.chunks;
  let ow0 = (t - row * p.chunks) * 4u;
  let oh = row % p.out_h;
  let plane = row / p.out_h;
  let rows = span(i32(oh * p.stride_h) - i32(p.pad_h), p.kernel_h, p.pad_h, p.height);
  let base = plane * p.height * p.width;
  let n = min(4u, p.out_w - ow0);
  for (var j = 0u; j < n; j++) {
    let cols = span(i32((ow0 + j) * p.stride_w) - i32(p.pad_w), p.kernel_w, p.pad_w, p.width);
    var s = 0.0;
    for (var ih = u32(rows.x); ih < u32(rows.y); ih++) {
      for (var iw = u32(cols.x); iw < u32(cols.y); iw++) {
        s += x[base + ih * p.width + iw];
      }
    }
    y[row * p.out_w + ow0 + j] = s / f32(rows.z * cols.z);
  }
}
