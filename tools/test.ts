// `deno task test`: every check CI runs, in order, ending with `tests: N passed, N failed`.
// Each step runs to the end even when an earlier one failed, so one run shows every problem.

const testPermissions = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net=127.0.0.1",
  // tests/browser/: Chromium, and this Deno for `deno task bundle`; tests/package/ and
  // tests/train/process_test.ts: this Deno as a fresh process (a consumer project, signals,
  // kill -9); tests/data: mkfifo.
  `--allow-run=chromium,mkfifo,${Deno.execPath()}`,
];

const steps: {
  name: string;
  args: string[];
  countsTests?: boolean;
  env?: Record<string, string>;
}[] = [
  { name: "format", args: ["fmt", "--check"] },
  { name: "lint", args: ["lint"] },
  {
    name: "type check",
    args: [
      "check",
      "mod.ts",
      "browser.ts",
      "bench/bench.ts",
      "bench/gpu.ts",
      "examples/",
      "tests/",
      "tools/",
    ],
  },
  // Every entry point of deno.json together: a type is public when any of them exports it.
  { name: "doc lint", args: ["doc", "--lint", ...entryPoints()] },
  {
    name: "tests",
    args: ["test", ...testPermissions, "--doc", "tests/", "src/", "mod.ts", "browser.ts"],
    countsTests: true,
  },
  {
    // Deno takes Vulkan when present; the GL adapter must work too.
    name: "op and model tests on the GL backend",
    args: ["test", ...testPermissions, "tests/ops/", "tests/nn/"],
    countsTests: true,
    env: { DENO_WEBGPU_BACKEND: "gl" },
  },
  {
    // The gpu kernel family (tiled, for hardware adapters) under WebGPU's default limits, the
    // most constrained adapter's: proof that it runs there, and that the trainer's recorded and
    // replayed step and the multi-tensor optimizers do too. Vulkan (lavapipe) compiles its
    // barrier kernels far faster than GL.
    name: "op and model tests, gpu kernel family, default limits, on Vulkan",
    args: [
      "test",
      ...testPermissions,
      "tests/ops/",
      "tests/nn/",
      "tests/optim/multi_tensor_test.ts",
      "tests/train/compiled_step_test.ts",
    ],
    countsTests: true,
    env: {
      DENO_WEBGPU_BACKEND: "vulkan",
      RESNET_WEBGPU_KERNELS: "gpu",
      RESNET_WEBGPU_LIMITS: "default",
    },
  },
  { name: "publish dry run", args: ["publish", "--dry-run", "--allow-dirty"] },
];

/** The module files of deno.json's "exports", `.` first. */
function entryPoints(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  return Object.values(config.exports as Record<string, string>);
}

let passed = 0;
let failed = 0;
const failedSteps: string[] = [];
const warnings: string[] = [];
const decoder = new TextDecoder();

for (const step of steps) {
  const started = performance.now();
  console.log(`\n=== ${step.name}: deno ${step.args.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    args: step.args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...step.env },
  }).spawn();
  const [stdout, stderr] = await Promise.all([
    pipe(child.stdout, Deno.stdout),
    pipe(child.stderr, Deno.stderr),
  ]);
  const status = await child.status;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  let ok = status.success;
  if (step.countsTests) {
    // Deno's summary line: "ok | 12 passed (3 steps) | 0 failed (4s)".
    const summary = (stdout + stderr).match(/\| (\d+) passed.*?\| (\d+) failed/);
    if (summary) {
      passed += Number(summary[1]);
      failed += Number(summary[2]);
      if (!ok && Number(summary[2]) === 0 && /^ok \|/m.test(stdout + stderr)) {
        // Every test passed and Deno printed its summary, then the process died while tearing
        // down WebGPU (glibc "double free or corruption" inside Deno's wgpu, intermittent, on the
        // GL backend mostly). Reported loudly, not counted as a test failure; see README.
        ok = true;
        warnings.push(
          `${step.name}: all tests passed, then deno exited with status ${status.code}` +
            (status.signal ? ` (${status.signal})` : "") + " during WebGPU teardown",
        );
      }
    } else if (!ok) {
      failed++;
    }
  } else if (ok) {
    passed++;
  } else {
    failed++;
  }
  if (!ok) failedSteps.push(step.name);
  console.log(`=== ${step.name}: ${ok ? "ok" : "FAILED"} (${seconds} s)`);
}

for (const warning of warnings) console.log(`\nWARNING: ${warning}`);
if (failedSteps.length) console.log(`\nfailed steps: ${failedSteps.join(", ")}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
Deno.exit(failedSteps.length ? 1 : 0);

async function pipe(stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) {
  let text = "";
  for await (const chunk of stream) {
    text += decoder.decode(chunk, { stream: true });
    await sink.write(chunk);
  }
  return text;
}
