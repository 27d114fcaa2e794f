/**
 * Peer script: jax-js on its WebGPU device. ResNet-20 written functionally with
 * `lax.convGeneralDilated` (NCHW, OIHW, conv biases), batch norm from batch statistics, and one
 * `jit`-compiled training step: `valueAndGrad` of the cross-entropy (the batch statistics as aux),
 * SGD with momentum, and the running-statistics update. Run by `run.ts`; prints one result line.
 *
 * jax-js moves ownership of every array passed to a function, so each value used twice is passed
 * as `.ref` the first time; its arrays are lazy, and work that nothing waits on is never run, so
 * the timed loops end with `blockUntilReady` on everything they produced.
 *
 * @module
 */
// The peer is pinned here, not in deno.json: it is benchmark-only, never a library dependency.
import {
  blockUntilReady,
  defaultDevice,
  init,
  jit,
  lax,
  nn,
  numpy as np,
  tree,
  valueAndGrad,
  // deno-lint-ignore no-import-prefix
} from "npm:@jax-js/jax@0.1.25";
import {
  BATCH,
  BN,
  CLASSES,
  CONV,
  CONV_FLOPS,
  countGpuCalls,
  describeAdapter,
  emit,
  emptyResult,
  IMAGE,
  normals,
  part,
  planFromArgs,
  progress,
  randomBatch,
  resnet20Blocks,
  SGD,
  since,
} from "./common.ts";

const VERSION = "0.1.25";
const plan = planFromArgs();
const result = emptyResult("jax-js", VERSION, plan);
const log = (message: string) => progress("jax-js", message);
const gpuCalls = countGpuCalls();

type Params = Record<string, np.Array>;

/** Parameters of ResNet-20 under flat names, and the names of its batch norms. */
function initParams(): { params: Params; running: Params; norms: string[] } {
  const params: Params = {};
  const running: Params = {};
  const norms: string[] = [];
  let seed = 10;
  const conv = (name: string, i: number, o: number, k: number) => {
    const std = Math.sqrt(2 / (i * k * k));
    params[`${name}.w`] = np.array(normals(o * i * k * k, seed++, std), { shape: [o, i, k, k] });
    params[`${name}.b`] = np.zeros([o]);
  };
  const norm = (name: string, c: number) => {
    params[`${name}.gamma`] = np.ones([c]);
    params[`${name}.beta`] = np.zeros([c]);
    running[`${name}.mean`] = np.zeros([c]);
    running[`${name}.var`] = np.ones([c]);
    norms.push(name);
  };
  conv("stem", IMAGE.channels, 16, 3);
  norm("stem.bn", 16);
  for (const b of resnet20Blocks()) {
    conv(`${b.name}.conv1`, b.inChannels, b.outChannels, 3);
    norm(`${b.name}.bn1`, b.outChannels);
    conv(`${b.name}.conv2`, b.outChannels, b.outChannels, 3);
    norm(`${b.name}.bn2`, b.outChannels);
    if (b.projection) {
      conv(`${b.name}.proj`, b.inChannels, b.outChannels, 1);
      norm(`${b.name}.proj.bn`, b.outChannels);
    }
  }
  params["fc.w"] = np.array(normals(64 * CLASSES, seed++, 1 / 8), { shape: [64, CLASSES] });
  params["fc.b"] = np.zeros([CLASSES]);
  return { params, running, norms };
}

const channel = (v: np.Array) => v.reshape([1, v.shape[0], 1, 1]);

function conv(x: np.Array, p: Params, name: string, stride: number, pad: number): np.Array {
  const y = lax.convGeneralDilated(x, p[`${name}.w`], [stride, stride], [[pad, pad], [pad, pad]]);
  return y.add(channel(p[`${name}.b`]));
}

/**
 * Batch norm. In training (`stats` given) it normalizes with the batch's mean and biased variance
 * and stores the mean and the unbiased variance in `stats`; in eval mode it uses `running`.
 */
