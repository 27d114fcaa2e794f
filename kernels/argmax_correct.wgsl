// argmax_correct: per row, 1 when the row's arg-max (the first maximum) equals the target class,
// else 0 (also for a target that is not a valid class).
// Bindings: 0 uniform Params { N: u32, C: u32 }; 1 logits: array<f32> [N, C] (reads);
// 2 targets: array<f32> [N] (reads; class indices as floats); 3 correct: array<f32> [N] (writes).
// Workgroup 64; dispatch grid1d(N, 64); one invocation handles one row.
struct Params { N: u32, C: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> correct: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.N) { return; }
  let base = row * p.C;
  var best = 0u;
  var mx = logits[base];
  for (var c = 1u; c < p.C; c++) {
    let v = logits[base + c];
    if (v > mx) {
      mx = v;
      best = c;
    }
  }
  correct[row] = select(0.0, 1.0, targets[row] == f32(best));
}
