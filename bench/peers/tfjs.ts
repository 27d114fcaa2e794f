/**
 * Peer script: TensorFlow.js on its WebGPU backend. ResNet-20 built with `tf.layers` (NHWC, its
 * native layout; conv biases on; batch norm with momentum 0.9 = PyTorch's 0.1 and epsilon 1e-5),
 * trained with `optimizer.minimize` over `model.apply(x, { training: true })`, SGD with momentum
 * (`tf.train.momentum`, the same rule as PyTorch's). Run by `run.ts`; prints one result line.
 *
 * @module
 */
// The peers are pinned here, not in deno.json: they are benchmark-only, never library dependencies.
// deno-lint-ignore no-import-prefix
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
// deno-lint-ignore no-import-prefix
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
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
  nchwToNhwc,
  normals,
  part,
  planFromArgs,
  progress,
  randomBatch,
  resnet20Blocks,
  SGD,
  since,
} from "./common.ts";

const BACKEND_VERSION = "4.22.0";
const plan = planFromArgs();
const result = emptyResult(
  "TensorFlow.js (webgpu)",
  `${tf.version.tfjs} + backend-webgpu ${BACKEND_VERSION}`,
  plan,
);
const log = (message: string) => progress("tfjs", message);
const gpuCalls = countGpuCalls();

/** ResNet-20 as a functional `tf.LayersModel` on `[N, 32, 32, 3]` images. */
function buildModel(): tf.LayersModel {
  let seed = 10;
  const conv = (filters: number, kernelSize: number, strides: number) =>
    tf.layers.conv2d({
      filters,
      kernelSize,
      strides,
      padding: "same",
      useBias: true,
      kernelInitializer: tf.initializers.heNormal({ seed: seed++ }),
    });
  const norm = () =>
    tf.layers.batchNormalization({ axis: -1, momentum: 1 - BN.momentum, epsilon: BN.eps });
  const relu = () => tf.layers.reLU();
  const apply = (layer: tf.layers.Layer, x: tf.SymbolicTensor) =>
    layer.apply(x) as tf.SymbolicTensor;

  const input = tf.input({ shape: [IMAGE.height, IMAGE.width, IMAGE.channels] });
  let h = apply(relu(), apply(norm(), apply(conv(16, 3, 1), input)));
  for (const b of resnet20Blocks()) {
    const shortcut = b.projection ? apply(norm(), apply(conv(b.outChannels, 1, b.stride), h)) : h;
    let y = apply(relu(), apply(norm(), apply(conv(b.outChannels, 3, b.stride), h)));
    y = apply(norm(), apply(conv(b.outChannels, 3, 1), y));
    h = apply(relu(), tf.layers.add().apply([y, shortcut]) as tf.SymbolicTensor);
  }
  const pooled = apply(tf.layers.globalAveragePooling2d({}), h);
  const dense = tf.layers.dense({
    units: CLASSES,
    kernelInitializer: tf.initializers.glorotNormal({ seed }),
  });
  const logits = apply(dense, pooled);
  return tf.model({ inputs: input, outputs: logits });
}

await part(result, "init", async () => {
  if (!(await tf.setBackend("webgpu"))) throw new Error("tf.setBackend('webgpu') failed");
  await tf.ready();
  result.adapter = await describeAdapter();
});

