// batch_norm_stats_chunks: the first pass of the gpu family's batch statistics: each workgroup
// sums one chunk of one channel's N * H * W values, shifted by the channel's first value
// (shift = x[0, c, 0, 0]): (sum of d, sum of d^2) with d = x - shift over chunk z, written after
// the [2, C] head of `partial` that batch_norm_forward (entry points main_partials*) fills with
// the statistics when it adds the chunks; and (entry point main_counter) PyTorch's
// num_batches_tracked += 1, which needs no statistics.
// Bindings: 0 uniform Params (below); 1 x: array<vec4f> [N, C, H, W] (pool buffers are whole
// vec4s, so every element is inside one); 2 partial: array<vec2f> [C + C * chunks]: vec2 C +
// c * chunks + z is chunk z of channel c (writes every one; the head, vec2s 0 .. C - 1, is not
// touched); 3 counter: array<f32> [1] (adds 1, main_counter only).
// Params (u32): batch: N, channels: C, hw: H * W, units: values of a plane (H * W / 4 vec4s with
// VEC4, else H * W values), per_chunk: units per chunk, chunks.
// Override VEC4: H * W % 4 == 0, so that each (n, c) plane is whole vec4s and is read as vec4s.
// Workgroup 256; grid x = chunks, y = C. Invocation t of chunk z reads units
// z * per_chunk + t, + 256, ... of the channel's N * units (unit u: plane u / units, unit
// u % units of it; consecutive invocations read consecutive units), then the workgroup adds its
// 256 sums in a tree; with main_counter, invocation 0 of workgroup (0, 0) alone adds to counter.
struct Params { batch: u32, channels: u32, hw: u32, units: u32, per_chunk: u32, chunks: u32 }

override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> partial: array<vec2f>;
@group(0) @binding(3) var<storage, read_write> counter: array<f32>;

const WG: u32 = 256u;
var<workgroup> sums: array<vec2f, 256>;

fn scalar_at(i: u32) -> f32 {
  return x[i / 4u][i % 4u];
}

fn chunk_sums(z: u32, c: u32, t: u32) {
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
  if (t == 0u) { partial[p.channels + c * p.chunks + z] = sums[0]; }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  chunk_sums(wid.x, wid.y, t);
}

@compute @workgroup_size(256)
fn main_counter(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  chunk_sums(wid.x, wid.y, t);
  if (t == 0u && wid.x == 0u && wid.y == 0u) { counter[0] = counter[0] + 1.0; }
}
