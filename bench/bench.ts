// `deno task bench`: per-kernel timings for every distinct layer shape of ResNet-20 and of the
// seed's labml model, the adapter's measured peaks, and end-to-end training and inference
// throughput with a per-step breakdown. See BENCHMARKS.md for how the figures are measured.
import {
  adapterDescription,
  add,
  avgPool2d,
  batchNorm2d,
  conv2d,
  crossEntropy,
  getDevice,
  globalAvgPool2d,
  gpuCounters,
  initGPU,
  kernelFamily,
  type KernelTime,
  linear,
  matmul,
  maxPool2d,
  memoryStats,
  noGrad,
  profileKernels,
  resetPeakMemory,
  resnet18,
  resnet50,
  ResNetBase,
  Tensor,
  tidy,
} from "@resnet/webgpu";
import { BatchNorm2d, Conv2d, Linear, type Module } from "@resnet/webgpu/nn";
import { Adam, type Optimizer, SGD } from "@resnet/webgpu/optim";
import { buildModel, CompiledTrainStep } from "@resnet/webgpu/train";
// Not public: a step's work is submitted without waiting, as the trainer does.
import { flush } from "../src/gpu/dispatch.ts";
import { type HostCost, measureHostCost, measureOwnFloor } from "./_host_cost.ts";
import { Clock, loadAverage, median, type Timing, type TimingOptions } from "./_timing.ts";
import { type Align, fmtMs, fmtPercent, fmtRate, renderTable } from "./_table.ts";

/** torchvision's models: benchmarked on 224x224 ImageNet-shaped batches with 1000 classes. */
const TORCHVISION: Record<string, () => Module> = {
  resnet18: () => resnet18({ seed: 0 }),
  resnet50: () => resnet50({ seed: 0 }),
};

const HELP = `deno task bench [--quick] [--only kernels|e2e|torchvision|host] [--kernels FAMILY]
                [--batch LIST] [--json FILE]

Benchmarks the kernels of every distinct layer shape of ResNet-20 (batch 128) and of the seed's
labml model (batch 256), the adapter's peak GFLOP/s and GB/s measured with our own matmul and copy,
the issue's target convolution (3x3, 16->16, 32x32, batch 32) at the start, middle and end of the
run, and end-to-end training and inference images/s (batch 32 and 128) with a per-kernel profile
of one step each (timestamp queries, where the adapter offers them); then torchvision's ResNet-18
and ResNet-50 at 224x224 (inference at batch 1 and 32, training at batch 32). The tables come last.

  --quick          fewer shapes and repeats, no torchvision rows unless --only torchvision
                   (about a minute on llvmpipe)
  --only WHAT      kernels, e2e (all end-to-end rows), torchvision (ResNet-18/50 rows only) or
                   host (the host cost of encoding a step)
  --kernels FAMILY the kernel family: auto (default: from the adapter), gpu or software
                   (RESNET_WEBGPU_KERNELS, when set, takes precedence, as for initGPU)
  --batch LIST     end-to-end batch sizes of ResNet-20 and labml, comma-separated (default 32,128;
                   32 with --quick)
  --json FILE      write every figure, with date, adapter, Deno version and flags, to FILE
  -h, --help       this text`;

interface Flags {
  quick: boolean;
  only: "all" | "kernels" | "e2e" | "torchvision" | "host";
  kernels: "auto" | "gpu" | "software";
  batches: number[] | null;
  json: string | null;
}

function parseFlags(args: string[]): Flags {
  const flags: Flags = { quick: false, only: "all", kernels: "auto", batches: null, json: null };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const value = () => {
      const v = args[++i];
      if (v === undefined) fail(`${arg} needs a value`);
      return v;
    };
    if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      Deno.exit(0);
    } else if (arg === "--quick") {
      flags.quick = true;
    } else if (arg === "--only" || arg.startsWith("--only=")) {
      const v = arg.includes("=") ? arg.slice(7) : value();
      if (v !== "kernels" && v !== "e2e" && v !== "torchvision" && v !== "host") {
        fail(`--only takes kernels, e2e, torchvision or host, got "${v}"`);
      }
      flags.only = v;
    } else if (arg === "--kernels" || arg.startsWith("--kernels=")) {
      const v = arg.includes("=") ? arg.slice(10) : value();
      if (v !== "auto" && v !== "gpu" && v !== "software") {
        fail(`--kernels takes auto, gpu or software, got "${v}"`);
      }
      flags.kernels = v;
    } else if (arg === "--batch" || arg.startsWith("--batch=")) {
      const v = arg.includes("=") ? arg.slice(8) : value();
      const batches = v.split(",").map(Number);
      if (!batches.every((b) => Number.isInteger(b) && b > 0)) {
        fail(`--batch takes positive integers separated by commas, got "${v}"`);
      }
      flags.batches = batches;
    } else if (arg === "--json" || arg.startsWith("--json=")) {
      flags.json = arg.includes("=") ? arg.slice(7) : value();
    } else {
      fail(`unknown argument "${arg}"`);
    }
  }
  return flags;
}

function fail(message: string): never {
  console.error(`bench: ${message}\n\n${HELP}`);
  Deno.exit(2);
}

const startedAt = performance.now();
const log = (line: string) =>
  console.error(`[${((performance.now() - startedAt) / 1000).toFixed(0).padStart(3)} s] ${line}`);
const dispatches = () => gpuCounters().dispatches;

// ---------------------------------------------------------------------------------------------
// Kernels

interface KernelRow {
  family: string;
  model: string;
  shape: string;
  /** Layers of the model with this shape (0: not a model layer). */
  layers: number;
  pass: string;
  ms: number;
  reps: number;
  samplesMs: number[];
  dispatches: number;
  flops?: number;
  bytes?: number;
  gflops?: number;
  gbps?: number;
  /** Of the measured peak GFLOP/s (compute-bound rows) or GB/s (memory-bound rows). */
  fractionOfPeak?: number;
}

interface Case {
  family: string;
  model: string;
  shape: string;
  layers: number;
  pass: string;
  flops?: number;
  bytes?: number;
  encode: () => void;
}

