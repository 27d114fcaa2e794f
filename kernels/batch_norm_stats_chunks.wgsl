// batch_norm_stats_chunks: the first pass of the gpu family's batch statistics: each workgroup
// sums one chunk of one channel's N * H * W values, shifted by the channel's first value
// (shift = x[0, c, 0, 0]): partial[c, z] = (sum of d, sum of d^2) with d = x - shift over
// chunk z. batch_norm_stats_combine adds the chunks and writes the statistics.
// Bindings: 0 uniform Params (below); 1 x: array<vec4f> [N, C, H, W] (pool buffers are whole
// vec4s, so every element is inside one); 2 partial: array<vec2f> [C, chunks] (writes every
// element).
// Params (u32): batch: N, channels: C, hw: H * W, units: values of a plane (H * W / 4 vec4s with
// VEC4, else H * W values), per_chunk: units per chunk, chunks.
// Override VEC4: H * W % 4 == 0, so that each (n, c) plane is whole vec4s and is read as vec4s.
// Workgroup 256; grid x = chunks, y = C. Invocation t of chunk z reads units
// z * per_chunk + t, + 256, ... of the channel's N * units (unit u: plane u / units, unit
// u % units of it; consecutive invocations read consecutive units), then the workgroup adds its
// 256 sums in a tree.
struct Params { batch: u32, channels: u32, hw: u32, units: u32, per_chunk: u32, chunks: u32 }

override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> partial: array<vec2f>;

const WG: u32 = 256u;
var<workgroup> sums: array<vec2f, 256>;

fn scalar_at(i: u32) -> f32 {
  return x[i / 4u][i % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let z = wid.x;
  let c = wid.y;
  let shift = scalar_at(c * p.hw);
  let end = min((z + 1u) * p.per_chunk, p.batch * p.units);
  var s = 0.0;
  var q = 0.0;
  if (VEC4) {
    var s4 = vec4f(0.0);
    var q4 = vec4f(0.0);
    for (var u = z * p.per_chunk + t; u < end; u += WG) {
      let n = u / p.units;
      let d = x[(n * p.channels + c) * p.units + (u - n * p.units)] - shift;
      s4 += d;
      q4 += d * d;
    }
    s = (s4.x + s4.y) + (s4.z + s4.w);
    q = (q4.x + q4.y) + (q4.z + q4.w);
  } else {
    for (var u = z * p.per_chunk + t; u < end; u += WG) {
      let n = u / p.units;
      let d = scalar_at((n * p.channels + c) * p.units + (u - n * p.units)) - shift;
      s += d;
      q += d * d;
    }
  }
  sums[t] = vec2f(s, q);
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (t < half) { sums[t] += sums[t + half]; }
    workgroupBarrier();
  }
  if (t == 0u) { partial[c * p.chunks + z] = sums[0]; }
}
