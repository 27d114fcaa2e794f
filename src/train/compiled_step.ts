/**
 * A training step recorded once and replayed: {@link CompiledTrainStep}.
 *
 * @module
 */
import { noGrad } from "../autograd.ts";
import { pinBuffers, unpinBuffers } from "../gpu/buffer_pool.ts";
import {
  flush,
  markRestagePoint,
  type Recording,
  releaseRecording,
  replayRecording,
  startRecording,
  stopRecording,
  writeBuffer,
} from "../gpu/dispatch.ts";
import { hasForwardHooks, type Module, moduleTreeVersion } from "../nn/module.ts";
import { mulScalar } from "../ops/elementwise.ts";
import { correctCount, crossEntropy } from "../ops/loss.ts";
import { clipGradNorm } from "../optim/clip_grad.ts";
import { type Optimizer, optimizerState } from "../optim/optimizer.ts";
import { tidy } from "../scope.ts";
import { adoptPinnedTensor, formatShape, sameShape, Tensor } from "../tensor.ts";
import type { TrainStepResult } from "./step.ts";

/** Recordings that could not be replayed before a CompiledTrainStep stops trying. */
const MAX_FAILED_RECORDINGS = 3;

/** Options of {@link CompiledTrainStep}. */
export interface CompiledTrainStepOptions {
  /**
   * The loss of the batch as a scalar tensor, from the model's output `[N, classes]` and the
   * labels as a float tensor `[N]` of class indices (what {@link crossEntropy} takes). It must
   * only run GPU ops: no readback, no upload. Default: {@link crossEntropy} with mean reduction.
   */
  loss?: (output: Tensor, labels: Tensor) => Tensor;
  /** Clips the gradients' total 2-norm to this before the update ({@link clipGradNorm}). */
  clipGradNorm?: number;
  /**
   * Steps run as usual before the step that is recorded, so that the buffer pool and the
   * optimizer's state have settled; default 2, at least 1.
   */
  warmupSteps?: number;
  /**
   * Scalar tensors (shape `[]`) that every run adds its results into on the GPU, as part of the
   * recorded work: the batch's mean loss times its size into `loss`, its correct count into
   * `correct` (an epoch's running sums, as `train()` keeps them). A loop that keeps its sums this
   * way runs no op of its own per step. They must stay alive while the step is used; resetting
   * them in place between runs (`fill(0)`) is fine.
   */
  sums?: { loss: Tensor; correct: Tensor };
}

/** How the last {@link CompiledTrainStep.run} ran. */
export type CompiledStepMode = "eager" | "recorded" | "replayed";

/**
 * A training step that runs as {@link trainStep} does for its first steps, records the GPU
 * commands of the next one (the forward pass, the loss, the backward pass, the gradient clipping,
 * the accuracy count and the optimizer's update), and from then on replays those commands without
 * the JavaScript that produced them, the idea of CUDA graphs: a replayed step costs the host
 * little more than WebGPU's own cost per dispatch, where running the ops costs several times
 * that. Only the optimizer's `step()` runs again on a replay, encoding nothing: it refreshes the
 * values that change per step (the learning rate a schedule sets, Adam's step counts) in the
 * uniform slots the recorded update reads. Replayed and ordinary steps compute the same values,
 * bit for bit.
 *
 * What replaying needs, and what the step does when it is not so:
 * - A batch of the recorded shape: its images are copied into the step's own input tensor and
 *   its labels uploaded into the step's label tensor. A batch of another shape (an epoch's last,
 *   smaller one) runs as an ordinary step.
 * - The model and optimizer as recorded: the same training mode in every module, no submodule
 *   replaced, no forward hook added or removed, the same parameters requiring gradients, the
 *   same optimizer state tensors (an optimizer `loadStateDict` that drops a parameter's state, or
 *   its `dispose()`, replaces them). After a change the step runs ordinarily again and records
 *   anew.
 * - No forward hooks (their JavaScript would not run on a replay) and a loss that only runs GPU
 *   ops. Otherwise every step runs ordinarily; {@link CompiledTrainStep.reason} says why.
 *
 * The recorded work keeps the buffers it uses until {@link CompiledTrainStep.dispose}: other work
 * (an evaluation between epochs) takes other buffers, so the GPU memory of a step's
 * intermediates is held twice while both exist. The returned scalars are the recorded step's
 * outputs: the next run overwrites them, so read them (or add them into running sums) before it.
 * After a run each parameter's `grad` holds that step's gradient, as after {@link trainStep}.
 *
 * @example
 * ```ts
 * import { initGPU, resnet, Tensor } from "@resnet/webgpu";
 * import { SGD } from "@resnet/webgpu/optim";
 * import { CompiledTrainStep } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = resnet(8, { numClasses: 4, seed: 0 });
 * const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
 * const step = new CompiledTrainStep(model, optimizer);
 * const images = Tensor.randn([8, 3, 8, 8], { seed: 1 });
 * const labels = new Int32Array([0, 1, 2, 3, 0, 1, 2, 3]);
 * const modes: string[] = [];
 * for (let i = 0; i < 5; i++) {
 *   const { loss, correct } = step.run({ images, labels });
 *   modes.push(step.mode);
 *   if (i === 4) console.log(await loss.item(), await correct.item());
 * }
 * console.log(modes); // ["eager", "eager", "recorded", "replayed", "replayed"]
 * step.dispose();
 * ```
 */