/** Cases sharing inputs; `dispose` frees them once all are timed. */
interface Group {
  cases: Case[];
  dispose: () => void;
}

/** Calls a recorded node's backward directly: no seed copy, no tape walk, only its kernels. */
function backwardOf(y: Tensor, gy: Tensor): () => void {
  const node = y.gradFn!;
  return () => {
    for (const g of node.backward(gy)) if (g && g !== gy) g.dispose();
  };
}

/** A leaf sharing `t`'s buffer that requires grad, so the op records its backward. */
function needingGrad(t: Tensor): Tensor {
  const leaf = t.detach();
  leaf.requiresGrad = true;
  return leaf;
}

function disposeAll(tensors: (Tensor | null | undefined)[]): void {
  for (const t of tensors) {
    for (const internal of t?.gradFn?.internals ?? []) internal.dispose();
    t?.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Layer shapes, from forward hooks on the model's layers

interface ConvShape {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  k: [number, number];
  stride: [number, number];
  padding: [number, number];
  oh: number;
  ow: number;
  bias: boolean;
  /** Takes the model's input (the images), whose gradient no training step needs. */
  stem: boolean;
  /** Layers of the model with this shape. */
  layers: number;
}

/** `[N, C, H, W]` with the number of layers that see it. */
interface PlaneShape {
  shape: [number, number, number, number];
  layers: number;
}

interface LinearShape {
  n: number;
  in: number;
  out: number;
  layers: number;
}

interface ModelShapes {
  convs: ConvShape[];
  norms: PlaneShape[];
  /** Inputs of the global average pool (the output of each ResNetBase's blocks). */
  pools: PlaneShape[];
  linears: LinearShape[];
}

function tally<T>(map: Map<string, T & { layers: number }>, key: string, make: () => T): void {
  const seen = map.get(key);
  if (seen) seen.layers++;
  else map.set(key, { ...make(), layers: 1 });
}

/**
 * Distinct shapes of `model`'s layers at `batch` images of `image` = [C, H, W]: one eval-mode
 * forward of one image with forward hooks on every Conv2d, BatchNorm2d and Linear and on the
 * blocks of every ResNetBase (the global pool's input), the batch dimension then set to `batch`.
 */
function traceShapes(model: Module, batch: number, image = [3, 32, 32]): ModelShapes {
  const convs = new Map<string, ConvShape>();
  const norms = new Map<string, PlaneShape>();
  const pools = new Map<string, PlaneShape>();
  const linears = new Map<string, LinearShape>();
  const x = Tensor.zeros([1, ...image]);
  const plane = (t: Tensor) => [batch, ...t.shape.slice(1)] as [number, number, number, number];
  const handles = [];
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d) {
      handles.push(m.registerForwardHook((_m, input, output) => {
        const [, c, h, w] = input.shape;
        const [, o, oh, ow] = output.shape;
        const key = [c, h, w, o, m.kernelSize, m.stride, m.padding, !!m.bias].join("|");
        tally(convs, key, () => ({
          n: batch,
          c,
          h,
          w,
          o,
          k: m.kernelSize,
          stride: m.stride,
          padding: m.padding,
          oh,
          ow,
          bias: !!m.bias,
          stem: input === x,
        }));
      }));
    } else if (m instanceof BatchNorm2d) {
      handles.push(m.registerForwardHook((_m, _input, output) => {
        tally(norms, output.shape.join("|"), () => ({ shape: plane(output) }));
      }));
    } else if (m instanceof ResNetBase) {
      handles.push(
        m.getSubmodule("blocks").registerForwardHook((_m, _input, output) => {
          tally(pools, output.shape.join("|"), () => ({ shape: plane(output) }));
        }),
      );
    } else if (m instanceof Linear) {
      handles.push(m.registerForwardHook(() => {
        const key = `${m.inFeatures}|${m.outFeatures}`;
        tally(linears, key, () => ({ n: batch, in: m.inFeatures, out: m.outFeatures }));
      }));
    }
  }
  const training = model.training;
  model.eval();
  tidy(() => noGrad(() => model.call(x)));
  model.train(training);
  for (const h of handles) h.remove();
  x.dispose();
  return {
    convs: [...convs.values()],
    norms: [...norms.values()],
    pools: [...pools.values()],
    linears: [...linears.values()],
  };
}

function convLabel(s: ConvShape): string {
  return `${s.n}x${s.c}x${s.h}x${s.w} ${s.k[0]}x${s.k[1]} s${s.stride[0]} p${s.padding[0]} ` +
    `->${s.o}`;
}

function convGroup(model: string, s: ConvShape, seed: number): Group {
  const options = { stride: s.stride, padding: s.padding };
  const x = Tensor.randn([s.n, s.c, s.h, s.w], { seed });
  const w = Tensor.randn([s.o, s.c, s.k[0], s.k[1]], { seed: seed + 1 });
  const b = s.bias ? Tensor.randn([s.o], { seed: seed + 2 }) : null;
  const gy = Tensor.randn([s.n, s.o, s.oh, s.ow], { seed: seed + 3 });
  const flops = 2 * s.n * s.o * s.oh * s.ow * s.c * s.k[0] * s.k[1];
  // One graph per gradient, so each backward runs only its own kernel.
  const xg = needingGrad(x);
  const yInput = conv2d(xg, w, null, options);
  const wg = needingGrad(w);
  const yWeight = conv2d(x, wg, null, options);
  const base = { family: "conv2d", model, shape: convLabel(s), layers: s.layers, flops };
  const cases: Case[] = [{
    ...base,
    pass: "fwd",
    encode: () => conv2d(x, w, b, options).dispose(),
  }];
  // The stem's input is the batch of images, which needs no gradient.
  if (!s.stem) cases.push({ ...base, pass: "bwd input", encode: backwardOf(yInput, gy) });
  cases.push({ ...base, pass: "bwd weight", encode: backwardOf(yWeight, gy) });
  return { cases, dispose: () => disposeAll([yInput, yWeight, xg, wg, x, w, b, gy]) };
}

