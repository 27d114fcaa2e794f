// conv2d_forward: y = conv2d(x, w) + b, direct convolution, PyTorch semantics (cross-correlation,
// zero padding, dilation 1, groups 1).
// Bindings: 0 uniform Params (below); 1 x: array<f32> [N, C, H, W]; 2 w: array<f32> [O, C, KH, KW]
// (OIHW); 3 bias: array<f32> [O] (any buffer with >= O floats when has_bias = 0: never added);
// 4 y: array<f32> [N, O, OH, OW] (writes every element).
// Params: n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w, has_bias,
// blocks_w = ceil(OW / 4), pixel_blocks = N * OH * blocks_w (all u32).
// Workgroup WG (override, default 64). Grid: x and z cover the pixel blocks flat
// (f = gid.x + wid.z * nwg.x * WG, as grid1d splits them), y = ceil(O / 4) output-channel blocks.
// One invocation computes 4 output channels x 4 adjacent output pixels of one row, accumulating
// in vec4<f32> (one per pixel, lanes = channels). The channel block comes from the workgroup id
// so every weight load is the same address across the workgroup.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, has_bias: u32, blocks_w: u32, pixel_blocks: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn load_x(row: u32, ix: i32) -> f32 {
  let inside = ix >= 0 && ix < i32(p.w);
  return select(0.0, x[row + u32(clamp(ix, 0, i32(p.w) - 1))], inside);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let f = gid.x + wid.z * nwg.x * WG;
  if (f >= p.pixel_blocks) { return; }
  let wb = f % p.blocks_w;
  let rest = f / p.blocks_w;
  let oy = rest % p.oh;
  let n = rest / p.oh;
  let ox0 = wb * 4u;
  let o0 = wid.y * 4u;

  let ksize = p.kh * p.kw;
  let per_o = p.c * ksize;
  let last_o = p.o - 1u;
  let w0 = min(o0, last_o) * per_o;
  let w1 = min(o0 + 1u, last_o) * per_o;
  let w2 = min(o0 + 2u, last_o) * per_o;
  let w3 = min(o0 + 3u, last_o) * per_o;

  let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
  let ix0 = i32(ox0 * p.stride_w) - i32(p.pad_w);
  let sw = i32(p.stride_w);
  let plane = p.h * p.w;

  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  for (var c = 0u; c < p.c; c++) {
    let xplane = (n * p.c + c) * plane;
    let wc = c * ksize;
    for (var ky = 0u; ky < p.kh; ky++) {
      let iy = iy0 + i32(ky);
      if (iy < 0 || iy >= i32(p.h)) { continue; }
      let row = xplane + u32(iy) * p.w;
      let wk = wc + ky * p.kw;
      for (var kx = 0u; kx < p.kw; kx++) {
        let k = wk + kx;
        let wv = vec4f(wt[w0 + k], wt[w1 + k], wt[w2 + k], wt[w3 + k]);
        let ix = ix0 + i32(kx);
        a0 += load_x(row, ix) * wv;
        a1 += load_x(row, ix + sw) * wv;
        a2 += load_x(row, ix + 2 * sw) * wv;
        a3 += load_x(row, ix + 3 * sw) * wv;
      }
    }
  }

  var b = vec4f(0.0);
  if (p.has_bias != 0u) {
    b = vec4f(bias[min(o0, last_o)], bias[min(o0 + 1u, last_o)], bias[min(o0 + 2u, last_o)],
      bias[min(o0 + 3u, last_o)]);
  }
  let opix = p.oh * p.ow;
  let base = (n * p.o + o0) * opix + oy * p.ow + ox0;
  let results = array<vec4f, 4>(a0 + b, a1 + b, a2 + b, a3 + b);
  for (var j = 0u; j < 4u; j++) {
    if (ox0 + j >= p.ow) { break; }
    let r = results[j];
    for (var i = 0u; i < 4u; i++) {
      if (o0 + i >= p.o) { break; }
      y[base + i * opix + j] = r[i];
    }
  }
}