function batchNorm(
  x: np.Array,
  p: Params,
  name: string,
  running: Params | null,
  stats: Params | null,
): np.Array {
  const gamma = channel(p[`${name}.gamma`]);
  const beta = channel(p[`${name}.beta`]);
  if (!stats) {
    const mean = channel(running![`${name}.mean`]);
    const scale = gamma.mul(np.reciprocal(np.sqrt(channel(running![`${name}.var`]).add(BN.eps))));
    return x.sub(mean).mul(scale).add(beta);
  }
  // The running variance is unbiased (PyTorch's rule); the normalization uses the biased one.
  const count = x.shape[0] * x.shape[2] * x.shape[3];
  const mean = np.mean(x.ref, [0, 2, 3], { keepdims: true });
  const centered = x.sub(mean.ref);
  const variance = np.mean(np.square(centered.ref), [0, 2, 3], { keepdims: true });
  stats[`${name}.mean`] = mean.reshape([mean.size]);
  stats[`${name}.var`] = variance.ref.reshape([variance.size]).mul(count / (count - 1));
  return centered.mul(np.reciprocal(np.sqrt(variance.add(BN.eps)))).mul(gamma).add(beta);
}

/** ResNet-20's logits `[N, 10]` for images `[N, 3, 32, 32]`. */
function forward(p: Params, x: np.Array, running: Params | null, stats: Params | null): np.Array {
  let h = nn.relu(batchNorm(conv(x, p, "stem", 1, 1), p, "stem.bn", running, stats));
  for (const b of resnet20Blocks()) {
    const shortcut = b.projection
      ? batchNorm(
        conv(h.ref, p, `${b.name}.proj`, b.stride, 0),
        p,
        `${b.name}.proj.bn`,
        running,
        stats,
      )
      : h.ref;
    let y = nn.relu(
      batchNorm(conv(h, p, `${b.name}.conv1`, b.stride, 1), p, `${b.name}.bn1`, running, stats),
    );
    y = batchNorm(conv(y, p, `${b.name}.conv2`, 1, 1), p, `${b.name}.bn2`, running, stats);
    h = nn.relu(y.add(shortcut));
  }
  const pooled = np.mean(h, [2, 3]);
  return np.matmul(pooled, p["fc.w"]).add(p["fc.b"]);
}

/** Mean cross-entropy of `logits` against one-hot targets, and the batch statistics (aux). */
function lossFn(p: Params, x: np.Array, oneHot: np.Array): [np.Array, Params] {
  const stats: Params = {};
  const logits = forward(p, x, null, stats);
  const loss = np.sum(nn.logSoftmax(logits, -1).mul(oneHot)).mul(-1 / BATCH);
  return [loss, stats];
}

const lossAndGrad = valueAndGrad(lossFn, { hasAux: true });

/** One SGD step with momentum (PyTorch's rule: `buf = m * buf + g; p -= lr * buf`). */
const trainStep = jit(
  (p: Params, momentum: Params, running: Params, x: np.Array, oneHot: np.Array) => {
    const [[loss, stats], grads] = lossAndGrad(tree.ref(p), x, oneHot);
    const nextParams: Params = {};
    const nextMomentum: Params = {};
    for (const key of Object.keys(p)) {
      const buf = momentum[key].mul(SGD.momentum).add(grads[key]);
      nextParams[key] = p[key].sub(buf.ref.mul(SGD.lr));
      nextMomentum[key] = buf;
    }
    const nextRunning: Params = {};
    for (const key of Object.keys(running)) {
      nextRunning[key] = running[key].mul(1 - BN.momentum).add(stats[key].mul(BN.momentum));
    }
    return [nextParams, nextMomentum, nextRunning, loss] as [Params, Params, Params, np.Array];
  },
);

const inferStep = jit((p: Params, running: Params, x: np.Array) => forward(p, x, running, null));

await part(result, "init", async () => {
  const devices = await init("webgpu");
  if (!devices.includes("webgpu")) throw new Error(`no webgpu device (got ${devices})`);
  defaultDevice("webgpu");
  result.adapter = await describeAdapter();
});