function batchNormGroup(model: string, p: PlaneShape, seed: number): Group {
  const [n, c, h, w] = p.shape;
  const size = n * c * h * w;
  const x = Tensor.randn(p.shape, { seed });
  const gy = Tensor.randn(p.shape, { seed: seed + 1 });
  const weight = Tensor.ones([c]);
  const bias = Tensor.zeros([c]);
  const runningMean = Tensor.zeros([c]);
  const runningVar = Tensor.ones([c]);
  const numBatchesTracked = Tensor.zeros([]);
  const stats = { runningMean, runningVar, numBatchesTracked, training: true };
  const [xg, wg, bg] = [x, weight, bias].map(needingGrad);
  const y = batchNorm2d(xg, { weight: wg, bias: bg, ...stats });
  const base = { family: "batchNorm2d", model, shape: p.shape.join("x"), layers: p.layers };
  return {
    cases: [
      {
        ...base,
        pass: "fwd (train)",
        // Effective traffic: x read, y written (the kernels read x more than once).
        bytes: 2 * size * 4,
        encode: () => batchNorm2d(x, { weight, bias, ...stats }).dispose(),
      },
      // dx, dweight, dbias; effective traffic: dy and x read, dx written.
      { ...base, pass: "bwd", bytes: 3 * size * 4, encode: backwardOf(y, gy) },
    ],
    dispose: () =>
      disposeAll([y, xg, wg, bg, x, gy, weight, bias, runningMean, runningVar, numBatchesTracked]),
  };
}

function globalPoolGroup(model: string, p: PlaneShape, seed: number): Group {
  const [n, c, h, w] = p.shape;
  const bytes = (n * c * h * w + n * c) * 4;
  const x = Tensor.randn(p.shape, { seed });
  const gy = Tensor.randn([n, c], { seed: seed + 1 });
  const xg = needingGrad(x);
  const y = globalAvgPool2d(xg);
  const base = { family: "globalAvgPool2d", model, shape: p.shape.join("x"), layers: p.layers };
  return {
    cases: [
      { ...base, pass: "fwd", bytes, encode: () => globalAvgPool2d(x).dispose() },
      { ...base, pass: "bwd", bytes, encode: backwardOf(y, gy) },
    ],
    dispose: () => disposeAll([y, xg, x, gy]),
  };
}

/** Max and average pooling, 3x3 stride 2 padding 1, on a representative map. */
function windowPoolGroup(shape: [number, number, number, number], seed: number): Group {
  const [n, c, h, w] = shape;
  const options = { kernelSize: 3, stride: 2, padding: 1 };
  const oh = Math.floor((h + 2 - 3) / 2) + 1;
  const ow = Math.floor((w + 2 - 3) / 2) + 1;
  const size = n * c * h * w;
  const outSize = n * c * oh * ow;
  const x = Tensor.randn(shape, { seed });
  const gy = Tensor.randn([n, c, oh, ow], { seed: seed + 1 });
  const xg = needingGrad(x);
  const yMax = maxPool2d(xg, options);
  const yAvg = avgPool2d(xg, options);
  const label = `${shape.join("x")} 3x3 s2 p1`;
  const max = { family: "maxPool2d", model: "-", shape: label, layers: 0 };
  const avg = { ...max, family: "avgPool2d" };
  return {
    cases: [
      {
        ...max,
        pass: "fwd (train)",
        // x read; y and the arg-max indices written.
        bytes: (size + 2 * outSize) * 4,
        encode: () => disposeAll([maxPool2d(xg, options)]),
      },
      { ...max, pass: "bwd", bytes: (2 * outSize + size) * 4, encode: backwardOf(yMax, gy) },
      {
        ...avg,
        pass: "fwd",
        bytes: (size + outSize) * 4,
        encode: () => avgPool2d(x, options).dispose(),
      },
      { ...avg, pass: "bwd", bytes: (outSize + size) * 4, encode: backwardOf(yAvg, gy) },
    ],
    dispose: () => disposeAll([yMax, yAvg, xg, x, gy]),
  };
}

function linearGroup(model: string, n: number, inF: number, outF: number, seed: number): Group {
  const x = Tensor.randn([n, inF], { seed });
  const w = Tensor.randn([outF, inF], { seed: seed + 1 });
  const b = Tensor.randn([outF], { seed: seed + 2 });
  const gy = Tensor.randn([n, outF], { seed: seed + 3 });
  const [xg, wg, bg] = [x, w, b].map(needingGrad);
  const y = linear(xg, wg, bg);
  const base = { family: "linear", model, shape: `${n}x${inF} ->${outF}`, layers: 1 };
  const flops = 2 * n * inF * outF;
  return {
    cases: [
      { ...base, pass: "fwd", flops, encode: () => linear(x, w, b).dispose() },
      // dx and dW are one product each; db is a sum.
      { ...base, pass: "bwd", flops: 2 * flops, encode: backwardOf(y, gy) },
    ],
    dispose: () => disposeAll([y, xg, wg, bg, x, w, b, gy]),
  };
}

function optimizerGroup(modelName: string, kind: "sgd" | "adam"): Group {
  const model = buildModel(modelName, 0);
  const params = model.parameters();
  params.forEach((p, i) => p.grad = Tensor.randn(p.shape, { seed: 100 + i }).keep());
  const count = params.reduce((s, p) => s + p.size, 0);
  // Tiny steps: the parameters barely move however often the update repeats.
  const optimizer: Optimizer = kind === "sgd"
    ? new SGD(params, { lr: 1e-6, momentum: 0.9, weightDecay: 1e-4 })
    : new Adam(params, { lr: 1e-6 });
  return {
    cases: [{
      family: kind === "sgd" ? "SGD momentum" : "Adam",
      model: modelName,
      shape: `${params.length} tensors, ${count.toLocaleString("en")} values`,
      layers: 0,
      pass: "step",
      // SGD reads p, g, m and writes p, m; Adam reads p, g, m, v and writes p, m, v.
      bytes: (kind === "sgd" ? 5 : 7) * 4 * count,
      encode: () => optimizer.step(),
    }],
    dispose: () => {
      optimizer.dispose();
      model.zeroGrad();
      model.dispose();
    },
  };
}

interface Peaks {
  matmulGflops: number;
  copyGbps: number;
  elementwiseGbps: number;
  gflops: number;
  gbps: number;
  gflopsFrom: string;
  gbpsFrom: string;
}

