// `deno task bench:gpu --json FILE`: the run for a lent GPU, in one command of a few minutes.
// 1. Checks that WebGPU's adapter is a real GPU (not a fallback or software adapter); stops with
//    exit 3 otherwise, unless ALLOW_FALLBACK=1 (a dry run: its figures are not GPU figures).
// 2. Runs the op tests (tests/ops/) with the gpu kernel family under WebGPU's default limits.
// 3. Runs `bench.ts --quick --batch 128` once per kernel family (software, then gpu): the kernels
//    of every ResNet-20 b128 layer shape, and end-to-end steps at batch 128 with a per-kernel
//    profile of one training step (timestamp queries).
// 4. Writes one JSON with all of it, and prints a summary.
// Each step runs in a child process with a time limit (--step-timeout, seconds), so one stuck
// step cannot use up the lease; the JSON records what every step did.

const HELP = `deno task bench:gpu [--json FILE] [--step-timeout SECONDS]

On a lent GPU: checks the adapter is a GPU (ALLOW_FALLBACK=1 goes on with a software adapter, for
a dry run), runs the op tests with the gpu kernel family under default limits, then
\`bench.ts --quick --batch 128\` with each kernel family, and writes one JSON.

  --json FILE            where to write the report (default bench-gpu.json)
  --step-timeout S       time limit of each step, in seconds (default 100; the whole run is then at
                         most ~5.5 minutes)
  -h, --help             this text`;

interface Flags {
  json: string;
  stepTimeout: number;
}

function parseFlags(args: string[]): Flags {
  const flags: Flags = { json: "bench-gpu.json", stepTimeout: 100 };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      Deno.exit(0);
    } else if (arg === "--json") {
      flags.json = args[++i] ?? fail("--json needs a file");
    } else if (arg === "--step-timeout") {
      flags.stepTimeout = Number(args[++i]);
      if (!(flags.stepTimeout > 0)) fail("--step-timeout needs a positive number of seconds");
    } else {
      fail(`unknown argument "${arg}"`);
    }
  }
  return flags;
}

function fail(message: string): never {
  console.error(`bench:gpu: ${message}\n\n${HELP}`);
  Deno.exit(2);
}

const started = performance.now();
const seconds = () => (performance.now() - started) / 1000;
const log = (line: string) => console.error(`[${seconds().toFixed(0).padStart(3)} s] ${line}`);

interface StepResult {
  name: string;
  command: string;
  ok: boolean;
  code: number | null;
  timedOut: boolean;
  seconds: number;
}

