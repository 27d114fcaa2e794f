/**
 * `deno task bench:peers`: the same ResNet-20 training step (the paper's CIFAR network, batch 32,
 * SGD with momentum, cross-entropy, random data), the same inference forward and the same 3x3 conv
 * in this library, jax-js and TensorFlow.js (WebGPU backend), on this Deno and this adapter.
 *
 * Each framework runs in its own Deno process (`ours.ts`, `jaxjs.ts`, `tfjs.ts`), one after the
 * other, so that one cannot slow, break or crash another; a peer that fails or hangs is reported
 * and the suite goes on. Prints a Markdown table last; `--json FILE` writes every figure. The
 * table's load column is the 1-minute load average around each framework's run: the benchmark
 * itself adds 1-2 on a software adapter (llvmpipe runs on every core), more means other work.
 *
 * ```sh
 * deno task bench:peers                 # 1.5-4 minutes on a 2-core software adapter
 * deno task bench:peers --quick         # fewer steps
 * deno task bench:peers --json peers.json --only ours,jax
 * ```
 *
 * @module
 */
import type { PeerResult, Plan } from "./common.ts";
import {
  BATCH,
  CONV,
  CONV_FLOPS,
  emptyResult,
  resnet20ParameterCount,
  RESULT_PREFIX,
  SGD,
} from "./common.ts";

interface Peer {
  /** Name on the command line (`--only`). */
  key: string;
  /** Framework's name in the table when the peer reports nothing. */
  name: string;
  /** Version pinned by the peer's imports. */
  version: string;
  /** Its script, beside this one. */
  script: string;
  /** Steps: jax-js and TF.js train 5-15x slower than ours on llvmpipe, so they get fewer. */
  full: Plan;
  quick: Plan;
}

const PEERS: Peer[] = [
  {
    key: "ours",
    name: "ours (@resnet/webgpu)",
    version: "working tree",
    script: "ours.ts",
    full: { warmup: 2, trainSteps: 10, inferSteps: 12, convReps: 12 },
    quick: { warmup: 1, trainSteps: 3, inferSteps: 3, convReps: 3 },
  },
  {
    key: "jax",
    name: "jax-js",
    version: "0.1.25",
    script: "jaxjs.ts",
    full: { warmup: 2, trainSteps: 6, inferSteps: 8, convReps: 8 },
    quick: { warmup: 1, trainSteps: 2, inferSteps: 2, convReps: 3 },
  },
  {
    key: "tfjs",
    name: "TensorFlow.js (webgpu)",
    version: "4.22.0",
    script: "tfjs.ts",
    full: { warmup: 2, trainSteps: 3, inferSteps: 4, convReps: 5, profile: true },
    quick: { warmup: 1, trainSteps: 1, inferSteps: 1, convReps: 2 },
  },
];

const USAGE = `Usage: deno task bench:peers [--quick] [--json FILE] [--only ours,jax,tfjs]

Trains the paper's CIFAR ResNet-20 (batch ${BATCH}, SGD lr ${SGD.lr} momentum ${SGD.momentum}) in
this library, jax-js 0.1.25 and TensorFlow.js 4.22 (WebGPU), each in its own process on the same
adapter, and prints training and inference images/s and the GFLOP/s of a 3x3 16->16 conv.

  --quick        fewer steps (about a minute instead of two to four)
  --json FILE    also write every figure, the date, the adapter and the versions to FILE
  --only LIST    comma-separated subset of: ${PEERS.map((p) => p.key).join(", ")}
  --timeout S    seconds allowed to each framework (default 420, quick 240)
  --help         this text`;

interface Options {
  quick: boolean;
  json: string | null;
  only: Peer[];
  timeoutSeconds: number | null;
}

function fail(message: string): never {
  console.error(`bench:peers: ${message}\n\n${USAGE}`);
  Deno.exit(2);
}