function peakGroup(quick: boolean): Group {
  const m = quick ? 768 : 1024;
  const a = Tensor.randn([m, m], { seed: 1 });
  const b = Tensor.randn([m, m], { seed: 2 });
  const values = 16 * 2 ** 20; // 64 MiB of float32
  const u = Tensor.full([values], 1);
  const v = Tensor.full([values], 2);
  const base = { model: "-", layers: 0 };
  return {
    cases: [
      {
        ...base,
        family: "peak: matmul",
        shape: `${m}x${m} @ ${m}x${m}`,
        pass: "fwd",
        flops: 2 * m * m * m,
        encode: () => matmul(a, b).dispose(),
      },
      {
        ...base,
        family: "peak: copy",
        shape: "64 MiB clone()",
        pass: "copy",
        bytes: 2 * values * 4,
        encode: () => u.clone().dispose(),
      },
      {
        ...base,
        family: "peak: add",
        shape: `${values} + ${values}`,
        pass: "fwd",
        bytes: 3 * values * 4,
        encode: () => add(u, v).dispose(),
      },
    ],
    dispose: () => disposeAll([a, b, u, v]),
  };
}

async function timeGroup(
  clock: Clock,
  group: Group,
  options: TimingOptions,
  rows: KernelRow[],
): Promise<void> {
  try {
    for (const c of group.cases) {
      const t: Timing = await clock.time(c.encode, options, dispatches);
      const row: KernelRow = {
        family: c.family,
        model: c.model,
        shape: c.shape,
        layers: c.layers,
        pass: c.pass,
        ms: t.ms,
        reps: t.reps,
        samplesMs: t.samplesMs,
        dispatches: t.dispatches,
        flops: c.flops,
        bytes: c.bytes,
        gflops: c.flops ? c.flops / (t.ms * 1e6) : undefined,
        gbps: c.bytes ? c.bytes / (t.ms * 1e6) : undefined,
      };
      rows.push(row);
      log(
        `  ${c.family} ${c.model} ${c.shape} ${c.pass}: ${fmtMs(t.ms)} ms x${t.reps}` +
          (row.gflops ? `  ${fmtRate(row.gflops)} GFLOP/s` : "") +
          (row.gbps ? `  ${fmtRate(row.gbps)} GB/s` : ""),
      );
    }
  } finally {
    group.dispose();
  }
}

async function runKernels(
  clock: Clock,
  flags: Flags,
): Promise<{ rows: KernelRow[]; peaks: Peaks }> {
  const options: TimingOptions = flags.quick
    ? { targetMs: 150, samples: 1, maxReps: 2000 }
    : { targetMs: 300, samples: 3, maxReps: 5000 };
  const rows: KernelRow[] = [];
  log("peaks");
  await timeGroup(clock, peakGroup(flags.quick), options, rows);

  // The target convolution is timed at the start, the middle and the end of the run: this
  // virtual machine has phases of 30-90 s in which every kernel runs ~0.6x as fast (see
  // BENCHMARKS.md), and the median of three far-apart measurements is not decided by one phase.
  const target: ConvShape = {
    n: 32,
    c: 16,
    h: 32,
    w: 32,
    o: 16,
    k: [3, 3],
    stride: [1, 1],
    padding: [1, 1],
    oh: 32,
    ow: 32,
    bias: true,
    stem: false,
    layers: 0,
  };
  let seed = 10;
  log("target conv, 1 of 3");
  await timeGroup(clock, convGroup("target 1/3", target, seed += 4), options, rows);

  const models: { name: string; batch: number }[] = [{ name: "resnet20", batch: 128 }];
  if (!flags.quick) models.push({ name: "labml", batch: 256 });
  for (const { name, batch } of models) {
    const model = buildModel(name, 0);
    const shapes = traceShapes(model, batch);
    model.dispose();
    log(`${name}, batch ${batch}: ${shapes.convs.length} distinct conv shapes`);
    for (const s of shapes.convs) {
      await timeGroup(clock, convGroup(name, s, seed += 4), options, rows);
    }
    for (const p of shapes.norms) {
      await timeGroup(clock, batchNormGroup(name, p, seed += 4), options, rows);
    }
    for (const p of shapes.pools) {
      await timeGroup(clock, globalPoolGroup(name, p, seed += 4), options, rows);
    }
    for (const l of shapes.linears) {
      await timeGroup(clock, linearGroup(name, l.n, l.in, l.out, seed += 4), options, rows);
    }
    if (name === "resnet20") {
      log("target conv, 2 of 3");
      await timeGroup(clock, convGroup("target 2/3", target, seed += 4), options, rows);
    }
  }
  log("target conv, 3 of 3, and others");
  await timeGroup(clock, convGroup("target 3/3", target, seed += 4), options, rows);
  await timeGroup(clock, windowPoolGroup([128, 64, 32, 32], seed += 4), options, rows);
  await timeGroup(clock, optimizerGroup("resnet20", "sgd"), options, rows);
  await timeGroup(clock, optimizerGroup("resnet20", "adam"), options, rows);
  if (!flags.quick) await timeGroup(clock, optimizerGroup("labml", "adam"), options, rows);

  const probe = (family: string, key: "gflops" | "gbps") =>
    rows.find((r) => r.family === family)?.[key] ?? NaN;
  const best = (key: "gflops" | "gbps") =>
    rows.reduce<KernelRow | null>((b, r) => (r[key] ?? 0) > (b?.[key] ?? 0) ? r : b, null)!;
  const bestFlops = best("gflops");
  const bestBytes = best("gbps");
  const peaks: Peaks = {
    matmulGflops: probe("peak: matmul", "gflops"),
    copyGbps: probe("peak: copy", "gbps"),
    elementwiseGbps: probe("peak: add", "gbps"),
    gflops: bestFlops.gflops!,
    gbps: bestBytes.gbps!,
    gflopsFrom: `${bestFlops.family} ${bestFlops.shape} ${bestFlops.pass}`,
    gbpsFrom: `${bestBytes.family} ${bestBytes.shape} ${bestBytes.pass}`,
  };
  for (const r of rows) {
    r.fractionOfPeak = r.gflops !== undefined
      ? r.gflops / peaks.gflops
      : r.gbps !== undefined
      ? r.gbps / peaks.gbps
      : undefined;
  }
  return { rows, peaks };
}

