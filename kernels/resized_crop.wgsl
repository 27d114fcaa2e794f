// resized_crop: a batch of float32 images, each a crop of a uint8 image resampled bilinearly to
// size x size, optionally flipped, then normalised per channel, as torchvision's
// RandomResizedCrop (or CenterCrop), RandomHorizontalFlip, ToTensor and Normalize do.
// Bindings: 0 uniform Params;
//   1 out: array<f32> [B, 3, size, size] float32, row-major (writes);
//   2 images: array<u32> [B, 3, side, side] bytes, 4 per u32 little-endian: the batch's images;
//   3 boxes: array<f32> [B, 5]: per image the crop's left x0, top y0, width w, height h (pixels
//     of the side x side image, fractional allowed) and a flip flag (1: mirror horizontally).
// Params { count: u32 = B * 3 * size * size, size: u32, side: u32,
//   scale_r, scale_g, scale_b: f32 = 1 / (255 * std), bias_r, bias_g, bias_b: f32 = -mean / std }.
// Workgroup 256; dispatch grid1d(count, 256); one invocation computes one output value
// out[n, c, oy, ox]: with ox' = size - 1 - ox when flipped, else ox, it samples the image at
// (x0 + (ox' + 0.5) * w / size - 0.5, y0 + (oy + 0.5) * h / size - 0.5) (half-pixel centres, as
// align_corners=False), bilinearly between the four nearest pixels clamped to the image, and
// writes sample * scale_c + bias_c.
struct Params {
  count: u32,
  size: u32,
  side: u32,
  scale_r: f32,
  scale_g: f32,
  scale_b: f32,
  bias_r: f32,
  bias_g: f32,
  bias_b: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> images: array<u32>;
@group(0) @binding(3) var<storage, read> boxes: array<f32>;

fn pixel(base: u32, x: i32, y: i32) -> f32 {
  let s = i32(p.side);
  let i = base + u32(clamp(y, 0, s - 1)) * p.side + u32(clamp(x, 0, s - 1));
  return f32((images[i / 4u] >> (8u * (i % 4u))) & 0xffu);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count) { return; }
  let ox = i % p.size;
  let oy = (i / p.size) % p.size;
  let c = (i / (p.size * p.size)) % 3u;
  let n = i / (3u * p.size * p.size);
  let x0 = boxes[5u * n];
  let y0 = boxes[5u * n + 1u];
  let w = boxes[5u * n + 2u];
  let h = boxes[5u * n + 3u];
  var fx = f32(ox);
  if (boxes[5u * n + 4u] != 0.0) { fx = f32(p.size - 1u - ox); }
  let sx = x0 + (fx + 0.5) * w / f32(p.size) - 0.5;
  let sy = y0 + (f32(oy) + 0.5) * h / f32(p.size) - 0.5;
  let xl = floor(sx);
  let yl = floor(sy);
  let ax = sx - xl;
  let ay = sy - yl;
  let base = (n * 3u + c) * p.side * p.side;
  let xi = i32(xl);
  let yi = i32(yl);
  let top = mix(pixel(base, xi, yi), pixel(base, xi + 1, yi), ax);
  let bottom = mix(pixel(base, xi, yi + 1), pixel(base, xi + 1, yi + 1), ax);
  let v = mix(top, bottom, ay);
  var scale = p.scale_r;
  var bias = p.bias_r;
  if (c == 1u) { scale = p.scale_g; bias = p.bias_g; }
  if (c == 2u) { scale = p.scale_b; bias = p.bias_b; }
  out[i] = v * scale + bias;
}