function parseOptions(args: string[]): Options {
  const options: Options = { quick: false, json: null, only: PEERS, timeoutSeconds: null };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined || v === "") fail(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--help":
      case "-h":
        console.log(USAGE);
        Deno.exit(0);
        break;
      case "--quick":
        options.quick = true;
        break;
      case "--json":
        options.json = value();
        break;
      case "--only": {
        const keys = value().split(",").map((k) => k.trim()).filter(Boolean);
        const unknown = keys.filter((k) => !PEERS.some((p) => p.key === k));
        if (unknown.length || keys.length === 0) {
          fail(`--only takes names from ${PEERS.map((p) => p.key).join(", ")}, got "${keys}"`);
        }
        options.only = PEERS.filter((p) => keys.includes(p.key));
        break;
      }
      case "--timeout": {
        const seconds = Number(value());
        if (!(seconds > 0)) fail(`--timeout must be a positive number of seconds`);
        options.timeoutSeconds = seconds;
        break;
      }
      default:
        fail(`unknown argument "${arg}"`);
    }
  }
  return options;
}

function loadAverage(): number[] | null {
  try {
    return Deno.loadavg().map((v) => Math.round(v * 100) / 100);
  } catch {
    return null;
  }
}

/** Mesa's complaint about a missing XDG_RUNTIME_DIR, printed by every process: noise here. */
const NOISE = /XDG_RUNTIME_DIR is invalid or not set/;

/** Copies a stream line by line to standard error (noise dropped), keeping the last lines. */
async function relay(stream: ReadableStream<Uint8Array>, keep: string[], collect?: string[]) {
  let pending = "";
  const emitLine = (line: string) => {
    if (NOISE.test(line)) return;
    if (collect && line.startsWith(RESULT_PREFIX)) {
      collect.push(line.slice(RESULT_PREFIX.length));
      return;
    }
    console.error(line);
    keep.push(line);
    if (keep.length > 12) keep.shift();
  };
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    lines.forEach(emitLine);
  }
  if (pending) emitLine(pending);
}

interface Run {
  result: PeerResult;
  wallSeconds: number;
  exitCode: number | null;
  /** 1-minute load average when the peer started and ended: other work skews the figures. */
  load: [number | null, number | null];
}

async function runPeer(peer: Peer, plan: Plan, timeoutSeconds: number): Promise<Run> {
  const root = new URL("../../", import.meta.url);
  const script = decodeURIComponent(new URL(peer.script, import.meta.url).pathname);
  console.error(
    `\n=== ${peer.name}: ${JSON.stringify(plan)}` +
      (peer.key === "ours" ? "" : " (a first run downloads its npm packages)"),
  );
  const started = performance.now();
  const loadAtStart = loadAverage()?.[0] ?? null;
  const results: string[] = [];
  const tail: string[] = [];
  let timedOut = false;
  let exitCode: number | null = null;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-lock",
        "--allow-read",
        "--allow-env",
        script,
        JSON.stringify(plan),
      ],
      cwd: decodeURIComponent(root.pathname),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, timeoutSeconds * 1000);
    const [status] = await Promise.all([
      child.status,
      relay(child.stdout, tail, results),
      relay(child.stderr, tail),
    ]);
    clearTimeout(timer);
    exitCode = status.code;
  } catch (error) {
    tail.push(`could not start: ${error instanceof Error ? error.message : error}`);
  }
  const wallSeconds = (performance.now() - started) / 1000;
  let result: PeerResult;
  if (results.length) {
    result = JSON.parse(results.at(-1)!) as PeerResult;
  } else {
    result = emptyResult(peer.name, peer.version, plan);
    const why = timedOut
      ? `killed after ${timeoutSeconds} s (--timeout)`
      : `exited with code ${exitCode} before reporting`;
    result.errors.push(`${why}; last output: ${tail.slice(-3).join(" / ") || "(none)"}`);
  }
  return { result, wallSeconds, exitCode, load: [loadAtStart, loadAverage()?.[0] ?? null] };
}