// ---------------------------------------------------------------------------------------------
// End to end

interface E2ERow {
  model: string;
  batch: number;
  mode: "train" | "infer";
  imagesPerSecond: number;
  /** Wall time per step over the timed steps, pipelined (one readback at the end). */
  stepMs: number;
  timedSteps: number;
  /** From steps that each wait for their own readback: JS encoding up to the submit call. */
  encodeMs: number;
  /** Submit to resolved readback, less the idle readback round trip. */
  gpuMs: number;
  /** The idle readback round trip. */
  readbackMs: number;
  dispatchesPerStep: number;
  submitsPerStep: number;
  /** Submits and waits of a step that reads its loss back (the step's own submit + the copy). */
  syncStepSubmits: number;
  syncStepWaits: number;
  bufferCreationsPerStep: number;
  poolAllocationsPerStep: number;
  pipelinesCompiled: number;
  peakBytes: number;
  /** GPU time per kernel of one more step, from timestamp queries (null: not offered). */
  profile: { kernels: KernelTime[]; totalMs: number } | null;
}

async function runEndToEnd(
  clock: Clock,
  name: string,
  batch: number,
  mode: E2ERow["mode"],
  flags: Flags,
): Promise<E2ERow> {
  const baseBytes = memoryStats().inUseBytes;
  const model: Module = TORCHVISION[name]?.() ?? buildModel(name, 0);
  const side = name in TORCHVISION ? 224 : 32;
  const classes = name in TORCHVISION ? 1000 : 10;
  const training = mode === "train";
  // The paper's recipe for every model, so that both measure the same update.
  const optimizer = training
    ? new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 })
    : null;
  const images = Tensor.randn([batch, 3, side, side], { seed: 1 });
  const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % classes);
  // Every step adds its loss (or logits) here; reading it waits for all steps.
  const sink = Tensor.zeros(training ? [] : [batch, classes]);
  model.train(training);
  // Training runs the trainer's step: a CompiledTrainStep, replaying its recorded step.
  const compiled = optimizer ? new CompiledTrainStep(model, optimizer) : null;
  const step = () =>
    tidy(() => {
      if (compiled) {
        const { loss, correct } = compiled.run({ images, labels });
        sink.accumulate(loss);
        loss.dispose();
        correct.dispose();
      } else {
        noGrad(() => sink.accumulate(model.forward(images)));
      }
    });
  try {
    // Warm-up: compiles every pipeline, fills the pool, creates the optimizer's state, and (in
    // training) records the step that the timed ones replay.
    const warmStart = performance.now();
    for (let i = 0; i < (compiled ? 3 : 1); i++) step();
    await sink.toArray();
    const warmMs = (performance.now() - warmStart) / (compiled ? 3 : 1);
    if (compiled && compiled.mode !== "recorded") {
      throw new Error(`the training step was not recorded: ${compiled.reason}`);
    }

    const encode: number[] = [];
    const wait: number[] = [];
    let syncStepSubmits = 0;
    let syncStepWaits = 0;
    // A second synchronous step only where steps are short: the slow ones dominate the run time.
    const syncSteps = flags.quick || warmMs > 2000 ? 1 : 2;
    for (let i = 0; i < syncSteps; i++) {
      const before = gpuCounters();
      const t0 = performance.now();
      step();
      flush();
      const t1 = performance.now();
      await sink.toArray();
      const t2 = performance.now();
      const after = gpuCounters();
      encode.push(t1 - t0);
      wait.push(t2 - t1);
      syncStepSubmits = after.submits - before.submits;
      syncStepWaits = after.readbacks - before.readbacks;
    }
    const syncStepMs = median(encode) + median(wait);
    const steps = Math.max(2, Math.ceil((flags.quick ? 1000 : 3000) / syncStepMs));

    resetPeakMemory();
    const before = gpuCounters();
    const allocationsBefore = memoryStats().allocations;
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      step();
      flush();
    }
    const encoded = gpuCounters();
    await sink.toArray();
    const elapsed = performance.now() - t0;
    const after = gpuCounters();
    const row: E2ERow = {
      model: name,
      batch,
      mode,
      imagesPerSecond: (steps * batch) / (elapsed / 1000),
      stepMs: elapsed / steps,
      timedSteps: steps,
      encodeMs: median(encode),
      gpuMs: Math.max(median(wait) - clock.overheadMs, 0),
      readbackMs: clock.overheadMs,
      dispatchesPerStep: (encoded.dispatches - before.dispatches) / steps,
      submitsPerStep: (encoded.submits - before.submits) / steps,
      syncStepSubmits,
      syncStepWaits,
      bufferCreationsPerStep: (after.bufferCreations - before.bufferCreations) / steps,
      poolAllocationsPerStep: (memoryStats().allocations - allocationsBefore) / steps,
      pipelinesCompiled: after.pipelines - before.pipelines,
      peakBytes: memoryStats().peakInUseBytes - baseBytes,
      profile: null,
    };
    if (getDevice().features.has("timestamp-query")) {
      const { kernels, totalMs } = await profileKernels(step);
      row.profile = { kernels, totalMs };
    }
    log(
      `  ${name} batch ${batch} ${mode}: ${fmtRate(row.imagesPerSecond)} img/s ` +
        `(${steps} steps, ${fmtMs(row.stepMs)} ms/step)`,
    );
    if (compiled && compiled.mode !== "replayed") {
      throw new Error(`the training step stopped replaying: ${compiled.reason}`);
    }
    return row;
  } finally {
    compiled?.dispose();
    optimizer?.dispose();
    model.zeroGrad();
    model.dispose();
    images.dispose();
    sink.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Host cost

interface HostRow extends HostCost {
  model: string;
  batch: number;
  /** "replayed": the trainer's step, a CompiledTrainStep replaying its recorded commands. */
  mode: "train" | "replayed" | "infer";
  optimizer: string;
  /**
   * Microseconds per dispatch of encoding the step's own recorded commands from pre-made objects
   * (measureOwnFloor): what WebGPU charges for the step's real bindings.
   */
  ownFloorUs: number;
  /** perDispatchUs / ownFloorUs. */
  ownRatio: number;
}

/**
 * The CPU time of encoding one step with the GPU idle, against the floor of Deno's WebGPU: the
 * paper's ResNet-20 with SGD and the seed's model with Adam, training at batch 128, and ResNet-20
 * inference (the batch does not change what is encoded, only the buffers' sizes).
 */
async function runHostCost(clock: Clock, flags: Flags): Promise<HostRow[]> {
  const rows: HostRow[] = [];
  const cases = [
    { model: "resnet20", mode: "train", optimizer: "sgd" },
    { model: "resnet20", mode: "replayed", optimizer: "sgd" },
    { model: "labml", mode: "train", optimizer: "adam" },
    { model: "labml", mode: "replayed", optimizer: "adam" },
    { model: "resnet20", mode: "infer", optimizer: "-" },
  ] as const;
  const batch = 128;
  for (const c of cases) {
    const model: Module = buildModel(c.model, 0);
    const parameters = model.parameters();
    const optimizer = c.optimizer === "sgd"
      ? new SGD(parameters, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 })
      : c.optimizer === "adam"
      ? new Adam(parameters, { lr: 2.5e-4 })
      : null;
    const images = Tensor.randn([batch, 3, 32, 32], { seed: 1 });
    const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % 10);
    model.train(c.mode !== "infer");
    const compiled = c.mode === "replayed" && optimizer
      ? new CompiledTrainStep(model, optimizer)
      : null;
    const step = compiled
      ? () => {
        const { loss, correct } = compiled.run({ images, labels });
        loss.dispose();
        correct.dispose();
      }
      : () =>
        tidy(() => {
          if (optimizer) {
            optimizer.zeroGrad();
            crossEntropy(model.forward(images), labels).backward();
            optimizer.step();
          } else {
            noGrad(() => model.forward(images));
          }
        });
    try {
      if (compiled) {
        // Two ordinary steps and the recorded one, so that every measured step is a replay.
        for (let i = 0; i < 3; i++) step();
        if (compiled.mode !== "recorded") {
          throw new Error(`the compiled step did not record: ${compiled.reason}`);
        }
      }
      const samples = flags.quick ? 3 : 7;
      const cost = await measureHostCost(step, () => clock.sync(), batch, samples);
      if (compiled && compiled.mode !== "replayed") {
        throw new Error(`the compiled step stopped replaying: ${compiled.reason}`);
      }
      // A replayed step's own commands are the ordinary step's (measured with that row): its
      // recording cannot be recorded again.
      const ownFloorUs = compiled
        ? rows.find((r) => r.model === c.model && r.mode === "train")?.ownFloorUs ?? NaN
        : await measureOwnFloor(step, () => clock.sync(), samples);
      rows.push({
        model: c.model,
        batch,
        mode: c.mode,
        optimizer: c.optimizer,
        ...cost,
        ownFloorUs,
        ownRatio: cost.perDispatchUs / ownFloorUs,
      });
      log(
        `  host cost ${c.model} ${c.mode}: ${cost.dispatches} dispatches, ` +
          `${fmtMs(cost.encodeMs)} ms, ${cost.perDispatchUs.toFixed(1)} us/dispatch, ` +
          `${cost.ratio.toFixed(1)}x the floor, ${(cost.perDispatchUs / ownFloorUs).toFixed(1)}x ` +
          "its own objects' floor",
      );
    } finally {
      compiled?.dispose();
      optimizer?.dispose();
      model.zeroGrad();
      model.dispose();
      images.dispose();
    }
  }
  return rows;
}