await part(result, "train", async () => {
  let { params, running } = initParams();
  result.params = Object.values(params).reduce((s, a) => s + a.size, 0);
  let momentum: Params = tree.map((a: np.Array) => np.zerosLike(a.ref), params) as Params;
  const batch = randomBatch();
  const x = np.array(batch.images, { shape: [BATCH, IMAGE.channels, IMAGE.height, IMAGE.width] });
  const oneHot = np.array(batch.oneHot, { shape: [BATCH, CLASSES] });
  const step = () => {
    const [p, m, r, loss] = trainStep(params, momentum, running, x.ref, oneHot.ref);
    params = p;
    momentum = m;
    running = r;
    return loss;
  };
  for (let i = 0; i < plan.warmup; i++) {
    const start = performance.now();
    const loss = step();
    await blockUntilReady([params, momentum, running]);
    await loss.data();
    result.warmupSeconds.push(since(start));
    log(`train warm-up step ${i + 1}: ${since(start).toFixed(2)} s`);
  }
  const before = gpuCalls();
  const start = performance.now();
  let loss: np.Array | null = null;
  for (let i = 0; i < plan.trainSteps; i++) {
    loss?.dispose();
    loss = step();
  }
  await blockUntilReady([params, momentum, running]);
  result.loss = (await loss!.data())[0];
  const seconds = since(start);
  const after = gpuCalls();
  result.trainSecondsPerStep = seconds / plan.trainSteps;
  result.trainImagesPerSec = (BATCH * plan.trainSteps) / seconds;
  result.dispatchesPerTrainStep = (after.dispatches - before.dispatches) / plan.trainSteps;
  result.submitsPerTrainStep = (after.submits - before.submits) / plan.trainSteps;
  log(`train: ${result.trainImagesPerSec.toFixed(2)} images/s, loss ${result.loss.toFixed(4)}`);

  const forwardOnce = () => inferStep(tree.ref(params), tree.ref(running), x.ref);
  for (let i = 0; i < plan.warmup; i++) await forwardOnce().data();
  const inferBefore = gpuCalls();
  const inferStart = performance.now();
  const outputs: np.Array[] = [];
  for (let i = 0; i < plan.inferSteps; i++) outputs.push(forwardOnce());
  await blockUntilReady(outputs);
  await outputs.pop()!.data();
  const inferSeconds = since(inferStart);
  result.dispatchesPerInferStep = (gpuCalls().dispatches - inferBefore.dispatches) /
    plan.inferSteps;
  tree.dispose(outputs);
  result.inferImagesPerSec = (BATCH * plan.inferSteps) / inferSeconds;
  log(`inference: ${result.inferImagesPerSec.toFixed(2)} images/s`);
  tree.dispose([params, momentum, running, x, oneHot]);
});

await part(result, "conv", async () => {
  const size = CONV.n * CONV.channels * CONV.size * CONV.size;
  const x = np.array(normals(size, 3), { shape: [CONV.n, CONV.channels, CONV.size, CONV.size] });
  const w = np.array(normals(CONV.channels * CONV.channels * 9, 4, 0.1), {
    shape: [CONV.channels, CONV.channels, CONV.kernel, CONV.kernel],
  });
  const run = jit((x: np.Array, w: np.Array) => lax.conv(x, w, [1, 1], [[1, 1], [1, 1]]));
  for (let i = 0; i < 2; i++) await run(x.ref, w.ref).data();
  const start = performance.now();
  const outputs: np.Array[] = [];
  for (let i = 0; i < plan.convReps; i++) outputs.push(run(x.ref, w.ref));
  await blockUntilReady(outputs);
  await outputs.pop()!.data();
  const seconds = since(start);
  tree.dispose([outputs, x, w]);
  result.convGflops = (CONV_FLOPS * plan.convReps) / seconds / 1e9;
  log(`conv: ${result.convGflops.toFixed(2)} GFLOP/s`);
});

result.notes.push("NCHW; jit train step (grad + SGD + BN running stats)");
emit(result);
