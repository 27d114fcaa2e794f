// batch_norm_backward_input: the input gradient of batchNorm2d, with g = dy masked by the ReLU
// (dy where y > 0, else 0; dy itself without RELU):
// dx = (g - a[c] - (x - mean[c]) * k[c]) * scale[c], with coef = (mean, scale, a, k) from
// batch_norm_backward_reduce (training: the closed form
// weight * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat)); a = k = 0 without training:
// dx = g * weight * invstd), and, entry point main_residual, the residual's gradient dres = g.
// Bindings: 0 uniform Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks }
// (u32); 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f> [N, C, H, W] (the forward's output;
// any buffer without RELU, then not read); 3 x: array<vec4f> [N, C, H, W]; 4 coef: array<f32>
// [4, C] = (mean, scale, a, k); 5 dx: array<vec4f> [N, C, H, W] (writes every element);
// 6 dres: array<vec4f> [N, C, H, W] (main_residual only; writes every element).
// Overrides RELU, and VEC4: H*W % 4 == 0, so that every vec4 lies in one (n, c) plane.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes chunk t: the 4 consecutive
// values 4 * (t % chunks) .. of plane t / chunks (fewer at the end of a plane without VEC4).
struct Params { channels: u32, hw: u32, chunks: u32, count: u32 }

override RELU: bool = false;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> dres: array<vec4f>;

// (g, dx) of up to 4 values of channel c, from their dy, y (read with RELU only) and x.
fn gradients(dy_v: vec4f, y_v: vec4f, x_v: vec4f, c: u32) -> array<vec4f, 2> {
  var g = dy_v;
  if (RELU) { g = select(vec4f(0.0), g, y_v > vec4f(0.0)); }
  let mean = coef[c];
  let scale = coef[p.channels + c];
  let a = coef[2u * p.channels + c];
  let k = coef[3u * p.channels + c];
  return array<vec4f, 2>(g, (g - a - (x_v - mean) * k) * scale);
}

// (g, dx) of chunk t: vec4 t with VEC4 (chunks = H*W / 4), else up to 4 values of one plane
// in .x .. .w; its first value's index and count.
struct Chunk { g: vec4f, dx: vec4f, first: u32, count: u32 }

fn chunk(t: u32) -> Chunk {
  let plane = t / p.chunks;
  let c = plane % p.channels;
  if (VEC4) {
    var y_v = vec4f(0.0);
    if (RELU) { y_v = y[t]; }
    let r = gradients(dy[t], y_v, x[t], c);
    return Chunk(r[0], r[1], t, 4u);
  }
  let first = plane * p.hw + (t - plane * p.chunks) * 4u;
  let count = min(p.hw - (first - plane * p.hw), 4u);
  var dy_v = vec4f(0.0);
  var y_v = vec4f(0.0);
  var x_v = vec4f(0.0);
  for (var j = 0u; j < count; j++) {
    let i = first + j;
    dy_v[j] = dy[i / 4u][i % 4u];
    if (RELU) { y_v[j] = y[i / 4u][i % 4u]; }
    x_v[j] = x[i / 4u][i % 4u];
  }
  let r = gradients(dy_v, y_v, x_v, c);
  return Chunk(r[0], r[1], first, count);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let r = chunk(t);
  if (VEC4) {
    dx[t] = r.dx;
    return;
  }
  for (var j = 0u; j < r.count; j++) {
    let i = r.first + j;
    dx[i / 4u][i % 4u] = r.dx[j];
  }
}

@compute @workgroup_size(256)
fn main_residual(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let r = chunk(t);
  if (VEC4) {
    dx[t] = r.dx;
    dres[t] = r.g;
    return;
  }
  for (var j = 0u; j < r.count; j++) {
    let i = r.first + j;
    dx[i / 4u][i % 4u] = r.dx[j];
    dres[i / 4u][i % 4u] = r.g[j];
  }
}
