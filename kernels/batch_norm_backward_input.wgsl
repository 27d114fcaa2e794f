// batch_norm_backward_input: the input gradient of batchNorm2d, with g = dy masked by the ReLU
// (dy where y > 0, else 0; dy itself without RELU):
// dx = (g - a[c] - (x - mean[c]) * k[c]) * scale[c] (training: the closed form
// weight * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat)) with a = sum(g) / n,
// k = sum(g * xhat) * invstd / n; a = k = 0 without training: dx = g * weight * invstd), and,
// entry points *_residual, the residual's gradient dres = g. Entry points main and main_residual
// read coef = (mean, scale, a, k) from batch_norm_backward_reduce; main_partials and
// main_partials_residual (the gpu family) add the chunk sums of batch_norm_backward_reduce_chunks
// for a and k, and also write the weight and bias gradients.
// Bindings: 0 uniform Params (below); 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f>
// [N, C, H, W] (the forward's output; any buffer without RELU, then not read); 3 x:
// array<vec4f> [N, C, H, W]; 4 coef: array<f32>: main*: [4, C] = (mean, scale, a, k);
// main_partials*: batch_norm_backward_reduce_chunks's [3 * C + 2 * C * partials]: a [3, C] head =
// (mean, scale, invstd), then (sum g, sum g * (x - mean)) of chunk z of channel c at 3 * C +
// 2 * (c * partials + z); 5 dx: array<vec4f> [N, C, H, W] (writes every element); 6 dres:
// array<vec4f> [N, C, H, W] (*_residual only; writes every element); 7 sum_dy: array<f32> [C]
// = sum(g), the bias gradient; 8 sum_dy_xhat: array<f32> [C] = sum(g * xhat), the weight
// gradient (7 and 8: main_partials* only, writes every element).
// Params { channels: C, hw: H*W, chunks: ceil(H*W / 4), count: N*C*chunks, partials: chunk sums
// per channel (u32; main_partials* only), n: N*H*W (f32; main_partials* only) }.
// Overrides RELU; TRAINING (main_partials* only: a and k from the sums, else 0); and VEC4:
// H*W % 4 == 0, so that every vec4 lies in one (n, c) plane.
// Workgroup 256; dispatch grid1d(count, 256); one invocation writes chunk t: the 4 consecutive
// values 4 * (t % chunks) .. of plane t / chunks (fewer at the end of a plane without VEC4). With
// main_partials* every invocation adds its channel's chunk sums, z = 0, 1, ... in order (so all
// of them get the same values); the one of the channel's first chunk, t = c * chunks, alone
// writes sum_dy[c] and sum_dy_xhat[c], which no invocation of the dispatch reads.
struct Params { channels: u32, hw: u32, chunks: u32, count: u32, partials: u32, n: f32 }

override RELU: bool = false;
override TRAINING: bool = true;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> dres: array<vec4f>;
@group(0) @binding(7) var<storage, read_write> sum_dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> sum_dy_xhat: array<f32>;

// (g, dx) of up to 4 values, from their dy, y (read with RELU only) and x, with the channel's
// cf = (mean, scale, a, k).
fn gradients(dy_v: vec4f, y_v: vec4f, x_v: vec4f, cf: vec4f) -> array<vec4f, 2> {
  var g = dy_v;
  if (RELU) { g = select(vec4f(0.0), g, y_v > vec4f(0.0)); }
  return array<vec4f, 2>(g, (g - cf.z - (x_v - cf.x) * cf.w) * cf.y);
}

// (g, dx) of chunk t: vec4 t with VEC4 (chunks = H*W / 4), else up to 4 values of one plane
// in .x .. .w; its first value's index and count.
struct Chunk { g: vec4f, dx: vec4f, first: u32, count: u32 }

fn chunk(t: u32, cf: vec4f) -> Chunk {
  if (VEC4) {
    var y_v = vec4f(0.0);
    if (RELU) { y_v = y[t]; }
    let r = gradients(dy[t], y_v, x[t], cf);
    return Chunk(r[0], r[1], t, 4u);
  }
  let plane = t / p.chunks;
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
  let r = gradients(dy_v, y_v, x_v, cf);
  return Chunk(r[0], r[1], first, count);
}

fn write_dx(t: u32, r: Chunk) {
  if (VEC4) {
    dx[t] = r.dx;
    return;
  }
  for (var j = 0u; j < r.count; j++) {
    let i = r.first + j;
    dx[i / 4u][i % 4u] = r.dx[j];
  }
}

fn write_dres(t: u32, r: Chunk) {
  if (VEC4) {
    dres[t] = r.g;
    return;
  }
  for (var j = 0u; j < r.count; j++) {
    let i = r.first + j;
    dres[i / 4u][i % 4u] = r.g[j];
  }
}

// (mean, scale, a, k) of channel c from coef's [4, C].
fn coefficients(c: u32) -> vec4f {
  return vec4f(
    coef[c],
    coef[p.channels + c],
    coef[2u * p.channels + c],
    coef[3u * p.channels + c],
  );
}

// (mean, scale, a, k) of channel c from its chunk sums, added in order; the invocation of the
// channel's first chunk, t = c * chunks, writes its weight and bias gradients.
fn folded_coefficients(t: u32, c: u32) -> vec4f {
  var total = vec2f(0.0);
  let base = 3u * p.channels + 2u * c * p.partials;
  for (var z = 0u; z < p.partials; z++) {
    total += vec2f(coef[base + 2u * z], coef[base + 2u * z + 1u]);
  }
  let invstd = coef[2u * p.channels + c];
  let dxhat = total.y * invstd;
  if (t == c * p.chunks) {
    sum_dy[c] = total.x;
    sum_dy_xhat[c] = dxhat;
  }
  var cf = vec4f(coef[c], coef[p.channels + c], 0.0, 0.0);
  if (TRAINING) {
    cf.z = total.x / p.n;
    cf.w = dxhat * invstd / p.n;
  }
  return cf;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  write_dx(t, chunk(t, coefficients((t / p.chunks) % p.channels)));
}

@compute @workgroup_size(256)
fn main_residual(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let r = chunk(t, coefficients((t / p.chunks) % p.channels));
  write_dx(t, r);
  write_dres(t, r);
}

@compute @workgroup_size(256)
fn main_partials(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  write_dx(t, chunk(t, folded_coefficients(t, (t / p.chunks) % p.channels)));
}

@compute @workgroup_size(256)
fn main_partials_residual(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.count) { return; }
  let r = chunk(t, folded_coefficients(t, (t / p.chunks) % p.channels));
  write_dx(t, r);
  write_dres(t, r);
}
