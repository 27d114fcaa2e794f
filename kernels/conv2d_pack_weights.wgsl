// conv2d_pack_weights: conv2d_pack_weight for many filter banks in one dispatch. The filters lie in
// one flat buffer (an optimizer's parameters), the packed banks go into one flat buffer, and a
// chunk table lists the pieces: per chunk, the packed elements start .. start + count - 1 of one
// bank. Each element as conv2d_pack_weight computes it, with the bank's offsets added:
// flip = 0: out[dst + ((c * KH + ky) * KW + kx) * cols + o] =
//   w[src + ((o * C + c) * KH + ky) * KW + kx];
// flip = 1: out[dst + ((o * KH + ky) * KW + kx) * cols + c] =
//   w[src + ((o * C + c) * KH + KH-1-ky) * KW + KW-1-kx].
// Entries past the last output channel (o >= O, or c >= C with flip) are zero.
// Bindings: 0 uniform Params { first, chunks, base } (u32): the table's chunks first ..
//   first + chunks - 1, and the element of the flat packed layout that `out` starts at (a chunk's
//   dst counts from the layout's start, so out's index is dst - base + element);
//   1 table: array<Chunk> chunk table (read): per chunk { src, dst, o, c, kh, kw, cols, flip,
//     start, count } (u32; src and dst in elements, cols a multiple of 4 >= O (C with flip),
//     count <= 1024);
//   2 w: array<f32> the flat filters [O, C, KH, KW] each (read); 3 out: array<f32> the flat packed
//   filters [rows, cols] each (writes the listed chunks' elements).
// Workgroup 64; dispatch grid1d(chunks, 1) workgroups: workgroup k (x + y * groups in x) writes
// chunk first + k, invocation l its elements start + l, start + l + 64, ...
struct Params { first: u32, chunks: u32, base: u32 }

struct Chunk {
  src: u32,
  dst: u32,
  o: u32,
  c: u32,
  kh: u32,
  kw: u32,
  cols: u32,
  flip: u32,
  start: u32,
  count: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<Chunk>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let k = wid.x + wid.y * nwg.x;
  if (k >= p.chunks) { return; }
  let t = table[p.first + k];
  for (var e = lid; e < t.count; e += 64u) {
    let i = t.start + e;
    let col = i % t.cols;
    let row = i / t.cols;
    let kx = row % t.kw;
    let ky = (row / t.kw) % t.kh;
    let outer = row / (t.kw * t.kh);
    var value = 0.0;
    if (t.flip != 0u) {
      // outer = o, col = c.
      if (col < t.c) {
        let tap = (t.kh - 1u - ky) * t.kw + (t.kw - 1u - kx);
        value = w[t.src + (outer * t.c + col) * t.kh * t.kw + tap];
      }
    } else if (col < t.o) {
      // outer = c, col = o.
      value = w[t.src + ((col * t.c + outer) * t.kh + ky) * t.kw + kx];
    }
    out[t.dst - p.base + i] = value;
  }
}