await part(result, "train", async () => {
  const model = buildModel();
  result.params = model.trainableWeights.reduce(
    (s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1),
    0,
  );
  const frozen = model.countParams() - result.params;
  // Stride-2 "same" pads 0 before and 1 after, PyTorch's padding 1 pads both: same shapes, FLOPs.
  result.notes.push(`NHWC; tf.layers; +${frozen} BN moving stats (not counted)`);
  const optimizer = tf.train.momentum(SGD.lr, SGD.momentum);
  const batch = randomBatch();
  const x = tf.tensor4d(
    nchwToNhwc(batch.images, BATCH, IMAGE.channels, IMAGE.height, IMAGE.width),
    [BATCH, IMAGE.height, IMAGE.width, IMAGE.channels],
  );
  const oneHot = tf.tensor2d(batch.oneHot, [BATCH, CLASSES]);
  const step = () =>
    optimizer.minimize(() => {
      const logits = model.apply(x, { training: true }) as tf.Tensor;
      return tf.losses.softmaxCrossEntropy(oneHot, logits) as tf.Scalar;
    }, true)!;

  for (let i = 0; i < plan.warmup; i++) {
    const start = performance.now();
    const loss = step();
    await loss.data();
    loss.dispose();
    result.warmupSeconds.push(since(start));
    log(`train warm-up step ${i + 1}: ${since(start).toFixed(2)} s`);
  }
  const before = gpuCalls();
  const start = performance.now();
  let loss: tf.Scalar | null = null;
  for (let i = 0; i < plan.trainSteps; i++) {
    loss?.dispose();
    loss = step();
  }
  result.loss = (await loss!.data())[0];
  const seconds = since(start);
  const after = gpuCalls();
  loss!.dispose();
  result.trainSecondsPerStep = seconds / plan.trainSteps;
  result.trainImagesPerSec = (BATCH * plan.trainSteps) / seconds;
  result.dispatchesPerTrainStep = (after.dispatches - before.dispatches) / plan.trainSteps;
  result.submitsPerTrainStep = (after.submits - before.submits) / plan.trainSteps;
  log(`train: ${result.trainImagesPerSec.toFixed(2)} images/s, loss ${result.loss.toFixed(4)}`);

  if (plan.profile) {
    const info = await tf.profile(async () => {
      const loss = step();
      await loss.data();
      loss.dispose();
    });
    result.notes.push(`tf.profile: ${info.kernels.length} kernels/step`);
    log(`tf.profile: ${info.kernels.length} kernels in one training step`);
  }

  const forward = () => tf.tidy(() => model.apply(x, { training: false }) as tf.Tensor);
  for (let i = 0; i < plan.warmup; i++) {
    const logits = forward();
    await logits.data();
    logits.dispose();
  }
  const inferBefore = gpuCalls();
  const inferStart = performance.now();
  let logits: tf.Tensor | null = null;
  for (let i = 0; i < plan.inferSteps; i++) {
    logits?.dispose();
    logits = forward();
  }
  await logits!.data();
  const inferSeconds = since(inferStart);
  logits!.dispose();
  result.inferImagesPerSec = (BATCH * plan.inferSteps) / inferSeconds;
  result.dispatchesPerInferStep = (gpuCalls().dispatches - inferBefore.dispatches) /
    plan.inferSteps;
  log(`inference: ${result.inferImagesPerSec.toFixed(2)} images/s`);
  tf.dispose([x, oneHot]);
  model.dispose();
  optimizer.dispose();
});

await part(result, "conv", async () => {
  const x = tf.tensor4d(
    nchwToNhwc(
      normals(CONV.n * CONV.channels * CONV.size * CONV.size, 3),
      CONV.n,
      CONV.channels,
      CONV.size,
      CONV.size,
    ),
    [CONV.n, CONV.size, CONV.size, CONV.channels],
  );
  const w = tf.tensor4d(normals(CONV.channels * CONV.channels * 9, 4, 0.1), [
    CONV.kernel,
    CONV.kernel,
    CONV.channels,
    CONV.channels,
  ]);
  const run = () => tf.conv2d(x, w, 1, "same");
  for (let i = 0; i < 2; i++) {
    const y = run();
    await y.data();
    y.dispose();
  }
  const start = performance.now();
  let y: tf.Tensor | null = null;
  for (let i = 0; i < plan.convReps; i++) {
    y?.dispose();
    y = run();
  }
  await y!.data();
  const seconds = since(start);
  tf.dispose([x, w, y!]);
  result.convGflops = (CONV_FLOPS * plan.convReps) / seconds / 1e9;
  log(`conv: ${result.convGflops.toFixed(2)} GFLOP/s`);
});

emit(result);