/** Runs this Deno with `args` and `env`, echoing its output; kills it after the step timeout. */
async function runStep(
  name: string,
  args: string[],
  env: Record<string, string>,
  timeoutS: number,
): Promise<StepResult & { output: string }> {
  const t0 = performance.now();
  log(`${name}: deno ${args.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, timeoutS * 1000);
  const decoder = new TextDecoder();
  let output = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stderr) => {
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  await Promise.all([pump(child.stdout, Deno.stderr), pump(child.stderr, Deno.stderr)]);
  const status = await child.status;
  clearTimeout(timer);
  const result = {
    name,
    command: `deno ${args.join(" ")}`,
    ok: status.success && !timedOut,
    code: status.code,
    timedOut,
    seconds: (performance.now() - t0) / 1000,
    output,
  };
  log(
    `${name}: ${result.ok ? "ok" : timedOut ? `TIMED OUT after ${timeoutS} s` : "FAILED"} ` +
      `(${result.seconds.toFixed(0)} s)`,
  );
  return result;
}

/** The adapter, or exit 3 when it is missing or a software one (unless ALLOW_FALLBACK=1). */
async function checkAdapter(): Promise<Record<string, unknown>> {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    console.error("bench:gpu: WebGPU found no adapter: no GPU figures can be measured here.");
    Deno.exit(3);
  }
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const name = [info.vendor, info.architecture, info.device, info.description].join(" ");
  const software = !!info.isFallbackAdapter ||
    /llvmpipe|lavapipe|softpipe|swiftshader|\bwarp\b|basic render/i.test(name);
  const described = {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallbackAdapter: !!info.isFallbackAdapter,
    software,
    features: [...adapter.features].sort(),
  };
  log(`adapter: ${JSON.stringify(described)}`);
  if (software) {
    if (Deno.env.get("ALLOW_FALLBACK") !== "1") {
      console.error(
        "bench:gpu: the adapter is a software one (a CPU), not a GPU; its figures would not be " +
          "GPU figures. Set ALLOW_FALLBACK=1 for a dry run.",
      );
      Deno.exit(3);
    }
    log("ALLOW_FALLBACK=1: going on with a software adapter (a dry run, not a GPU measurement)");
  }
  return described;
}

interface BenchSummary {
  family: string;
  kernelFamily?: string;
  train128?: number;
  infer128?: number;
  trainStepGpuMs?: number;
  profileTotalMs?: number;
  topKernels?: { kernel: string; calls: number; ms: number }[];
}

interface BenchReport {
  kernelFamily: string;
  endToEnd: {
    model: string;
    batch: number;
    mode: string;
    imagesPerSecond: number;
    gpuMs: number;
    profile: { kernels: { kernel: string; calls: number; ms: number }[]; totalMs: number } | null;
  }[];
}

function summarize(family: string, report: BenchReport | null): BenchSummary {
  if (!report) return { family };
  const row = (mode: string) =>
    report.endToEnd.find((r) => r.model === "resnet20" && r.batch === 128 && r.mode === mode);
  const train = row("train");
  return {
    family,
    kernelFamily: report.kernelFamily,
    train128: train?.imagesPerSecond,
    infer128: row("infer")?.imagesPerSecond,
    trainStepGpuMs: train?.gpuMs,
    profileTotalMs: train?.profile?.totalMs,
    topKernels: train?.profile?.kernels.slice(0, 8),
  };
}

async function main(): Promise<void> {
  const flags = parseFlags(Deno.args);
  const adapter = await checkAdapter();
  const steps: StepResult[] = [];
  const permissions = ["--allow-read", "--allow-write", "--allow-env"];

  const tests = await runStep(
    "op tests, gpu family, default limits",
    ["test", ...permissions, "tests/ops/"],
    { RESNET_WEBGPU_KERNELS: "gpu", RESNET_WEBGPU_LIMITS: "default" },
    flags.stepTimeout,
  );
  const counts = tests.output.match(/\| (\d+) passed.*?\| (\d+) failed/);
  const { output: _testOutput, ...testStep } = tests;
  steps.push(testStep);

  const reports: Record<string, BenchReport | null> = {};
  for (const family of ["software", "gpu"]) {
    const file = await Deno.makeTempFile({ prefix: `bench-${family}-`, suffix: ".json" });
    const { output: _output, ...step } = await runStep(
      `bench --quick, ${family} family, batch 128`,
      [
        "run",
        ...permissions,
        "--allow-sys=loadavg",
        "bench/bench.ts",
        "--quick",
        "--batch",
        "128",
        "--kernels",
        family,
        "--json",
        file,
      ],
      { RESNET_WEBGPU_KERNELS: family },
      flags.stepTimeout,
    );
    steps.push(step);
    try {
      reports[family] = JSON.parse(await Deno.readTextFile(file));
    } catch {
      reports[family] = null;
    }
    await Deno.remove(file).catch(() => {});
  }

  const summaries = ["software", "gpu"].map((f) => summarize(f, reports[f]));
  const result = {
    date: new Date().toISOString(),
    adapter,
    dryRun: !!adapter.software,
    deno: Deno.version,
    seconds: seconds(),
    tests: {
      passed: counts ? Number(counts[1]) : null,
      failed: counts ? Number(counts[2]) : null,
      ok: testStep.ok,
    },
    steps,
    summary: summaries,
    bench: reports,
  };
  await Deno.writeTextFile(flags.json, JSON.stringify(result, null, 2) + "\n");

  const fmt = (v: number | undefined, digits = 1) => v === undefined ? "-" : v.toFixed(digits);
  const lines = [
    `bench:gpu${result.dryRun ? " (DRY RUN on a software adapter: not GPU figures)" : ""}: ` +
    `${adapter.description || adapter.device || adapter.vendor}, Deno ${Deno.version.deno}, ` +
    `${result.seconds.toFixed(0)} s`,
    `op tests (gpu family, default limits): ${result.tests.passed ?? "?"} passed, ` +
    `${result.tests.failed ?? "?"} failed${testStep.ok ? "" : " (step FAILED)"}`,
    ...steps.map((s) =>
      `  ${s.name}: ${s.ok ? "ok" : s.timedOut ? "timed out" : "FAILED"}, ${s.seconds.toFixed(0)} s`
    ),
  ];
  for (const s of summaries) {
    lines.push(
      `${s.family} family: ResNet-20 b128 train ${fmt(s.train128)} img/s, infer ${
        fmt(s.infer128)
      } img/s; one profiled training step ${fmt(s.profileTotalMs, 2)} ms of GPU time`,
    );
    for (const k of s.topKernels ?? []) {
      lines.push(`    ${k.kernel.padEnd(44)} ${String(k.calls).padStart(4)}  ${fmt(k.ms, 3)} ms`);
    }
  }
  const [sw, gpu] = summaries;
  if (sw.train128 && gpu.train128) {
    lines.push(
      `gpu / software, ResNet-20 b128 training: ${(gpu.train128 / sw.train128).toFixed(2)}x`,
    );
  }
  lines.push(`wrote ${flags.json}`);
  console.log(lines.join("\n"));
  Deno.exit(steps.every((s) => s.ok) ? 0 : 1);
}

if (import.meta.main) await main();