export class CompiledTrainStep {
  readonly #model: Module;
  readonly #optimizer: Optimizer;
  readonly #loss: (output: Tensor, labels: Tensor) => Tensor;
  readonly #clip: number | undefined;
  readonly #warmup: number;
  readonly #sums: { loss: Tensor; correct: Tensor } | null;
  #eagerRuns = 0;
  #mode: CompiledStepMode = "eager";
  #reason: string | null = null;
  #failedRecordings = 0;
  #graph: RecordedGraph | null = null;
  #labelScratch = new Float32Array(0);
  // The model's class count, known from its first output.
  #classes: number | null = null;
  // The modules of the tree at #treeVersion, to compare their training flags cheaply.
  #modules: Module[] = [];
  #treeVersion = -1;
  #disposed = false;

  /**
   * A compiled step for `model` and `optimizer` (which must update the model's parameters).
   *
   * @throws {RangeError} when `warmupSteps` is not an integer >= 1, `clipGradNorm` is not a
   *   finite number >= 0, or `sums` does not hold two scalar tensors.
   */
  constructor(model: Module, optimizer: Optimizer, options: CompiledTrainStepOptions = {}) {
    const warmup = options.warmupSteps ?? 2;
    if (!Number.isInteger(warmup) || warmup < 1) {
      throw new RangeError(`CompiledTrainStep: warmupSteps must be an integer >= 1, got ${warmup}`);
    }
    const clip = options.clipGradNorm;
    if (clip !== undefined && !(typeof clip === "number" && clip >= 0 && Number.isFinite(clip))) {
      throw new RangeError(
        `CompiledTrainStep: clipGradNorm must be a finite number >= 0, got ${clip}`,
      );
    }
    const sums = options.sums;
    if (sums !== undefined) {
      for (const name of ["loss", "correct"] as const) {
        const t = sums?.[name];
        if (!(t instanceof Tensor) || t.size !== 1 || t.ndim !== 0) {
          throw new RangeError(
            `CompiledTrainStep: sums.${name} must be a scalar Tensor (shape []), got ` +
              (t instanceof Tensor ? `shape ${formatShape(t.shape)}` : String(t)),
          );
        }
      }
    }
    this.#model = model;
    this.#optimizer = optimizer;
    this.#sums = sums ? { loss: sums.loss, correct: sums.correct } : null;
    this.#loss = options.loss ?? ((output, labels) => crossEntropy(output, labels));
    this.#clip = clip;
    this.#warmup = warmup;
  }

  /** How the last {@link CompiledTrainStep.run} ran: ordinarily, recording, or replayed. */
  get mode(): CompiledStepMode {
    return this.#mode;
  }

  /** Why the step cannot be recorded or replayed (then every run is ordinary), or null. */
  get reason(): string | null {
    return this.#reason;
  }

