// conv2d_pack_weight: lays conv2d filters out for conv2d_forward_rows, the output channels of each
// tap contiguous so that the kernel reads 4 of them with one vec4 load.
// FLIP = false (forward): out[((c * KH + ky) * KW + kx) * cols + o] = w[o, c, ky, kx].
// FLIP = true (the input gradient as a convolution of gy): the roles of O and C swap and the
// taps turn around: out[((o * KH + ky) * KW + kx) * cols + c] = w[o, c, KH-1-ky, KW-1-kx].
// Entries past the last output channel (o >= O, or c >= C with FLIP) are zero.
// Bindings: 0 uniform Params { o, c, kh, kw, cols, count } (u32; cols = the packed row length, a
// multiple of 4 >= O (C with FLIP); count = rows * cols, rows = C * KH * KW (O * KH * KW));
// 1 w: array<f32> [O, C, KH, KW]; 2 out: array<f32> [rows, cols] (writes every element).
// Workgroup 64; dispatch grid1d(count, 64); one invocation writes one element.
struct Params { o: u32, c: u32, kh: u32, kw: u32, cols: u32, count: u32 }

override FLIP: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.count) { return; }
  let col = i % p.cols;
  let row = i / p.cols;
  let kx = row % p.kw;
  let ky = (row / p.kw) % p.kh;
  let outer = row / (p.kw * p.kh);
  var value = 0.0;
  if (FLIP) {
    // outer = o, col = c.
    if (col < p.c) {
      value = w[((outer * p.c + col) * p.kh + (p.kh - 1u - ky)) * p.kw + (p.kw - 1u - kx)];
    }
  } else if (col < p.o) {
    // outer = c, col = o.
    value = w[((col * p.c + outer) * p.kh + ky) * p.kw + kx];
  }
  out[i] = value;
}
