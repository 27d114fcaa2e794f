// avg_pool2d_backward: each input position gathers gy / divisor from every window containing it
// (no atomics), the divisor computed as in avg_pool2d_forward.
// Bindings: 0 uniform Params; 1 gy: array<f32> [N, C, OH, OW] (reads); 2 gx: array<f32>
// [N, C, H, W] (writes).
// Params { count: N*C*H*W, height: H, width: W, out_h: OH, out_w: OW, kernel_h, kernel_w,
//   stride_h, stride_w, pad_h, pad_w }. Override COUNT_INCLUDE_PAD (default true).
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes one input gradient.
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
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gx: array<f32>;

// Outputs o whose window [o * stride - pad, o * stride - pad + kernel) contains position i.
fn covering(i: u32, kernel: u32, stride: u32, pad: u32, size: u32) -> vec2i {
  let a = i32(i + pad) - i32(kernel) + 1;
  let s = i32(stride);
  let lo = select(0, (a + s - 1) / s, a > 0);
  let hi = min(i32(i + pad) / s, i32(size) - 1);
  return vec2i(lo, hi);
}

// The number a window starting at `start` (may be negative) is divided by, along one axis.
fn extent(start: i32, kernel: u32, pad: u32, size: u32) -> i32 {
  let end = min(start + i32(kernel), i32(size + pad));
  if (COUNT_INCLUDE_PAD) { return end - start; }
  return min(end, i32(size)) - max(start, 0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  let iw = i % p.width;
  let r = i / p.width;
  let ih = r % p.height;
  let plane = r / p.height;
  let rows = covering(ih, p.kernel_h, p.stride_h, p.pad_h, p.out_h);
  let cols = covering(iw, p.kernel_w, p.stride_w, p.pad_w, p.out_w);
  let base = plane * p.out_h * p.out_w;
  var s = 0.0;
  for (var oh = rows.x; oh <= rows.y; oh++) {
    let dh = extent(oh * i32(p.stride_h) - i32(p.pad_h), p.kernel_h, p.pad_h, p.height);
    for (var ow = cols.x; ow <= cols.y; ow++) {
      let dw = extent(ow * i32(p.stride_w) - i32(p.pad_w), p.kernel_w, p.pad_w, p.width);
      s += gy[base + u32(oh) * p.out_w + u32(ow)] / f32(dh * dw);
    }
  }
  gx[i] = s;
}