  /**
   * One training step on `batch`, as {@link trainStep}: clears the gradients, runs the model,
   * the loss and the backward pass, clips, updates the parameters, and submits the work without
   * waiting. The returned scalars are on the GPU; see the class notes for how long they hold.
   *
   * @throws {TypeError} when `batch.images` is not a Tensor or `batch.labels` not an Int32Array.
   * @throws {RangeError} when the label count differs from the batch size, or a label is outside
   *   the model's classes.
   * @throws {Error} after {@link CompiledTrainStep.dispose}, or when the optimizer's `step()`
   *   no longer repeats the recorded update for a reason the step could not see beforehand (the
   *   next run records anew).
   */
  run(batch: { images: Tensor; labels: Int32Array }): TrainStepResult {
    if (this.#disposed) throw new Error("CompiledTrainStep.run(): the step was disposed");
    const { images, labels } = batch ?? {};
    if (!(images instanceof Tensor)) {
      throw new TypeError(`CompiledTrainStep.run(): batch.images must be a Tensor, got ${images}`);
    }
    if (!(labels instanceof Int32Array)) {
      throw new TypeError("CompiledTrainStep.run(): batch.labels must be an Int32Array");
    }
    if (labels.length !== images.shape[0]) {
      throw new RangeError(
        `CompiledTrainStep.run(): ${labels.length} labels for a batch of images ` +
          formatShape(images.shape),
      );
    }
    if (this.#sums && (this.#sums.loss.disposed || this.#sums.correct.disposed)) {
      throw new Error(
        "CompiledTrainStep.run(): a tensor of options.sums was disposed; keep the sums alive " +
          "while the step is used",
      );
    }
    const graph = this.#graph;
    if (graph && !this.#replayable(graph, images)) {
      if (sameShape(graph.inputShape, images.shape)) {
        // The model changed (see the class notes): record anew after a settling step.
        this.#release();
        this.#eagerRuns = this.#warmup - 1;
      }
      return this.#eager(images, labels);
    }
    if (graph) return this.#replay(graph, images, labels);
    if (this.#reason !== null || this.#eagerRuns < this.#warmup) return this.#eager(images, labels);
    return this.#record(images, labels);
  }

  /** Releases the recorded work's buffers; later runs are ordinary steps that record anew. */
  dispose(): void {
    this.#release();
    this.#disposed = true;
  }

  #eager(images: Tensor, labels: Int32Array): TrainStepResult {
    this.#mode = "eager";
    this.#eagerRuns++;
    checkLabels(labels, this.#classes);
    const result = tidy(() => {
      const target = Tensor.from(Float32Array.from(labels));
      const out = this.#forwardBackward(images, target, labels);
      this.#optimizer.step();
      return out;
    });
    flush();
    return result;
  }

  /** zeroGrad, forward, loss, backward, clipping and the accuracy count: what is recorded. */
  #forwardBackward(images: Tensor, target: Tensor, labels: Int32Array): TrainStepResult {
    this.#optimizer.zeroGrad();
    const output = this.#model.call(images);
    if (output.ndim !== 2 || output.shape[0] !== labels.length) {
      throw new RangeError(
        `CompiledTrainStep: the model's output must be [${labels.length}, classes], got ` +
          formatShape(output.shape),
      );
    }
    if (this.#classes === null) {
      checkLabels(labels, output.shape[1]);
      this.#classes = output.shape[1];
    }
    const loss = this.#loss(output, target);
    loss.backward();
    if (this.#clip !== undefined) clipGradNorm(this.#optimizer.params, this.#clip);
    const correct = noGrad(() => correctCount(output, target));
    const sums = this.#sums;
    if (sums) {
      noGrad(() => {
        sums.loss.accumulate(mulScalar(loss, labels.length));
        sums.correct.accumulate(correct);
      });
    }
    return { loss, correct };
  }

  #record(images: Tensor, labels: Int32Array): TrainStepResult {
    const hooks = this.#modelWithHooks();
    if (hooks) {
      this.#reason = `the model has forward hooks (on ${hooks}), whose JavaScript a replay skips`;
      return this.#eager(images, labels);
    }
    this.#mode = "recorded";
    checkLabels(labels, this.#classes);
    const input = Tensor.empty(images.shape).keep();
    const target = Tensor.empty([labels.length]).keep();
    let recording: Recording | null = null;
    let result: TrainStepResult;
    try {
      input.copyFrom(images);
      writeBuffer(target.buffer, Float32Array.from(labels));
      startRecording();
      try {
        result = tidy(() => this.#forwardBackward(input, target, labels));
        // The update is recorded too; a replay runs optimizer.step() again only to restage its
        // per-step uniforms (learning rate, step counts) into the slots the recording binds.
        markRestagePoint();
        this.#optimizer.step();
      } finally {
        recording = stopRecording();
      }
    } catch (error) {
      if (recording) releaseRecording(recording);
      input.dispose();
      target.dispose();
      throw error;
    }
    if (recording.invalid) {
      releaseRecording(recording);
      input.dispose();
      target.dispose();
      this.#mode = "eager";
      // What made it unreplayable may have been a settling step's (an optimizer that uploads a
      // changed table): try again after another ordinary step, and give up on the third.
      if (++this.#failedRecordings === MAX_FAILED_RECORDINGS) {
        this.#reason = `the step cannot be replayed: ${recording.invalid}`;
      } else {
        this.#eagerRuns = this.#warmup - 1;
      }
    } else {
      pinBuffers(recording.buffers);
      this.#graph = {
        recording,
        input,
        target,
        inputShape: images.shape,
        loss: { tensor: result.loss, shape: result.loss.shape, buffer: result.loss.buffer },
        correct: {
          tensor: result.correct,
          shape: result.correct.shape,
          buffer: result.correct.buffer,
        },
        training: this.#trainingFlags(),
        requiresGrad: this.#optimizer.params.map((p) => p.requiresGrad),
        optimizerState: optimizerState(this.#optimizer).map((tensors) => tensors && [...tensors]),
        treeVersion: moduleTreeVersion(),
        sums: this.#sums && [this.#sums.loss.buffer, this.#sums.correct.buffer],
      };
    }
    flush();
    return result;
  }

  #replay(graph: RecordedGraph, images: Tensor, labels: Int32Array): TrainStepResult {
    this.#mode = "replayed";
    checkLabels(labels, this.#classes);
    if (this.#labelScratch.length !== labels.length) {
      this.#labelScratch = new Float32Array(labels.length);
    }
    this.#labelScratch.set(labels);
    writeBuffer(graph.target.buffer, this.#labelScratch);
    if (images !== graph.input) graph.input.copyFrom(images);
    try {
      replayRecording(graph.recording, () => this.#optimizer.step());
    } catch (error) {
      this.#release();
      this.#eagerRuns = this.#warmup - 1;
      throw new Error(
        `CompiledTrainStep.run(): ${(error as Error).message}. The optimizer no longer does what ` +
          "it did when the step was recorded; the step records anew from the next run.",
        { cause: error },
      );
    }
    flush();
    return { loss: output(graph.loss), correct: output(graph.correct) };
  }

  /** Whether the recorded graph still describes the model and the batch. */
  #replayable(graph: RecordedGraph, images: Tensor): boolean {
    if (!sameShape(graph.inputShape, images.shape)) return false;
    if (graph.treeVersion !== moduleTreeVersion()) return false;
    const sums = this.#sums;
    if (sums && (sums.loss.buffer !== graph.sums![0] || sums.correct.buffer !== graph.sums![1])) {
      return false;
    }
    const flags = this.#trainingFlags();
    if (flags.length !== graph.training.length) return false;
    for (let i = 0; i < flags.length; i++) if (flags[i] !== graph.training[i]) return false;
    const params = this.#optimizer.params;
    for (let i = 0; i < params.length; i++) {
      if (params[i].requiresGrad !== graph.requiresGrad[i]) return false;
    }
    const state = optimizerState(this.#optimizer);
    for (let i = 0; i < state.length; i++) {
      const now = state[i];
      const then = graph.optimizerState[i];
      if (now === null || then === null) {
        if (now !== then) return false;
        continue;
      }
      for (let k = 0; k < now.length; k++) if (now[k] !== then[k] || now[k].disposed) return false;
    }
    return !graph.recording.invalid;
  }

  #trainingFlags(): boolean[] {
    if (this.#treeVersion !== moduleTreeVersion()) {
      this.#modules = this.#model.namedModules().map(([, m]) => m);
      this.#treeVersion = moduleTreeVersion();
    }
    return this.#modules.map((m) => m.training);
  }

  /** The dotted name of the first module with forward hooks, or null. */
  #modelWithHooks(): string | null {
    for (const [name, module] of this.#model.namedModules()) {
      if (hasForwardHooks(module)) return name || "the model itself";
    }
    return null;
  }

  #release(): void {
    const graph = this.#graph;
    if (!graph) return;
    this.#graph = null;
    releaseRecording(graph.recording);
    unpinBuffers(graph.recording.buffers);
    graph.input.dispose();
    graph.target.dispose();
  }
}

/** A recorded step and what a replay needs around it. */
interface RecordedGraph {
  recording: Recording;
  /** The step's own input tensors, which the recorded commands read. */
  input: Tensor;
  target: Tensor;
  inputShape: readonly number[];
  loss: RecordedOutput;
  correct: RecordedOutput;
  /** What the recording assumed of the model (see CompiledTrainStep's notes). */
  training: boolean[];
  requiresGrad: boolean[];
  /** The optimizer's state tensors the recorded update binds. */
  optimizerState: (Tensor[] | null)[];
  treeVersion: number;
  /** The buffers of the sums the recorded work adds into, or null without sums. */
  sums: GPUBuffer[] | null;
}

/** An output of the recorded step: the tensor handed out last, and its (pinned) buffer. */
interface RecordedOutput {
  tensor: Tensor;
  shape: readonly number[];
  buffer: GPUBuffer;
}

/** The output's tensor, or a new one on its buffer once the caller disposed the last. */
function output(out: RecordedOutput): Tensor {
  if (out.tensor.disposed) out.tensor = adoptPinnedTensor(out.shape, out.buffer);
  return out.tensor;
}

/** Checks the labels are class indices below `classes` (unknown before the first recording). */
function checkLabels(labels: Int32Array, classes: number | null): void {
  const limit = classes ?? Infinity;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0 || labels[i] >= limit) {
      throw new RangeError(
        `CompiledTrainStep.run(): labels[${i}] is ${labels[i]}, outside the classes [0, ` +
          `${classes === null ? "classes" : classes - 1}]`,
      );
    }
  }
}