function hostTable(rows: HostRow[]): string {
  return renderTable(
    "Host cost: encoding one step with the GPU idle, against Deno's WebGPU floor",
    [
      "model",
      "step",
      "dispatches",
      "encode ms",
      "us/dispatch",
      "floor us",
      "ratio",
      "own floor us",
      "own ratio",
      "ceiling img/s",
      "bind groups/step",
      "buffers/step",
      "uniform writes/step",
      "uploads/step",
    ],
    rows.map((r) => [
      r.model,
      `${r.mode} b${r.batch}${r.optimizer === "-" ? "" : ` ${r.optimizer}`}`,
      String(r.dispatches),
      fmtMs(r.encodeMs),
      r.perDispatchUs.toFixed(1),
      r.floorUs.toFixed(2),
      `${r.ratio.toFixed(1)}x`,
      r.ownFloorUs.toFixed(2),
      `${r.ownRatio.toFixed(1)}x`,
      fmtRate(r.ceilingImagesPerSecond),
      r.bindGroupsPerStep.toFixed(1),
      r.bufferCreationsPerStep.toFixed(1),
      r.uniformWritesPerStep.toFixed(1),
      r.uploadsPerStep.toFixed(1),
    ]),
    ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
  );
}

// ---------------------------------------------------------------------------------------------
// Targets and report

interface TargetRow {
  target: string;
  goal: string;
  measured: string;
  status: string;
}

function rateStatus(value: number | undefined, goal: number): string {
  if (value === undefined) return "not measured";
  if (value >= goal) return "met";
  return `gap: ${fmtPercent(value / goal)} of goal (needs ${(goal / value).toFixed(1)}x)`;
}

