/**
 * Peer script: this library (`@resnet/webgpu`, imported from the working tree). ResNet-20 from
 * `resnet(20)`, the training step as `src/train/trainer.ts` takes it (one `tidy`, zero the
 * gradients, forward, cross-entropy, backward, SGD step). Run by `run.ts`; prints one result line.
 *
 * @module
 */
import {
  adapterDescription,
  conv2d,
  crossEntropy,
  initGPU,
  noGrad,
  optim,
  resnet,
  Tensor,
  tidy,
} from "../../mod.ts";
import denoJson from "../../deno.json" with { type: "json" };
import {
  BATCH,
  CONV,
  CONV_FLOPS,
  countGpuCalls,
  emit,
  emptyResult,
  IMAGE,
  normals,
  part,
  planFromArgs,
  progress,
  randomBatch,
  SGD,
  since,
} from "./common.ts";

const NAME = "ours (@resnet/webgpu)";
const plan = planFromArgs();
const result = emptyResult(NAME, denoJson.version, plan);
const log = (message: string) => progress("ours", message);
const gpuCalls = countGpuCalls();

await part(result, "init", async () => {
  await initGPU();
  result.adapter = adapterDescription();
});

await part(result, "train", async () => {
  const model = resnet(20, { seed: 0 });
  model.train();
  const params = model.parameters();
  result.params = params.reduce((s, p) => s + p.size, 0);
  const opt = new optim.SGD(params, { lr: SGD.lr, momentum: SGD.momentum });
  const batch = randomBatch();
  const x = Tensor.from(batch.images, [BATCH, IMAGE.channels, IMAGE.height, IMAGE.width]);
  const step = () =>
    tidy(() => {
      opt.zeroGrad();
      const loss = crossEntropy(model.forward(x), batch.labels);
      loss.backward();
      opt.step();
      return loss;
    });

  for (let i = 0; i < plan.warmup; i++) {
    const start = performance.now();
    const loss = step();
    await loss.item();
    loss.dispose();
    result.warmupSeconds.push(since(start));
    log(`train warm-up step ${i + 1}: ${since(start).toFixed(2)} s`);
  }
  const before = gpuCalls();
  const start = performance.now();
  let loss: Tensor | null = null;
  for (let i = 0; i < plan.trainSteps; i++) {
    loss?.dispose();
    loss = step();
  }
  result.loss = await loss!.item();
  const seconds = since(start);
  const after = gpuCalls();
  loss!.dispose();
  result.trainSecondsPerStep = seconds / plan.trainSteps;
  result.trainImagesPerSec = (BATCH * plan.trainSteps) / seconds;
  result.dispatchesPerTrainStep = (after.dispatches - before.dispatches) / plan.trainSteps;
  result.submitsPerTrainStep = (after.submits - before.submits) / plan.trainSteps;
  log(`train: ${result.trainImagesPerSec.toFixed(2)} images/s, loss ${result.loss.toFixed(4)}`);

  model.eval();
  const forward = () => tidy(() => noGrad(() => model.forward(x)));
  for (let i = 0; i < plan.warmup; i++) {
    const logits = forward();
    await logits.toArray();
    logits.dispose();
  }
  const inferBefore = gpuCalls();
  const inferStart = performance.now();
  let logits: Tensor | null = null;
  for (let i = 0; i < plan.inferSteps; i++) {
    logits?.dispose();
    logits = forward();
  }
  await logits!.toArray();
  const inferSeconds = since(inferStart);
  logits!.dispose();
  result.inferImagesPerSec = (BATCH * plan.inferSteps) / inferSeconds;
  result.dispatchesPerInferStep = (gpuCalls().dispatches - inferBefore.dispatches) /
    plan.inferSteps;
  log(`inference: ${result.inferImagesPerSec.toFixed(2)} images/s`);
  x.dispose();
});

await part(result, "conv", async () => {
  const x = Tensor.from(normals(CONV.n * CONV.channels * CONV.size * CONV.size, 3), [
    CONV.n,
    CONV.channels,
    CONV.size,
    CONV.size,
  ]);
  const w = Tensor.from(normals(CONV.channels * CONV.channels * 9, 4, 0.1), [
    CONV.channels,
    CONV.channels,
    CONV.kernel,
    CONV.kernel,
  ]);
  const run = () => noGrad(() => conv2d(x, w, null, { padding: 1 }));
  for (let i = 0; i < 2; i++) {
    const y = run();
    await y.toArray();
    y.dispose();
  }
  const start = performance.now();
  let y: Tensor | null = null;
  for (let i = 0; i < plan.convReps; i++) {
    y?.dispose();
    y = run();
  }
  await y!.toArray();
  const seconds = since(start);
  y!.dispose();
  result.convGflops = (CONV_FLOPS * plan.convReps) / seconds / 1e9;
  log(`conv: ${result.convGflops.toFixed(2)} GFLOP/s`);
});

result.notes.push("NCHW; one submit for all timed steps (readback at the end)");
emit(result);
