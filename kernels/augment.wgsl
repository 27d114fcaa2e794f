// augment: gathers a batch of images from a uint8 dataset held on the GPU, applies a random crop
// from the 4-pixel zero-padded image and a horizontal flip, and normalises per channel, as
// torchvision's RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize do; then
// optionally cutout (DeVries & Taylor 2017): a square of the normalised output set to 0.
// Bindings: 0 uniform Params;
//   1 out: array<vec4<f32>> [B, 3, 32, 32] float32, row-major, viewed as vec4s along x (writes);
//   2 draws: array<u32> [B, 2]: per image its dataset index, then
//     dx | dy << 8 | flip << 16 | cx << 20 | cy << 26, where (dx, dy) in [0, 8]^2 is the crop's
//     top-left corner in the 40x40 padded image (4, 4 = none) and (cx, cy) in [0, 31]^2 the
//     cutout square's centre in the output image;
//   3..6 chunk0..chunk3: array<u32>, the dataset's [N, 3, 32, 32] bytes split into chunks of
//     chunk_images images, 4 bytes per u32 little-endian; image k lives in chunk k / chunk_images
//     (unused chunk slots bind chunk0 again).
// Params { count: u32 = B * 768 (vec4s of the output), chunk_images: u32,
//   scale_r, scale_g, scale_b: f32 = 1 / (255 * std), bias_r, bias_g, bias_b: f32 = -mean / std,
//   cutout: u32 (the square's side L in pixels; 0: no cutout) }.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes 4 consecutive pixels of one
// output row: out[n, c, y, x] = padded[c, y + dy, x' + dx] * scale_c + bias_c with
// x' = 31 - x when flipped, else x; padded pixels are 0 before normalisation, so they become bias_c.
// With cutout, out[n, c, y, x] = 0 where cy - L / 2 <= y < cy - L / 2 + L and
// cx - L / 2 <= x < cx - L / 2 + L (L / 2 rounded down; the square is clipped at the borders).
struct Params {
  count: u32,
  chunk_images: u32,
  scale_r: f32,
  scale_g: f32,
  scale_b: f32,
  bias_r: f32,
  bias_g: f32,
  bias_b: f32,
  cutout: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> draws: array<u32>;
@group(0) @binding(3) var<storage, read> chunk0: array<u32>;
@group(0) @binding(4) var<storage, read> chunk1: array<u32>;
@group(0) @binding(5) var<storage, read> chunk2: array<u32>;
@group(0) @binding(6) var<storage, read> chunk3: array<u32>;

fn load_word(chunk: u32, w: u32) -> u32 {
  switch chunk {
    case 0u: { return chunk0[w]; }
    case 1u: { return chunk1[w]; }
    case 2u: { return chunk2[w]; }
    default: { return chunk3[w]; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  let q = i % 8u;
  let y = (i / 8u) % 32u;
  let c = (i / 256u) % 3u;
  let n = i / 768u;
  let index = draws[2u * n];
  let d = draws[2u * n + 1u];
  let dx = d & 255u;
  let dy = (d >> 8u) & 255u;
  let flip = ((d >> 16u) & 1u) == 1u;
  let half = i32(p.cutout / 2u);
  let cut_x0 = i32((d >> 20u) & 63u) - half;
  let cut_y0 = i32((d >> 26u) & 63u) - half;
  let cut_row = p.cutout > 0u && i32(y) >= cut_y0 && i32(y) < cut_y0 + i32(p.cutout);
  let chunk = index / p.chunk_images;
  let base = (index % p.chunk_images) * 768u + c * 256u;

  var v = vec4<f32>(0.0);
  let sy = i32(y + dy) - 4;
  if (sy >= 0 && sy < 32) {
    let row = base + u32(sy) * 8u;
    for (var k = 0u; k < 4u; k++) {
      let x = q * 4u + k;
      let sx = i32(select(x, 31u - x, flip) + dx) - 4;
      if (sx >= 0 && sx < 32) {
        let w = load_word(chunk, row + u32(sx) / 4u);
        v[k] = f32((w >> (8u * (u32(sx) % 4u))) & 255u);
      }
    }
  }
  let scale = select(select(p.scale_b, p.scale_g, c == 1u), p.scale_r, c == 0u);
  let bias = select(select(p.bias_b, p.bias_g, c == 1u), p.bias_r, c == 0u);
  var o = v * scale + vec4<f32>(bias);
  if (cut_row) {
    for (var k = 0u; k < 4u; k++) {
      let x = i32(q * 4u + k);
      if (x >= cut_x0 && x < cut_x0 + i32(p.cutout)) { o[k] = 0.0; }
    }
  }
  out[i] = o;
}