function figure(value: number | null): string {
  if (value === null || !Number.isFinite(value)) return "—";
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function table(runs: Run[]): string {
  const header = [
    "framework",
    "version",
    "train img/s",
    "infer img/s",
    "conv GFLOP/s",
    "params",
    "kernels/step",
    "load",
    "notes",
  ];
  const rows = runs.map(({ result: r, load }) => [
    r.framework,
    r.version,
    figure(r.trainImagesPerSec),
    figure(r.inferImagesPerSec),
    figure(r.convGflops),
    r.params === null ? "—" : r.params.toLocaleString("en"),
    r.dispatchesPerTrainStep === null ? "—" : String(Math.round(r.dispatchesPerTrainStep)),
    load.map((l) => l?.toFixed(1) ?? "?").join("→"),
    [...r.notes, ...r.errors.map((e) => `FAILED ${e}`)].join("; "),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const numeric = new Set([2, 3, 4, 5, 6]);
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])).join(" | ")
    } |`;
  const rule = `|${
    widths.map((w, i) => numeric.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2)).join("|")
  }|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

if (import.meta.main) {
  const options = parseOptions(Deno.args);
  const started = new Date();
  const loadAtStart = loadAverage();
  const timeoutSeconds = options.timeoutSeconds ?? (options.quick ? 240 : 420);
  console.error(
    `bench:peers: ResNet-20 (CIFAR, ${resnet20ParameterCount().toLocaleString("en")} parameters ` +
      `with conv biases), batch ${BATCH}; Deno ${Deno.version.deno}; ` +
      `DENO_WEBGPU_BACKEND=${Deno.env.get("DENO_WEBGPU_BACKEND") ?? "(unset)"}; ` +
      `load average ${loadAtStart?.join(" ") ?? "unknown"}`,
  );
  if (loadAtStart && loadAtStart[0] > 1) {
    console.error(
      `bench:peers: the 1-minute load average is ${loadAtStart[0]} on ` +
        `${navigator.hardwareConcurrency} cores: other work is running and will slow the figures`,
    );
  }
  const runs: Run[] = [];
  for (const peer of options.only) {
    runs.push(await runPeer(peer, options.quick ? peer.quick : peer.full, timeoutSeconds));
  }
  const loadAtEnd = loadAverage();
  const adapter = runs.map((r) => r.result.adapter).find((a) => a && a !== "unknown") ??
    "unknown";
  const summary = table(runs);

  if (options.json) {
    const report = {
      date: started.toISOString(),
      seconds: (Date.now() - started.getTime()) / 1000,
      quick: options.quick,
      adapter,
      webgpuBackend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null,
      deno: Deno.version,
      os: `${Deno.build.os} ${Deno.build.arch}`,
      cores: navigator.hardwareConcurrency,
      loadAverage: { start: loadAtStart, end: loadAtEnd },
      workload: {
        model: "ResNet-20 (He et al. 2015, CIFAR): 3x3 stem 16, 3x3 blocks 16/32/64, " +
          "1x1 projections, conv biases, BN (batch statistics), GAP, linear 64->10",
        parametersWithConvBias: resnet20ParameterCount(),
        batch: BATCH,
        optimizer: `SGD lr ${SGD.lr} momentum ${SGD.momentum}`,
        loss: "cross-entropy (mean)",
        conv: { ...CONV, padding: 1, flops: CONV_FLOPS },
      },
      results: runs.map((r) => ({
        ...r.result,
        wallSeconds: r.wallSeconds,
        exitCode: r.exitCode,
        loadAverage: { start: r.load[0], end: r.load[1] },
      })),
    };
    try {
      await Deno.writeTextFile(options.json, JSON.stringify(report, null, 2) + "\n");
      console.error(`\nbench:peers: wrote ${options.json}`);
    } catch (error) {
      console.error(`\nbench:peers: could not write ${options.json}: ${error}`);
    }
  }
  console.log(
    `\nResNet-20, batch ${BATCH}, ${adapter}, Deno ${Deno.version.deno}, ` +
      `${started.toISOString().slice(0, 10)}${options.quick ? " (--quick)" : ""}; load average ` +
      `${loadAtStart?.[0] ?? "?"} -> ${
        loadAtEnd?.[0] ?? "?"
      } on ${navigator.hardwareConcurrency} ` +
      "cores.\nkernels/step: compute dispatches per timed training step, counted at " +
      "dispatchWorkgroups; load: 1-minute load average as the framework's run started → ended.\n",
  );
  console.log(summary);
}
