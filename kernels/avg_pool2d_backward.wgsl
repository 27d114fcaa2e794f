// avg_pool2d_backward: each input position gathers gy / divisor from every window containing it
// (no atomics), the divisor computed as in avg_pool2d_forward.
// Bindings: 0 uniform Params; 1 gy: array<f32> [N, C, OH, OW] (reads); 2 gx: array<f32>
// [N, C, H, W] (writes).
// Params { count: N*C*H*chunks, height: H, width: W, out_h: OH, out_w: OW, kernel_h, kernel_w,
//   stride_h, stride_w, pad_h, pad_w, chunks: ceil(W / 4) }. Override COUNT_INCLUDE_PAD
//   (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive input
// gradients of one row. The covering output columns advance incrementally from one input to the
// next, since integer division is slow on CPU implementations.
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
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gx: array<f32>;

// floor(a / b) for b > 0 (i32 division truncates toward zero).
fn floor_div(a: i32, b: i32) -> i32 {
  let q = a / b;
  return select(q, q - 1, q * b > a);
}

// The count a window starting at `start` (may be negative) is divided by along one axis: PyTorch
// first clips the window to the padded input.
fn extent(start: i32, kernel: u32, pad: u32, size: u32) -> i32 {
  let end = min(start + i32(kernel), i32(size + pad));
  if (COUNT_INCLUDE_PAD) { return end - start; }
  return min(end, i32(size)) - max(start, 0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let row = t / p.chunks;
  let iw0 = (t - row * p.chunks) * 4u;
  let ih = row % p.height;
  let plane = row / p.height;
  // Output o covers input i when o * stride - pad <= i < o * stride - pad + kernel, i.e.
  // floor((i + pad + stride - kernel) / stride) <= o <= floor((i + pad) / stride).
  let stride_h = i32(p.stride_h);
  let oh_lo = max(floor_div(i32(ih + p.pad_h) + stride_h - i32(p.kernel_h), stride_h), 0);
  let oh_hi = min(i32(ih + p.pad_h) / stride_h, i32(p.out_h) - 1);
  let stride_w = i32(p.stride_w);
  let a = i32(iw0 + p.pad_w) + stride_w - i32(p.kernel_w);
  var q_lo = floor_div(a, stride_w);
  var r_lo = a - q_lo * stride_w;
  let b = i32(iw0 + p.pad_w);
  var q_hi = b / stride_w;
  var r_hi = b - q_hi * stride_w;
  let out_base = plane * p.out_h * p.out_w;
  let n = min(4u, p.width - iw0);
  for (var j = 0u; j < n; j++) {
    let ow_lo = max(q_lo, 0);
    let ow_hi = min(q_hi, i32(p.out_w) - 1);
    var s = 0.0;
    for (var oh = oh_lo; oh <= oh_hi; oh++) {
      let dh = extent(oh * stride_h - i32(p.pad_h), p.kernel_h, p.pad_h, p.height);
      for (var ow = ow_lo; ow <= ow_hi; ow++) {
        let dw = extent(ow * stride_w - i32(p.pad_w), p.kernel_w, p.pad_w, p.width);
        s += gy[out_base + u32(oh) * p.out_w + u32(ow)] / f32(dh * dw);
      }
    }
    gx[row * p.width + iw0 + j] = s;
    r_lo += 1;
    if (r_lo == stride_w) { r_lo = 0; q_lo += 1; }
    r_hi += 1;
    if (r_hi == stride_w) { r_hi = 0; q_hi += 1; }
  }
}