function hostTargets(host: HostRow[]): TargetRow[] {
  const row = (model: string, mode: string) =>
    host.find((r) => r.model === model && r.mode === mode);
  const goal = (
    target: string,
    r: HostRow | undefined,
    maxDispatches: number,
    maxRatio: number | null,
  ): TargetRow => ({
    target,
    goal: `<= ${maxDispatches} dispatches${maxRatio ? `, <= ${maxRatio}x the floor` : ""}`,
    measured: r
      ? `${r.dispatches} dispatches, ${r.ratio.toFixed(1)}x (${r.perDispatchUs.toFixed(1)} vs ` +
        `${r.floorUs.toFixed(2)} us)`
      : "-",
    status: !r
      ? "not measured"
      : r.dispatches <= maxDispatches && (maxRatio === null || r.ratio <= maxRatio)
      ? "met"
      : "not met",
  });
  const steady = host.length === 0
    ? undefined
    : host.reduce((worst, r) =>
      Math.max(worst, r.bindGroupsPerStep + r.bufferCreationsPerStep + r.uniformWritesPerStep), 0);
  // Training: the dispatch count of the ordinary step, the ratio of the trainer's (replayed) one.
  const train = (target: string, model: string, maxDispatches: number): TargetRow => {
    const eager = row(model, "train");
    const replayed = row(model, "replayed");
    const ratio = (r: HostRow | undefined) =>
      r
        ? `${r.ratio.toFixed(1)}x (${r.perDispatchUs.toFixed(1)} vs ${r.floorUs.toFixed(2)} us; ` +
          `${r.ownRatio.toFixed(1)}x its own objects' floor)`
        : "-";
    return {
      target,
      goal: `<= ${maxDispatches} dispatches, <= 4x the floor`,
      measured: eager
        ? `${eager.dispatches} dispatches; ordinary ${ratio(eager)}, replayed ${ratio(replayed)}`
        : "-",
      status: !eager || !replayed
        ? "not measured"
        : eager.dispatches > maxDispatches
        ? `not met (dispatches; ratio ${replayed.ratio <= 4 ? "met" : "not met"})`
        : replayed.ratio <= 4
        ? "met"
        : "not met (ratio)",
    };
  };
  return [
    train("host: ResNet-20 train b128 (SGD)", "resnet20", 160),
    train("host: labml train b128 (Adam)", "labml", 450),
    goal("host: ResNet-20 inference", row("resnet20", "infer"), 30, null),
    {
      target: "host: created per step after the first",
      goal: "0 bind groups, 0 buffers, 0 uniform writes (uploads of data aside)",
      measured: steady === undefined
        ? "-"
        : host.map((r) =>
          `${r.model} ${r.mode}: ${r.bindGroupsPerStep.toFixed(1)} / ` +
          `${r.bufferCreationsPerStep.toFixed(1)} / ${r.uniformWritesPerStep.toFixed(1)}`
        ).join("; "),
      status: steady === undefined ? "not measured" : steady === 0 ? "met" : "not met",
    },
  ];
}

function targets(kernels: KernelRow[], e2e: E2ERow[]): TargetRow[] {
  const find = (model: string, batch: number, mode: string) =>
    e2e.find((r) => r.model === model && r.batch === batch && r.mode === mode);
  const train = find("resnet20", 32, "train")?.imagesPerSecond;
  const infer = find("resnet20", 32, "infer")?.imagesPerSecond;
  const targetRuns = kernels.filter((r) => r.model.startsWith("target") && r.pass === "fwd")
    .map((r) => r.gflops!);
  const conv = targetRuns.length > 0 ? median(targetRuns) : undefined;
  const trainingRows = e2e.filter((r) => r.mode === "train");
  const worst = (key: keyof E2ERow) => Math.max(...trainingRows.map((r) => r[key] as number));
  let stepStatus = "not measured";
  let stepMeasured = "-";
  if (trainingRows.length > 0) {
    const submits = worst("syncStepSubmits");
    const waits = worst("syncStepWaits");
    const created = worst("bufferCreationsPerStep") + worst("poolAllocationsPerStep");
    stepMeasured = `${submits} submits, ${waits} wait, ${created} buffers/step`;
    stepStatus = submits <= 2 && waits <= 1 && created === 0 ? "met" : "not met";
  }
  return [
    {
      target: "ResNet-20 training, batch 32",
      goal: ">= 27.4 img/s (2x jax-js 13.7)",
      measured: train === undefined ? "-" : `${fmtRate(train)} img/s`,
      status: rateStatus(train, 27.4),
    },
    {
      target: "ResNet-20 inference, batch 32",
      goal: ">= 118 img/s (2x jax-js ~59)",
      measured: infer === undefined ? "-" : `${fmtRate(infer)} img/s`,
      status: rateStatus(infer, 118),
    },
    {
      target: "conv2d 3x3 16->16 32x32 batch 32 fwd",
      goal: ">= 25 GFLOP/s",
      measured: conv === undefined
        ? "-"
        : `${fmtRate(conv)} GFLOP/s (median of ${targetRuns.map(fmtRate).join(", ")})`,
      status: rateStatus(conv, 25),
    },
    {
      target: "training step (every model, batch)",
      goal: "<= 2 submits, <= 1 wait, 0 allocations",
      measured: stepMeasured,
      status: stepStatus,
    },
  ];
}

function kernelTable(rows: KernelRow[], peaks: Peaks): string {
  const header = [
    "kernel",
    "model",
    "shape",
    "layers",
    "pass",
    "disp",
    "reps",
    "ms",
    "GFLOP/s",
    "GB/s",
    "% peak",
  ];
  const align: Align[] = ["l", "l", "l", "r", "l", "r", "r", "r", "r", "r", "r"];
  const body = rows.map((r) => [
    r.family,
    r.model,
    r.shape,
    r.layers ? String(r.layers) : "",
    r.pass,
    String(r.dispatches),
    String(r.reps),
    fmtMs(r.ms),
    fmtRate(r.gflops),
    fmtRate(r.gbps),
    fmtPercent(r.fractionOfPeak),
  ]);
  const title = `Kernels (median ms per call; peak ${fmtRate(peaks.gflops)} GFLOP/s from ` +
    `${peaks.gflopsFrom}, ${fmtRate(peaks.gbps)} GB/s from ${peaks.gbpsFrom})`;
  return renderTable(title, header, body, align);
}

