// conv2d_backward_input: gx = d(sum(y * gy)) / dx for y = conv2d(x, w), as a gather (no atomics):
// gx[n, c, iy, ix] = sum over (o, ky, kx) with iy = oy * stride_h - pad_h + ky and
// ix = ox * stride_w - pad_w + kx (oy, ox integers inside the output) of gy[n, o, oy, ox] *
// w[o, c, ky, kx].
// Bindings: 0 uniform Params (below); 1 gy: array<f32> [N, O, OH, OW]; 2 w: array<f32>
// [O, C, KH, KW] (OIHW); 3 gx: array<f32> [N, C, H, W] (writes every element, zeros where no
// output position reads the input element).
// Params: n, c, h, w, o, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
// rows = ceil(H / stride_h), blocks_w = ceil(ceil(W / stride_w) / 4),
// pixel_blocks = N * rows * blocks_w (all u32).
// Workgroup WG (override, default 64). Grid: x and z cover the pixel blocks flat
// (f = gid.x + wid.z * nwg.x * WG, as grid1d splits them); y = ceil(C / 4) * stride_h * stride_w:
// the input-channel block and the residues (ry, rx) of the input pixels modulo the stride.
// One invocation computes 4 input channels x 4 input pixels of one row that share their residue
// modulo stride_w (ix = rx + stride_w * (4 * block + j)), so the same (ky, kx) taps reach all
// four and only taps with ky = iy + pad_h, kx = ix + pad_w (mod stride) are visited. Channel
// block, residues and taps come from the workgroup id, so weight loads are uniform.
struct Params {
  n: u32, c: u32, h: u32, w: u32,
  o: u32, oh: u32, ow: u32, kh: u32,
  kw: u32, stride_h: u32, stride_w: u32, pad_h: u32,
  pad_w: u32, rows: u32, blocks_w: u32, pixel_blocks: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

fn load_gy(row: u32, ox: i32) -> f32 {
  let inside = ox >= 0 && ox < i32(p.ow);
  return select(0.0, gy[row + u32(clamp(ox, 0, i32(p.ow) - 1))], inside);
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
  let my = rest % p.rows;
  let n = rest / p.rows;

  let residues = p.stride_h * p.stride_w;
  let rx = wid.y % p.stride_w;
  let ry = (wid.y / p.stride_w) % p.stride_h;
  let c0 = (wid.y / residues) * 4u;
  let iy = ry + p.stride_h * my;
  if (iy >= p.h) { return; }
  let m0 = wb * 4u;

  let ksize = p.kh * p.kw;
  let last_c = p.c - 1u;
  let wc0 = min(c0, last_c) * ksize;
  let wc1 = min(c0 + 1u, last_c) * ksize;
  let wc2 = min(c0 + 2u, last_c) * ksize;
  let wc3 = min(c0 + 3u, last_c) * ksize;
  let per_o = p.c * ksize;
  let opix = p.oh * p.ow;
  let sh = i32(p.stride_h);
  let sw = i32(p.stride_w);

  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  for (var o = 0u; o < p.o; o++) {
    let gplane = (n * p.o + o) * opix;
    let wo = o * per_o;
    for (var ky = (ry + p.pad_h) % p.stride_h; ky < p.kh; ky += p.stride_h) {
      let oy = i32(my) + (i32(ry + p.pad_h) - i32(ky)) / sh;
      if (oy < 0 || oy >= i32(p.oh)) { continue; }
      let row = gplane + u32(oy) * p.ow;
      let wk = wo + ky * p.kw;
      for (var kx = (rx + p.pad_w) % p.stride_w; kx < p.kw; kx += p.stride_w) {
        let k = wk + kx;
        let wv = vec4f(wt[wc0 + k], wt[wc1 + k], wt[wc2 + k], wt[wc3 + k]);
        let ox = i32(m0) + (i32(rx + p.pad_w) - i32(kx)) / sw;
        a0 += load_gy(row, ox) * wv;
        a1 += load_gy(row, ox + 1) * wv;
        a2 += load_gy(row, ox + 2) * wv;
        a3 += load_gy(row, ox + 3) * wv;
      }
    }
  }

  let ipix = p.h * p.w;
  let base = (n * p.c + c0) * ipix + iy * p.w;
  let results = array<vec4f, 4>(a0, a1, a2, a3);
  for (var j = 0u; j < 4u; j++) {
    let ix = rx + p.stride_w * (m0 + j);
    if (ix >= p.w) { break; }
    let r = results[j];
    for (var i = 0u; i < 4u; i++) {
      if (c0 + i >= p.c) { break; }
      gx[base + i * ipix + ix] = r[i];
    }
  }
}
