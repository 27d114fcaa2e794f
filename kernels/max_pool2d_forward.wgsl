// max_pool2d_forward: PyTorch's MaxPool2d (padding counts as -inf, floor mode, dilation 1). The
// scan goes row by row and only a strictly greater value (or NaN) replaces the maximum, so among
// equal values the first wins, as in PyTorch's CPU kernel.
// Bindings: 0 uniform Params; 1 x: array<f32> [N, C, H, W] (reads); 2 y: array<f32>
// [N, C, OH, OW] (writes); 3 indices: array<f32> [N, C, OH, OW] (writes, entry main_indices only):
// the arg-max as the flat offset ih * W + iw within its plane, exact in f32 up to 2^24.
// Params { count: N*C*OH*chunks, height: H, width: W, out_h: OH, out_w: OW, kernel_h, kernel_w,
//   stride_h, stride_w, pad_h, pad_w, chunks: ceil(OW / 4) }.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes up to 4 consecutive outputs of
// one row (and their indices): integer division, slow on CPU implementations, once per 4.
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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<f32>;

// (max, flat offset of its first occurrence) of the window of output column ow whose valid rows
// are h0..h1, in the plane starting at base.
fn window_max(base: u32, h0: u32, h1: u32, ow: u32) -> vec2f {
  let ws = i32(ow * p.stride_w) - i32(p.pad_w);
  let w0 = u32(max(ws, 0));
  let w1 = u32(min(ws + i32(p.kernel_w), i32(p.width)));
  var best = bitcast<f32>(0xff800000u); // -inf
  var arg = h0 * p.width + w0;
  for (var ih = h0; ih < h1; ih++) {
    for (var iw = w0; iw < w1; iw++) {
      let offset = ih * p.width + iw;
      let v = x[base + offset];
      if (v > best || v != v) {
        best = v;
        arg = offset;
      }
    }
  }
  return vec2f(best, f32(arg));
}

// The outputs of invocation t: up to 4 consecutive ones of one row.
struct Outputs {
  first: u32, // flat index of the first
  n: u32, // how many
  ow0: u32, // column of the first
  base: u32, // index of the plane's first input
  h0: u32, // the windows' valid input rows h0..h1
  h1: u32,
}

fn outputs_of(t: u32) -> Outputs {
  let row = t / p.chunks;
  let ow0 = (t - row * p.chunks) * 4u;
  let oh = row % p.out_h;
  let plane = row / p.out_h;
  let hs = i32(oh * p.stride_h) - i32(p.pad_h);
  let h0 = u32(max(hs, 0));
  let h1 = u32(min(hs + i32(p.kernel_h), i32(p.height)));
  return Outputs(row * p.out_w + ow0, min(4u, p.out_w - ow0), ow0, plane * p.height * p.width,
    h0, h1);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let o = outputs_of(t);
  for (var j = 0u; j < o.n; j++) {
    y[o.first + j] = window_max(o.base, o.h0, o.h1, o.ow0 + j).x;
  }
}

@compute @workgroup_size(256)
fn main_indices(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let o = outputs_of(t);
  for (var j = 0u; j < o.n; j++) {
    let m = window_max(o.base, o.h0, o.h1, o.ow0 + j);
    y[o.first + j] = m.x;
    indices[o.first + j] = m.y;
  }
}
