/**
 * Training checkpoints: one safetensors file holding the model's state dict under PyTorch's keys
 * (so `model.load_state_dict` in PyTorch takes it after dropping the `optimizer.` keys), the
 * optimizer's state tensors under `optimizer.<index>.<name>`, and everything else needed to resume
 * exactly (epoch, step, optimizer hyperparameters, schedule, data-loader position and RNG state)
 * as JSON strings in the metadata. Written atomically.
 *
 * @module
 */
import { loadSafetensors, saveSafetensors } from "../io/safetensors.ts";
import type { Module } from "../nn/module.ts";
import type { HyperValue, Optimizer } from "../optim/optimizer.ts";
import type { Tensor } from "../tensor.ts";

const OPTIMIZER_PREFIX = "optimizer.";

/** What a checkpoint records beside the tensors. */
export interface CheckpointInfo {
  /** Completed epochs (a checkpoint taken mid-epoch records the epoch in progress). */
  epoch: number;
  /** Optimizer steps taken. */
  step: number;
  /** Optimizer hyperparameters and step counts. */
  optimizer?: Record<string, HyperValue>;
  /** Any further JSON-serialisable state (schedule, data loader, RNG, flags, metrics). */
  extra?: Record<string, unknown>;
}

/**
 * Writes `model`'s state dict and `optimizer`'s state with `info` to `path` atomically.
 *
 * @example
 * ```ts
 * import { initGPU, nn, optim } from "@resnet/webgpu";
 * import { saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = new nn.Linear(3, 2);
 * const opt = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveCheckpoint(path, model, opt, { epoch: 1, step: 10 });
 * ```
 */
export async function saveCheckpoint(
  path: string,
  model: Module,
  optimizer: Optimizer | null,
  info: CheckpointInfo,
): Promise<void> {
  const tensors = new Map<string, Tensor>(model.stateDict());
  const metadata: Record<string, string> = {
    format: "pt",
    epoch: String(info.epoch),
    step: String(info.step),
  };
  if (optimizer) {
    const { state, hyper } = optimizer.stateDict();
    for (const [key, t] of state) tensors.set(OPTIMIZER_PREFIX + key, t);
    metadata.optimizer = JSON.stringify(hyper);
    metadata.optimizer_class = optimizer.constructor.name;
  }
  if (info.extra) metadata.extra = JSON.stringify(info.extra);
  await saveSafetensors(path, tensors, metadata);
}

/** A checkpoint read back by {@link loadCheckpoint}. */
export interface LoadedCheckpoint extends CheckpointInfo {
  /** The model's state dict (PyTorch keys). */
  model: Map<string, Tensor>;
  /** The optimizer's state tensors by `"<index>.<name>"`. */
  optimizerState: Map<string, Tensor>;
  /** The optimizer's class name, when one was saved. */
  optimizerClass?: string;
  /** Releases every tensor read from the file. */
  dispose(): void;
}

/**
 * Reads a checkpoint written by {@link saveCheckpoint} (or a plain state dict from PyTorch, which
 * then has epoch 0, step 0 and no optimizer state).
 *
 * @throws {Error} when the file is missing, malformed, or its metadata is not valid JSON.
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { loadCheckpoint, saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = new nn.Linear(3, 2);
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveCheckpoint(path, model, null, { epoch: 3, step: 30 });
 * const checkpoint = await loadCheckpoint(path);
 * model.loadStateDict(checkpoint.model);
 * console.log(checkpoint.epoch); // 3
 * ```
 */
export async function loadCheckpoint(path: string): Promise<LoadedCheckpoint> {
  const metadata: Record<string, string> = {};
  const tensors = await loadSafetensors(path, { metadata });
  const model = new Map<string, Tensor>();
  const optimizerState = new Map<string, Tensor>();
  for (const [key, t] of tensors) {
    if (key.startsWith(OPTIMIZER_PREFIX)) optimizerState.set(key.slice(OPTIMIZER_PREFIX.length), t);
    else model.set(key, t);
  }
  const json = <T>(field: string): T | undefined => {
    if (metadata[field] === undefined) return undefined;
    try {
      return JSON.parse(metadata[field]) as T;
    } catch {
      throw new Error(`Checkpoint "${path}": metadata field "${field}" is not valid JSON`);
    }
  };
  const count = (field: string): number => {
    const value = Number(metadata[field] ?? 0);
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new Error(`Checkpoint "${path}": metadata "${field}" must be a count, got ${value}`);
    }
    return value;
  };
  return {
    model,
    optimizerState,
    optimizerClass: metadata.optimizer_class,
    epoch: count("epoch"),
    step: count("step"),
    optimizer: json<Record<string, HyperValue>>("optimizer"),
    extra: json<Record<string, unknown>>("extra"),
    dispose() {
      for (const t of tensors.values()) t.dispose();
    },
  };
}
