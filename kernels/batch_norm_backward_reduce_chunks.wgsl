// batch_norm_backward_reduce_chunks: the first pass of the gpu family's batch-norm backward
// reduction: with g = dy masked by the ReLU (dy where y > 0, else 0; dy itself without RELU),
// each workgroup sums one chunk of one channel's N * H * W values:
// partial[c, z] = (sum of g, sum of g * (x - mean)) over chunk z. batch_norm_backward_reduce_combine
// adds the chunks and writes the sums and coefficients.
// Bindings: 0 uniform Params (below); 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f>
// [N, C, H, W] (the forward's output; any buffer without RELU, then not read); 3 x:
// array<vec4f> [N, C, H, W]; 4 stats: array<f32> [2, C] = (mean, invstd); 5 partial:
// array<vec2f> [C, chunks] (writes every element).
// Params (u32): batch: N, channels: C, units: values of a plane (H * W / 4 vec4s with VEC4, else
// H * W values), per_chunk: units per chunk, chunks.
// Overrides RELU (a constant, so that the mask's load is not in a branch), VEC4: H * W % 4 == 0,
// planes read as vec4s.
// Workgroup 256; grid x = chunks, y = C. Invocation t of chunk z reads units
// z * per_chunk + t, + 256, ... of the channel's N * units (unit u: plane u / units, unit
// u % units of it), then the workgroup adds its 256 sums in a tree.
struct Params { batch: u32, channels: u32, units: u32, per_chunk: u32, chunks: u32 }

override RELU: bool = false;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<vec2f>;

const WG: u32 = 256u;
var<workgroup> sums: array<vec2f, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let z = wid.x;
  let c = wid.y;
  let mean = stats[c];
  let end = min((z + 1u) * p.per_chunk, p.batch * p.units);
  var st = vec2f(0.0);
  if (VEC4) {
    var s = vec4f(0.0);
    var q = vec4f(0.0);
    for (var u = z * p.per_chunk + t; u < end; u += WG) {
      let n = u / p.units;
      let i = (n * p.channels + c) * p.units + (u - n * p.units);
      var g = dy[i];
      if (RELU) { g = select(vec4f(0.0), g, y[i] > vec4f(0.0)); }
      s += g;
      q += g * (x[i] - mean);
    }
    st = vec2f((s.x + s.y) + (s.z + s.w), (q.x + q.y) + (q.z + q.w));
  } else {
    for (var u = z * p.per_chunk + t; u < end; u += WG) {
      let n = u / p.units;
      let i = (n * p.channels + c) * p.units + (u - n * p.units);
      var g = dy[i / 4u][i % 4u];
      if (RELU) { g = select(0.0, g, y[i / 4u][i % 4u] > 0.0); }
      st += vec2f(g, g * (x[i / 4u][i % 4u] - mean));
    }
  }
  sums[t] = st;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (t < half) { sums[t] += sums[t + half]; }
    workgroupBarrier();
  }
  if (t == 0u) { partial[c * p.chunks + z] = sums[0]; }
}
