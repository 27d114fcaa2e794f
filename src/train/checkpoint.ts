/**
 * Training checkpoints: one safetensors file holding the model's state dict under PyTorch's keys
 * (so `model.load_state_dict` in PyTorch takes it after dropping the `optimizer.` keys), the
 * optimizer's state tensors under `optimizer.<index>.<name>`, and everything else needed to resume
 * exactly (epoch, step, optimizer hyperparameters, schedule, data-loader position and RNG state)
 * as JSON strings in the metadata. Written atomically.
 *
 * @module
 */
import {
  loadSafetensors,
  quoteName,
  readSafetensorsHeader,
  type SafetensorsHeaderEntry,
  saveSafetensors,
} from "../io/safetensors.ts";
import type { Module } from "../nn/module.ts";
import type { HyperValue, Optimizer } from "../optim/optimizer.ts";
import { formatShape, type Tensor } from "../tensor.ts";

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

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /**
   * The model the checkpoint is for: its tensors' names and shapes are checked against this
   * model's state dict from the file's header, before any tensor is read or uploaded.
   */
  model?: Module;
  /** The optimizer the checkpoint's `optimizer.*` tensors are for, checked the same way. */
  optimizer?: Optimizer;
}

/** What {@link readCheckpointInfo} finds in a checkpoint's header. */
export interface CheckpointHeader extends CheckpointInfo {
  /** The optimizer's class name, when one was saved. */
  optimizerClass?: string;
  /** Every tensor's name, dtype and shape, optimizer state included. */
  tensors: SafetensorsHeaderEntry[];
}

/** Names shown in an error message before "and N more". */
const NAMES_IN_MESSAGE = 5;

/** Up to five quoted names, then "and N more". */
function listNames(names: readonly string[]): string {
  const shown = names.slice(0, NAMES_IN_MESSAGE).map(quoteName).join(", ");
  const more = names.length - NAMES_IN_MESSAGE;
  return more > 0 ? `${shown} and ${more.toLocaleString("en")} more` : shown;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length === b.length && a.every((d, i) => d === b[i])) return true;
  // A one-element tensor may be stored as [] or [1], as loadStateDict allows.
  const size = (s: readonly number[]) => s.reduce((n, d) => n * d, 1);
  return a.length <= 1 && b.length <= 1 && size(a) === 1 && size(b) === 1;
}

/** Checks the header's names and shapes against the model's and optimizer's; throws one Error. */
function checkAgainst(
  path: string,
  tensors: SafetensorsHeaderEntry[],
  options: LoadCheckpointOptions,
) {
  const problems: string[] = [];
  if (options.model) {
    const expected = new Map<string, readonly number[]>();
    for (const [name, t] of options.model.stateDict()) expected.set(name, t.shape);
    const found = tensors.filter((t) => !t.name.startsWith(OPTIMIZER_PREFIX));
    const names = new Set(found.map((t) => t.name));
    const missing = [...expected.keys()].filter((name) => !names.has(name));
    const unexpected = found.filter((t) => !expected.has(t.name)).map((t) => t.name);
    const wrong = found.filter((t) =>
      expected.has(t.name) && !sameShape(t.shape, expected.get(t.name)!)
    )
      .map((t) =>
        `${quoteName(t.name)} is ${formatShape(t.shape)}, the model's is ` +
        formatShape(expected.get(t.name)!)
      );
    if (missing.length) {
      problems.push(`missing ${missing.length} of the model's tensors: ${listNames(missing)}`);
    }
    if (unexpected.length) {
      problems.push(
        `${unexpected.length} tensors the model does not have: ${listNames(unexpected)}`,
      );
    }
    if (wrong.length) {
      problems.push(
        `${wrong.length} tensors of another shape: ${wrong.slice(0, NAMES_IN_MESSAGE).join("; ")}` +
          (wrong.length > NAMES_IN_MESSAGE ? ` and ${wrong.length - NAMES_IN_MESSAGE} more` : ""),
      );
    }
  }
  if (options.optimizer) {
    const { params } = options.optimizer;
    const bad: string[] = [];
    for (const t of tensors) {
      if (!t.name.startsWith(OPTIMIZER_PREFIX)) continue;
      const key = t.name.slice(OPTIMIZER_PREFIX.length);
      const match = /^(\d{1,6})\.[A-Za-z_]\w{0,63}$/.exec(key);
      const index = match ? Number(match[1]) : -1;
      if (!match || index >= params.length || !sameShape(t.shape, params[index].shape)) {
        bad.push(t.name);
      }
    }
    if (bad.length) {
      problems.push(
        `${bad.length} optimizer tensors that match no parameter of this ` +
          `${options.optimizer.constructor.name} (${params.length} parameters): ${listNames(bad)}`,
      );
    }
  }
  if (problems.length) {
    throw new Error(
      `Checkpoint "${path}" does not fit this model: ${problems.join("; ")}. Was it saved from ` +
        "another model (--model) or optimizer? Nothing was loaded.",
    );
  }
}

