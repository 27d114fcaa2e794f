// batch_norm_backward_reduce_chunks: the gpu family's batch-norm backward reduction: with g = dy
// masked by the ReLU (dy where y > 0, else 0; dy itself without RELU), each workgroup sums one
// chunk of one channel's N * H * W values: (sum of g, sum of g * (x - mean)) over chunk z, and
// the channel's chunk 0 also writes the per-channel terms batch_norm_backward_input (entry points
// main_partials*) needs with them, which adds the chunks.
// Bindings: 0 uniform Params (below); 1 dy: array<vec4f> [N, C, H, W]; 2 y: array<vec4f>
// [N, C, H, W] (the forward's output; any buffer without RELU, then not read); 3 x:
// array<vec4f> [N, C, H, W]; 4 stats: array<f32> [2, C] = (mean, invstd) (only its first 2 * C
// values are read); 5 weight: array<f32> [C] (any buffer but terms without HAS_WEIGHT, then not
// read); 6 terms: array<f32> [3 * C + 2 * C * chunks] (writes every element): a [3, C] head =
// (mean, scale = invstd * weight, invstd), then the sums of chunk z of channel c at 3 * C +
// 2 * (c * chunks + z).
// Params (u32): batch: N, channels: C, units: values of a plane (H * W / 4 vec4s with VEC4, else
// H * W values), per_chunk: units per chunk, chunks.
// Overrides RELU (a constant, so that the mask's load is not in a branch), HAS_WEIGHT, VEC4:
// H * W % 4 == 0, planes read as vec4s.
// Workgroup 256; grid x = chunks, y = C. Invocation t of chunk z reads units
// z * per_chunk + t, + 256, ... of the channel's N * units (unit u: plane u / units, unit
// u % units of it), then the workgroup adds its 256 sums in a tree; invocation 0 writes the sums,
// and in workgroup (0, c) the head of channel c, which no other workgroup writes or reads.
struct Params { batch: u32, channels: u32, units: u32, per_chunk: u32, chunks: u32 }

override RELU: bool = false;
override HAS_WEIGHT: bool = true;
override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4f>;
@group(0) @binding(2) var<storage, read> y: array<vec4f>;
@group(0) @binding(3) var<storage, read> x: array<vec4f>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> terms: array<f32>;

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
  if (t == 0u) {
    let at = 3u * p.channels + 2u * (c * p.chunks + z);
    terms[at] = sums[0].x;
    terms[at + 1u] = sums[0].y;
    if (z == 0u) {
      let invstd = stats[p.channels + c];
      var scale = invstd;
      if (HAS_WEIGHT) { scale *= weight[c]; }
      terms[c] = mean;
      terms[p.channels + c] = scale;
      terms[2u * p.channels + c] = invstd;
    }
  }
}
