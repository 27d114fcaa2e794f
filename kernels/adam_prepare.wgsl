// adam_prepare: advances the step counts of the Adam/AdamW parameters that take this step and
// computes their step-dependent factors, on the GPU, so that a steady step uploads nothing and
// writes no uniforms (like PyTorch's capturable Adam, whose step counts live on the device). The
// bias corrections come from a table the CPU fills in float64 (rounded to f32) for a window of
// future step counts; a parameter's cursor is the table row of its next step.
// Bindings: 0 uniform Params (below);
//   1 who: array<u32> [count] indices of the parameters that take this step (read),
//   2 steps: array<u32> read-write: steps[i] for i < table_base is parameter i's cursor; row r
//     of the table is (bitcast<f32>(steps[table_base + 2r]), bitcast<f32>(steps[table_base + 2r
//     + 1])) = (1 - beta1^t, sqrt(1 - beta2^t)) for the row's step count t,
//   3 factors: array<vec4f> read-write, parameter i's at index 16 * i (256 bytes apart, so that
//     adam_step can bind one as a uniform): (step_size = lr / (1 - beta1^t), bc2_sqrt =
//     sqrt(1 - beta2^t), 0, 0) for its new step count t.
// Uniform Params { count: u32; lr: f32; table_base: u32 }.
// Workgroup 64; dispatch (1, 1, 1): invocation l handles who[l], who[l + 64], ...: reads
//   its cursor's row, advances the cursor by one and writes its factors (step_size in f32).
struct Params {
  count: u32,
  lr: f32,
  table_base: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> who: array<u32>;
@group(0) @binding(2) var<storage, read_write> steps: array<u32>;
@group(0) @binding(3) var<storage, read_write> factors: array<vec4f>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
  for (var k = lid; k < u.count; k += 64u) {
    let i = who[k];
    let row = steps[i];
    steps[i] = row + 1u;
    let at = u.table_base + 2u * row;
    let bc1 = bitcast<f32>(steps[at]);
    let bc2_sqrt = bitcast<f32>(steps[at + 1u]);
    factors[16u * i] = vec4f(u.lr / bc1, bc2_sqrt, 0.0, 0.0);
  }
}