/**
 * Parses the checkpoint's metadata fields (epoch, step, optimizer, extra); `path` names the file.
 */
function parseInfo(path: string, metadata: Record<string, string>) {
  const json = <T>(field: string): T | undefined => {
    if (metadata[field] === undefined) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(metadata[field]);
    } catch {
      throw new Error(`Checkpoint "${path}": metadata field "${field}" is not valid JSON`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(`Checkpoint "${path}": metadata field "${field}" must be a JSON object`);
    }
    return value as T;
  };
  const count = (field: string): number => {
    const value = Number(metadata[field] ?? 0);
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new Error(
        `Checkpoint "${path}": metadata "${field}" must be a count, got ` +
          quoteName(String(metadata[field])),
      );
    }
    return value;
  };
  return {
    optimizerClass: metadata.optimizer_class,
    epoch: count("epoch"),
    step: count("step"),
    optimizer: json<Record<string, HyperValue>>("optimizer"),
    extra: json<Record<string, unknown>>("extra"),
  };
}

/**
 * A checkpoint's epoch, step, optimizer hyperparameters, extra state and tensor list, read from
 * the file's header only: no tensor is read or uploaded, so it is cheap whatever the file holds.
 *
 * @throws {Error} when the file is missing, malformed, or its metadata is not valid JSON.
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { readCheckpointInfo, saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveCheckpoint(path, new nn.Linear(3, 2), null, { epoch: 2, step: 20, extra: { a: 1 } });
 * const info = await readCheckpointInfo(path);
 * console.log(info.epoch, info.extra, info.tensors.map((t) => t.name)); // 2 { a: 1 } [ "bias", "weight" ]
 * await Deno.remove(path);
 * ```
 */
export async function readCheckpointInfo(path: string): Promise<CheckpointHeader> {
  const { metadata, tensors } = await readSafetensorsHeader(path);
  return { ...parseInfo(path, metadata), tensors };
}

/**
 * Reads a checkpoint written by {@link saveCheckpoint} (or a plain state dict from PyTorch, which
 * then has epoch 0, step 0 and no optimizer state). Given `options.model` (and
 * `options.optimizer`), the header's names and shapes are checked against them first, so a file
 * for another model is refused before any tensor is read or uploaded; the error names the first
 * few tensors that differ and counts the rest.
 *
 * @throws {Error} when the file is missing, malformed, its metadata is not valid JSON, or its
 *   tensors do not fit `options.model` or `options.optimizer`.
 * @example
 * ```ts
 * import { initGPU, nn } from "@resnet/webgpu";
 * import { loadCheckpoint, saveCheckpoint } from "@resnet/webgpu/train";
 * await initGPU();
 * const model = new nn.Linear(3, 2);
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveCheckpoint(path, model, null, { epoch: 3, step: 30 });
 * const checkpoint = await loadCheckpoint(path, { model });
 * model.loadStateDict(checkpoint.model);
 * console.log(checkpoint.epoch); // 3
 * ```
 */
export async function loadCheckpoint(
  path: string,
  options: LoadCheckpointOptions = {},
): Promise<LoadedCheckpoint> {
  if (options.model || options.optimizer) {
    const { metadata, tensors } = await readSafetensorsHeader(path);
    parseInfo(path, metadata);
    checkAgainst(path, tensors, options);
  }
  const metadata: Record<string, string> = {};
  const tensors = await loadSafetensors(path, { metadata });
  const model = new Map<string, Tensor>();
  const optimizerState = new Map<string, Tensor>();
  for (const [key, t] of tensors) {
    if (key.startsWith(OPTIMIZER_PREFIX)) optimizerState.set(key.slice(OPTIMIZER_PREFIX.length), t);
    else model.set(key, t);
  }
  let info;
  try {
    info = parseInfo(path, metadata);
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw error;
  }
  return {
    model,
    optimizerState,
    ...info,
    dispose() {
      for (const t of tensors.values()) t.dispose();
    },
  };
}