function e2eTable(rows: E2ERow[]): string {
  const header = [
    "model",
    "batch",
    "mode",
    "img/s",
    "ms/step",
    "steps",
    "encode ms",
    "GPU ms",
    "readback ms",
    "disp/step",
    "submits/step",
    "sync step",
    "new buffers/step",
    "peak MiB",
  ];
  const align: Align[] = ["l", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l", "r", "r"];
  const body = rows.map((r) => [
    r.model,
    String(r.batch),
    r.mode,
    fmtRate(r.imagesPerSecond),
    fmtMs(r.stepMs),
    String(r.timedSteps),
    fmtMs(r.encodeMs),
    fmtMs(r.gpuMs),
    fmtMs(r.readbackMs),
    String(r.dispatchesPerStep),
    String(r.submitsPerStep),
    `${r.syncStepSubmits} submits, ${r.syncStepWaits} wait`,
    String(r.bufferCreationsPerStep + r.poolAllocationsPerStep),
    (r.peakBytes / 2 ** 20).toFixed(1),
  ]);
  return renderTable(
    "End to end (img/s over pipelined steps with one readback at the end; encode/GPU/readback " +
      "from steps that wait for their own readback)",
    header,
    body,
    align,
  );
}

/** Kernels below this share of a step are summed into one row. */
const PROFILE_MIN_SHARE = 0.02;

function profileTable(rows: E2ERow[]): string {
  const header = ["model", "batch", "mode", "kernel", "calls", "ms/step", "% of step"];
  const align: Align[] = ["l", "r", "l", "l", "r", "r", "r"];
  const body: string[][] = [];
  for (const r of rows) {
    if (!r.profile) continue;
    const { kernels, totalMs } = r.profile;
    const shown = kernels.filter((k) => k.ms >= PROFILE_MIN_SHARE * totalMs);
    const rest = kernels.filter((k) => k.ms < PROFILE_MIN_SHARE * totalMs);
    const line = (kernel: string, calls: number, ms: number) =>
      body.push([
        r.model,
        String(r.batch),
        r.mode,
        kernel,
        String(calls),
        fmtMs(ms),
        fmtPercent(ms / totalMs),
      ]);
    for (const k of shown) line(k.kernel, k.calls, k.ms);
    if (rest.length > 0) {
      line(
        `(${rest.length} other kernels)`,
        rest.reduce((a, k) => a + k.calls, 0),
        rest.reduce((a, k) => a + k.ms, 0),
      );
    }
    line("(all)", kernels.reduce((a, k) => a + k.calls, 0), totalMs);
  }
  return renderTable(
    "Where a step's GPU time goes (one profiled step: a timestamped compute pass per dispatch)",
    header,
    body,
    align,
  );
}

async function main(): Promise<void> {
  const flags = parseFlags(Deno.args);
  const started = performance.now();
  const loadBefore = loadAverage();
  await initGPU({ kernels: flags.kernels });
  const adapter = adapterDescription();
  const family = kernelFamily();
  log(
    `adapter: ${adapter}; kernels: ${family}; load average ${loadBefore?.join(" ") ?? "unknown"}`,
  );
  const clock = new Clock();
  const overheadMs = await clock.calibrate();
  log(`idle readback round trip: ${fmtMs(overheadMs)} ms`);

  let kernels: KernelRow[] = [];
  let peaks: Peaks | null = null;
  if (flags.only === "all" || flags.only === "kernels") {
    ({ rows: kernels, peaks } = await runKernels(clock, flags));
  }

  const e2e: E2ERow[] = [];
  if (flags.only === "all" || flags.only === "e2e") {
    log("end to end");
    const batches = flags.batches ?? (flags.quick ? [32] : [32, 128]);
    for (const name of ["resnet20", "labml"]) {
      for (const batch of batches) {
        for (const mode of ["train", "infer"] as const) {
          e2e.push(await runEndToEnd(clock, name, batch, mode, flags));
        }
      }
    }
  }
  // Minutes per row on a software adapter: not part of --quick unless asked for by name.
  if (
    flags.only === "torchvision" ||
    (!flags.quick && (flags.only === "all" || flags.only === "e2e"))
  ) {
    log("end to end, torchvision's models at 224x224");
    for (const name of Object.keys(TORCHVISION)) {
      for (const [batch, mode] of [[1, "infer"], [32, "infer"], [32, "train"]] as const) {
        e2e.push(await runEndToEnd(clock, name, batch, mode, flags));
      }
    }
  }
  let host: HostRow[] = [];
  if (flags.only === "all" || flags.only === "host") {
    log("host cost");
    host = await runHostCost(clock, flags);
  }
  const loadAfter = loadAverage();
  const seconds = (performance.now() - started) / 1000;
  const goals = [
    ...(flags.only === "host" ? [] : targets(kernels, e2e)),
    ...hostTargets(host),
  ];

  if (flags.json) {
    const report = {
      date: new Date().toISOString(),
      adapter,
      kernelFamily: family,
      deno: Deno.version,
      flags,
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadAfter,
      seconds,
      readbackRoundTripMs: overheadMs,
      peaks,
      kernels,
      endToEnd: e2e,
      hostCost: host,
      targets: goals,
    };
    await Deno.writeTextFile(flags.json, JSON.stringify(report, null, 2) + "\n");
    log(`wrote ${flags.json}`);
  }

  const out: string[] = [
    `deno task bench${flags.quick ? " --quick" : ""}: ${adapter}, kernels: ${family}, ` +
    `Deno ${Deno.version.deno}, ` +
    `${seconds.toFixed(0)} s, load average ${loadBefore?.[0] ?? "?"} before, ` +
    `${loadAfter?.[0] ?? "?"} after; idle readback ${fmtMs(overheadMs)} ms`,
  ];
  if (peaks) {
    out.push(
      "",
      `Peaks: matmul ${fmtRate(peaks.matmulGflops)} GFLOP/s, copy ${
        fmtRate(peaks.copyGbps)
      } GB/s, ` +
        `elementwise add ${fmtRate(peaks.elementwiseGbps)} GB/s`,
      "",
      kernelTable(kernels, peaks),
    );
  }
  if (e2e.length > 0) out.push("", e2eTable(e2e));
  if (e2e.some((r) => r.profile)) out.push("", profileTable(e2e));
  if (host.length > 0) out.push("", hostTable(host));
  out.push(
    "",
    renderTable(
      "Targets",
      ["target", "goal", "measured", "status"],
      goals.map((g) => [g.target, g.goal, g.measured, g.status]),
      ["l", "l", "l", "l"],
    ),
  );
  console.log(out.join("\n"));
}

if (import.meta.main) await main();
