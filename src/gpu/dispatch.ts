/**
 * Encoding kernels: one shared command encoder and compute pass collect every dispatch until a
 * readback or an upload needs the queue, so a training step is one submit. Pipelines are cached
 * by kernel name and override constants, uniform buffers by content, bind groups by the buffers
 * they bind (with each binding's offset and size).
 *
 * Binding convention for every kernel: with uniforms, `@binding(0)` is the uniform struct and the
 * storage buffers follow at 1, 2, …; without, the storage buffers start at 0. An entry point that
 * leaves out a binding other entry points of its file use gets `null` in its place.
 *
 * @module
 */
import { getDevice } from "./device.ts";
import {
  checkDeclaredParams,
  packParamsByName,
  type ParamsLayout,
  type ParamValues,
  parseParamsStruct,
} from "./_params.ts";

/**
 * A WGSL compute kernel: its name is its file name, pipeline label and cache key. `P` names the
 * fields of its `struct Params`.
 */
export interface Kernel<P extends string = string> {
  /** File name without `.wgsl`; also the pipeline label. */
  name: string;
  /** WGSL source, imported as text from `kernels/`. */
  source: string;
  /** Entry point; default `"main"`. */
  entryPoint?: string;
  /**
   * The fields of the kernel's `struct Params`, in the WGSL's order (checked against the parsed
   * struct when the kernel is first dispatched); omitted when the kernel binds no uniforms.
   */
  params?: readonly P[];
}

/**
 * A kernel from its WGSL file's name and text and the fields of its `struct Params` in the WGSL's
 * order (none when it binds no uniforms); `dispatch` checks them against the struct.
 */
export function kernel<const P extends string = never>(
  name: string,
  source: string,
  params: readonly P[] = [],
): Kernel<P> {
  return params.length ? { name, source, params } : { name, source };
}

/** Arguments of one {@link dispatch}. */
export interface DispatchArgs<P extends string = string> {
  /**
   * Storage buffers in binding order: a whole buffer, or a binding of part of one (a tensor's
   * `binding`, which is a slice when the tensor lies in a shared buffer); `null` for a binding
   * the entry point does not use (one that other entry points of the same file use), which the
   * bind group then leaves out.
   */
  buffers: readonly (GPUBuffer | GPUBufferBinding | null)[];
  /**
   * Values of the kernel's `struct Params` by field name (every field, nothing else), packed at
   * the offsets parsed from the WGSL and bound at binding 0.
   */
  params?: ParamValues<P>;
  /** Workgroup counts `[x, y, z]`. */
  workgroups: readonly [number, number?, number?];
  /** Values of the kernel's `override` constants; part of the pipeline cache key. */
  constants?: Record<string, number>;
  /**
   * The uniforms change from step to step (a learning rate, a step count): they go to the next
   * slot of the per-submit uniform buffer (written once at the submit) instead of the
   * content-keyed cache, so a training loop whose values change each step allocates nothing.
   */
  dynamicUniforms?: boolean;
}

const MAX_CACHED_UNIFORMS = 4096;
const MAX_CACHED_BIND_GROUPS = 8192;

const modules = new Map<string, GPUShaderModule>();
const pipelines = new Map<string, GPUComputePipeline>();
const uniformCache = new Map<number, CachedUniform>();
let cachedUniforms = 0;
const bindGroups = new Map<string, GPUBindGroup>();
// Which cached bind groups bind a buffer, so that a destroyed buffer leaves none behind.
const bindGroupsByBuffer = new Map<number, Set<string>>();
const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 1;
let cachedFor: GPUDevice | null = null;

let encoder: GPUCommandEncoder | null = null;
let pass: GPUComputePassEncoder | null = null;
let pendingCommands = 0;
let destroyAfterSubmit: GPUBuffer[] = [];

/**
 * Buffers reused once per submit, by size class: slot k of a ring serves the k-th use within the
 * commands being encoded. `queue.writeBuffer` into a slot is ordered after every earlier submit
 * (which therefore read the old contents) and before the submit being encoded (which reads the
 * new ones), so rewriting it is safe without waiting.
 */
class BufferRing {
  readonly #slots = new Map<number, GPUBuffer[]>();
  readonly #used = new Map<number, number>();
  constructor(readonly usage: number, readonly label: string) {}

  take(device: GPUDevice, size: number): GPUBuffer {
    const k = this.#used.get(size) ?? 0;
    this.#used.set(size, k + 1);
    let slots = this.#slots.get(size);
    if (!slots) this.#slots.set(size, slots = []);
    if (k === slots.length) {
      slots.push(device.createBuffer({ size, usage: this.usage, label: this.label }));
      counters.bufferCreations++;
    }
    return slots[k];
  }

  /** All slots become free once the commands using them are submitted. */
  submitted(): void {
    this.#used.clear();
  }

  clear(): void {
    this.#slots.clear();
    this.#used.clear();
  }
}

const counters = {
  dispatches: 0,
  submits: 0,
  readbacks: 0,
  pipelines: 0,
  bufferCreations: 0,
  bindGroupCreations: 0,
  uploads: 0,
  uniformWrites: 0,
};

/**
 * Commands (dispatches and copies) after which the shared encoder is submitted on its own, so a
 * loop that never reads back (a plain `tidy(() => { loss.backward(); opt.step(); })` loop) keeps
 * its encoder, its per-submit uniform and upload rings and its deferred destroys bounded. A
 * ResNet-20 training step encodes ~300 commands and the seed's model ~840, so a step of either
 * stays one submit when a readback ends it.
 *
 * @example
 * ```ts
 * import { gpuCounters, MAX_PENDING_COMMANDS } from "@resnet/webgpu";
 * console.log(gpuCounters().pendingCommands < MAX_PENDING_COMMANDS); // true
 * ```
 */
export const MAX_PENDING_COMMANDS = 4096;
const uploadRing = new BufferRing(GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, "upload");

/**
 * The uniforms that change every step (a learning rate, a step count), written once per submit.
 * The k-th such dispatch of a submit reads slot k of one uniform buffer, bound at the slot's
 * offset; its values are staged here, and flush() writes the slots used with one
 * `queue.writeBuffer` before the submit, or none when they equal what the buffer already holds.
 * The write is ordered after every earlier submit, which therefore read the old values. A slot
 * depends only on the dispatch's place in the submit, so a repeated step binds the same slots and
 * its bind groups come from the cache.
 */
class DynamicUniforms {
  #buffer: GPUBuffer | null = null;
  /** Bytes per slot: the device's uniform offset alignment. */
  #stride = 256;
  #slots = 0;
  #used = 0;
  #staged = new Uint8Array(0);
  /** What the buffer holds, as far as the last write went. */
  #written = new Uint8Array(0);
  #writtenBytes = 0;

  /** Stages `bytes` in the next slot. The caller flushes and grows first when it is full. */
  take(device: GPUDevice, bytes: Uint8Array): { buffer: GPUBuffer; offset: number } {
    if (this.#slots === 0) this.grow(device);
    const offset = this.#used++ * this.#stride;
    this.#staged.set(bytes, offset);
    this.#staged.fill(0, offset + bytes.byteLength, offset + this.#stride);
    return { buffer: this.#buffer!, offset };
  }

  /** Doubles the slots (or makes the first 64); call it only with nothing staged. */
  grow(device: GPUDevice): void {
    this.#stride = Math.max(256, device.limits.minUniformBufferOffsetAlignment);
    this.#slots = this.#slots === 0 ? 64 : this.#slots * 2;
    this.#buffer = device.createBuffer({
      size: this.#slots * this.#stride,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: "dynamic uniforms",
    });
    counters.bufferCreations++;
    this.#staged = new Uint8Array(this.#slots * this.#stride);
    this.#written = new Uint8Array(this.#slots * this.#stride);
    this.#writtenBytes = 0;
  }

  /** Slots taken since the last commit. */
  get used(): number {
    return this.#used;
  }

  /** The uniform buffer the slots are in (null before the first take). */
  get buffer(): GPUBuffer | null {
    return this.#buffer;
  }

  /** Whether the next take() needs a flush first (the buffer is full). */
  get full(): boolean {
    return this.#used > 0 && this.#used === this.#slots;
  }

  /** Writes the staged slots (if they changed) before the submit; the slots are free after it. */
  commit(device: GPUDevice): void {
    const bytes = this.#used * this.#stride;
    this.#used = 0;
    if (bytes === 0) return;
    const staged = this.#staged.subarray(0, bytes);
    if (bytes <= this.#writtenBytes && equalBytes(staged, this.#written.subarray(0, bytes))) {
      return;
    }
    device.queue.writeBuffer(this.#buffer!, 0, staged, 0, bytes);
    counters.uniformWrites++;
    this.#written.set(staged);
    this.#writtenBytes = Math.max(this.#writtenBytes, bytes);
  }

  clear(): void {
    this.#buffer = null;
    this.#slots = this.#used = this.#writtenBytes = 0;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  const n = a.byteLength >> 2;
  const a32 = new Uint32Array(a.buffer, a.byteOffset, n);
  const b32 = new Uint32Array(b.buffer, b.byteOffset, n);
  for (let i = 0; i < n; i++) if (a32[i] !== b32[i]) return false;
  return true;
}

const perStepUniforms = new DynamicUniforms();

/** One command of a {@link Recording}. */
type RecordedCommand =
  | {
    kind: "dispatch";
    kernel: Kernel;
    pipeline: GPUComputePipeline;
    group: GPUBindGroup;
    x: number;
    y: number;
    z: number;
    /** The per-step uniform slot's byte offset it binds, or -1 (see markRestagePoint). */
    slot: number;
    /** The storage buffers (or parts of them) it binds, in binding order. */
    buffers: readonly (GPUBuffer | GPUBufferBinding | null)[];
  }
  | {
    kind: "copy";
    source: GPUBuffer;
    sourceOffset: number;
    destination: GPUBuffer;
    destinationOffset: number;
    size: number;
  }
  | { kind: "clear"; buffer: GPUBuffer; offset: number; size: number };

/**
 * The commands encoded between {@link startRecording} and {@link stopRecording}, with the
 * pipelines and bind groups they used, so that {@link replayRecording} can encode the same work
 * again without the JavaScript that produced it (the idea of CUDA graphs). Replaying is only
 * right while every buffer the commands use holds what the recorded work expects: the caller
 * pins them (buffer_pool.ts) and feeds new inputs by writing into the recorded input buffers.
 * Internal: not exported by mod.ts.
 */
export interface Recording {
  /** The commands, in encoding order. */
  readonly commands: readonly RecordedCommand[];
  /** Every buffer the commands bind, copy or clear. */
  readonly buffers: ReadonlySet<GPUBuffer>;
  /**
   * What the recorded JavaScript did besides encoding (a version bump, a gradient assigned to a
   * parameter), to be redone by each replay, in order, before it encodes the commands.
   */
  readonly effects: readonly (() => void)[];
  /** Dispatches among the commands. */
  readonly dispatches: number;
  /**
   * Why the recording cannot be replayed (an upload, a readback or per-step uniforms happened
   * while recording, or a buffer it uses was destroyed), or null when it can.
   */
  readonly invalid: string | null;
  /** The device it was recorded on. */
  readonly device: GPUDevice;
  /**
   * The index of the first command of the part whose per-step uniforms a replay takes from its
   * `restage` function (see {@link markRestagePoint}), or -1 when there is none.
   */
  readonly restageFrom: number;
}

interface MutableRecording {
  commands: RecordedCommand[];
  buffers: Set<GPUBuffer>;
  effects: (() => void)[];
  dispatches: number;
  invalid: string | null;
  device: GPUDevice;
  restageFrom: number;
  /** The per-step uniform buffer its slots are in, or null when it binds none. */
  uniforms: GPUBuffer | null;
  /** The last per-step uniform slot it bound. */
  lastSlot: number;
}

let recording: MutableRecording | null = null;
// Numbers the recordings: caches note which one they were filled in (see recordingSerial).
let recordingSerials = 0;
let currentSerial = 0;
// Recordings a caller may still replay: destroying a buffer one of them uses invalidates it.
const liveRecordings = new Set<MutableRecording>();

/**
 * Starts recording the commands encoded from now on (they are still encoded and run as usual).
 * Work encoded before is submitted first, so that the recording starts a submit. Internal.
 *
 * @throws {Error} when a recording or a kernel profile is already running.
 */
export function startRecording(): void {
  if (recording) throw new Error("startRecording(): a recording is already running");
  if (profiler) throw new Error("startRecording(): cannot record while profiling kernels");
  const device = deviceForCaches();
  flush();
  currentSerial = ++recordingSerials;
  recording = {
    commands: [],
    buffers: new Set(),
    effects: [],
    dispatches: 0,
    invalid: null,
    device,
    restageFrom: -1,
    uniforms: null,
    lastSlot: -1,
  };
}

/**
 * Marks where the part of the recording begins whose per-step uniforms (a learning rate, a step
 * count) change between replays: from here on, dispatches with `dynamicUniforms` are recorded
 * with their uniform slot, and {@link replayRecording} refreshes those slots by running its
 * `restage` function, which must repeat the JavaScript recorded from here (an optimizer's
 * `step()`). Before the mark, per-step uniforms make the recording unreplayable. Uploads made
 * after the mark but before its first command stay out of the recording: the restage function
 * repeats them on each replay where it needs them, encoded before all the replayed commands, so
 * they must only write buffers that the commands before the mark do not use. Internal.
 *
 * @throws {Error} when no recording is running.
 */
export function markRestagePoint(): void {
  if (!recording) throw new Error("markRestagePoint(): no recording is running");
  recording.restageFrom = recording.commands.length;
}

/** Ends the recording {@link startRecording} began and returns it. Internal. */
export function stopRecording(): Recording {
  const done = recording;
  if (!done) throw new Error("stopRecording(): no recording is running");
  recording = null;
  currentSerial = 0;
  if (!done.invalid) liveRecordings.add(done);
  return done;
}

/** Whether commands are being recorded now. Internal. */
export function isRecording(): boolean {
  return recording !== null;
}

/**
 * A number that identifies the running recording (a new one for each {@link startRecording}),
 * or 0 when none runs: a cache filled while recording is valid within that same recording only,
 * since work cached before it began is not in its commands. Internal.
 */
export function recordingSerial(): number {
  return currentSerial;
}

/**
 * Adds `effect` to the recording, to run before each replay encodes its commands; nothing when
 * not recording, or after {@link markRestagePoint} (the restage function repeats that part's
 * JavaScript, effects included). Internal.
 */
export function recordEffect(effect: () => void): void {
  // After the restage point the restage function runs the same JavaScript again on a replay.
  if (recording && recording.restageFrom < 0) recording.effects.push(effect);
}

/**
 * Marks the running recording as one that cannot be replayed, saying why; the work itself goes
 * on as usual. Nothing when not recording. Internal.
 */
export function invalidateRecording(reason: string): void {
  if (recording && !recording.invalid) recording.invalid = reason;
}

/** Forgets `rec`: destroyed buffers no longer concern it. Internal. */
export function releaseRecording(rec: Recording): void {
  liveRecordings.delete(rec as MutableRecording);
}

/**
 * Encodes the recorded commands again, after the work encoded so far: runs the recorded effects,
 * then `restageFn` (when the recording has a restage point: it must repeat the JavaScript
 * recorded after it, whose dispatches then only restage their per-step uniforms), then encodes
 * the commands. Internal.
 *
 * @throws {Error} when the recording cannot be replayed (see {@link Recording.invalid}), the
 *   device it was recorded on is gone, or `restageFn` did not repeat the recorded dispatches.
 */
export function replayRecording(rec: Recording, restageFn?: () => void): void {
  if (rec.invalid) {
    throw new Error(`replayRecording(): this recording cannot be replayed: ${rec.invalid}`);
  }
  if (recording) throw new Error("replayRecording(): cannot replay while recording");
  const device = deviceForCaches();
  if (rec.device !== device) {
    throw new Error("replayRecording(): the recording was made on a GPU device that is gone");
  }
  for (const effect of rec.effects) effect();
  const own = rec as MutableRecording;
  if (own.uniforms) {
    if (!restageFn) {
      throw new Error("replayRecording(): the recording has per-step uniforms: pass restage");
    }
    // The recorded slots count from the start of a submit, in the recorded uniform buffer.
    if (perStepUniforms.used > 0) flush();
    if (perStepUniforms.buffer !== own.uniforms) {
      own.invalid = "the per-step uniform buffer it binds was replaced";
      liveRecordings.delete(own);
      throw new Error(`replayRecording(): this recording cannot be replayed: ${own.invalid}`);
    }
    restaging = { commands: rec.commands, next: rec.restageFrom, from: rec.restageFrom };
    try {
      restageFn();
      const left = rec.commands.slice(restaging.next).find((c) => c.kind === "dispatch");
      if (left) throw restageMismatch(`${left.kernel.name} was not dispatched again`);
    } finally {
      restaging = null;
    }
  }
  let last: GPUComputePipeline | null = null;
  for (const c of rec.commands) {
    if (c.kind === "dispatch") {
      if (profiler) {
        const p = profiledPass(device, profiler, c.kernel);
        p.setPipeline(c.pipeline);
        p.setBindGroup(0, c.group);
        p.dispatchWorkgroups(c.x, c.y, c.z);
        if (p !== pass) p.end();
        last = null;
      } else {
        if (!pass) last = null;
        const p = computePass(device);
        // A pipeline set in this pass stays set: only a change needs setPipeline.
        if (c.pipeline !== last) p.setPipeline(last = c.pipeline);
        p.setBindGroup(0, c.group);
        p.dispatchWorkgroups(c.x, c.y, c.z);
      }
      counters.dispatches++;
    } else if (c.kind === "copy") {
      outsidePass(device).copyBufferToBuffer(
        c.source,
        c.sourceOffset,
        c.destination,
        c.destinationOffset,
        c.size,
      );
    } else {
      outsidePass(device).clearBuffer(c.buffer, c.offset, c.size);
    }
    if (++pendingCommands >= MAX_PENDING_COMMANDS) {
      flush();
      last = null;
    }
  }
}

/** Where a replay's restage function is in the recorded commands. */
interface Restaging {
  commands: readonly RecordedCommand[];
  /** The next recorded command its dispatches must match. */
  next: number;
  /** The first restaged command: uploads are performed while `next` is still there. */
  from: number;
}

let restaging: Restaging | null = null;

/**
 * A dispatch made by a replay's restage function: checks it is the next recorded one and, for
 * per-step uniforms, stages its values in the slot the recorded command binds. Encodes nothing.
 */
function restage(
  state: Restaging,
  kernel: Kernel,
  pipeline: GPUComputePipeline,
  args: DispatchArgs,
  bytes: Uint8Array | null,
): void {
  const c = state.commands[state.next++];
  if (
    !c || c.kind !== "dispatch" || c.pipeline !== pipeline || c.x !== args.workgroups[0] ||
    c.y !== (args.workgroups[1] ?? 1) || c.z !== (args.workgroups[2] ?? 1)
  ) {
    const found = !c ? "no more commands" : c.kind === "dispatch" ? c.kernel.name : `a ${c.kind}`;
    throw restageMismatch(`${kernel.name} came where the recording has ${found}`);
  }
  if (
    c.buffers.length !== args.buffers.length ||
    c.buffers.some((b, i) => !sameBinding(b, args.buffers[i]))
  ) {
    throw restageMismatch(`${kernel.name} binds other buffers than the recording's`);
  }
  if ((bytes === null) !== (c.slot < 0)) {
    throw restageMismatch(`${kernel.name}'s per-step uniforms differ from the recording's`);
  }
  if (bytes) {
    const { offset } = perStepUniforms.take(deviceForCaches(), bytes);
    if (offset !== c.slot) throw restageMismatch(`${kernel.name}'s uniform slot moved`);
  }
}

/** Whether two bound buffers are the same buffer, or the same part of one. */
function sameBinding(
  a: GPUBuffer | GPUBufferBinding | null,
  b: GPUBuffer | GPUBufferBinding | null,
): boolean {
  if (a === b) return true;
  if (a === null || b === null) return false;
  const [x, y] = [a as GPUBufferBinding, b as GPUBufferBinding];
  // A GPUBuffer has a size of its own: only a binding's offset and size count.
  const offset = (t: GPUBufferBinding) => t.buffer === undefined ? 0 : t.offset ?? 0;
  const size = (t: GPUBufferBinding) => t.buffer === undefined ? undefined : t.size;
  return bufferOf(a) === bufferOf(b) && offset(x) === offset(y) && size(x) === size(y);
}

function restageMismatch(detail: string): Error {
  return new Error(
    `replayRecording(): the restage function did not repeat the recorded dispatches: ${detail}`,
  );
}
const readbackBuffers = new Map<number, GPUBuffer[]>();

function bufferId(buffer: GPUBuffer): number {
  let id = bufferIds.get(buffer);
  if (id === undefined) bufferIds.set(buffer, id = nextBufferId++);
  return id;
}

/** The buffer a dispatch's storage entry binds. */
function bufferOf(b: GPUBuffer | GPUBufferBinding): GPUBuffer {
  const binding = b as GPUBufferBinding;
  return binding.buffer === undefined ? b as GPUBuffer : binding.buffer;
}

function deviceForCaches(): GPUDevice {
  const device = getDevice();
  if (cachedFor !== device) {
    modules.clear();
    pipelines.clear();
    pipelinesByKernel = new WeakMap();
    uniformCache.clear();
    cachedUniforms = 0;
    bindGroups.clear();
    bindGroupsByBuffer.clear();
    encoder = null;
    pass = null;
    pendingCommands = 0;
    uploadRing.clear();
    perStepUniforms.clear();
    readbackBuffers.clear();
    cachedFor = device;
  }
  return device;
}

const layouts = new WeakMap<Kernel, ParamsLayout>();
// Scratch for packing params; the bytes are copied into a uniform buffer before the next pack.
const paramScratch = new ArrayBuffer(1024);

/** The kernel's parsed `struct Params`, checked once against the launcher's declared fields. */
function paramsLayout(kernel: Kernel): ParamsLayout {
  let layout = layouts.get(kernel);
  if (layout) return layout;
  if (!kernel.params) {
    throw new Error(`kernel ${kernel.name}: params given, but the launcher declares no fields`);
  }
  layout = parseParamsStruct(kernel.source);
  checkDeclaredParams(kernel.name, layout, kernel.params);
  if (layout.size > paramScratch.byteLength) {
    throw new Error(`kernel ${kernel.name}: struct Params of ${layout.size} bytes is too large`);
  }
  layouts.set(kernel, layout);
  return layout;
}

/**
 * The override constants as a key, in the order the launcher wrote them (a launcher that writes
 * them in another order at another call site only compiles the pipeline once more).
 */
function constantsKey(constants?: Record<string, number>): string {
  if (!constants) return "";
  let key = "";
  for (const k in constants) key += `${k}=${constants[k]},`;
  return key;
}

interface CachedPipeline {
  pipeline: GPUComputePipeline;
  /** The pipeline's cache key (kernel, entry point, constants): the start of its bind groups' keys. */
  key: string;
}

// Pipelines per kernel object (launchers declare their kernels once), by override constants.
let pipelinesByKernel = new WeakMap<Kernel, Map<string, CachedPipeline>>();

function pipelineFor(
  device: GPUDevice,
  kernel: Kernel,
  constants?: Record<string, number>,
): CachedPipeline {
  let byConstants = pipelinesByKernel.get(kernel);
  if (!byConstants) pipelinesByKernel.set(kernel, byConstants = new Map());
  const constantKey = constantsKey(constants);
  const cached = byConstants.get(constantKey);
  if (cached) return cached;
  const key = `${kernel.name}|${kernel.entryPoint ?? "main"}|${constantKey}`;
  let pipeline = pipelines.get(key);
  if (pipeline) {
    const entry = { pipeline, key };
    byConstants.set(constantKey, entry);
    return entry;
  }
  let module = modules.get(kernel.name);
  if (!module) {
    module = device.createShaderModule({ code: kernel.source, label: kernel.name });
    modules.set(kernel.name, module);
  }
  pipeline = device.createComputePipeline({
    label: kernel.name,
    layout: "auto",
    compute: { module, entryPoint: kernel.entryPoint ?? "main", constants },
  });
  pipelines.set(key, pipeline);
  counters.pipelines++;
  const entry = { pipeline, key };
  byConstants.set(constantKey, entry);
  return entry;
}

/** A content-keyed uniform buffer: its words, and the next entry of the same hash. */
interface CachedUniform {
  words: Uint32Array;
  buffer: GPUBuffer;
  next: CachedUniform | null;
}

/** FNV-1a over 32-bit words. */
function hashWords(words: Uint32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 0x01000193) >>> 0;
  return h;
}

function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function uniformBuffer(device: GPUDevice, data: ArrayBufferView): GPUBuffer {
  const bytes = padTo4(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  // Content-keyed and never rewritten, so a buffer still referenced by encoded work is safe.
  const hash = hashWords(words);
  const head = uniformCache.get(hash) ?? null;
  for (let e = head; e; e = e.next) if (sameWords(e.words, words)) return e.buffer;
  const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
  counters.bufferCreations++;
  const buffer = device.createBuffer({
    size,
    usage: GPUBufferUsage.UNIFORM,
    mappedAtCreation: true,
    label: "uniforms",
  });
  new Uint8Array(buffer.getMappedRange()).set(bytes);
  buffer.unmap();
  uniformCache.set(hash, { words: words.slice(), buffer, next: head });
  if (++cachedUniforms > MAX_CACHED_UNIFORMS) {
    // Dropped, not destroyed: wgpu (GL and Vulkan) crashed at exit now and then when a destroyed
    // buffer was still bound by a live bind group; the garbage collector frees them instead.
    // The oldest hash goes first, with the bind groups that bind its buffers.
    const [oldestHash, oldest] = uniformCache.entries().next().value!;
    uniformCache.delete(oldestHash);
    for (let e: CachedUniform | null = oldest; e; e = e.next) {
      cachedUniforms--;
      forgetBindGroups(e.buffer);
    }
  }
  return buffer;
}

function padTo4(bytes: Uint8Array): Uint8Array {
  if (bytes.byteLength % 4 === 0 && bytes.byteOffset % 4 === 0) return bytes;
  const copy = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  copy.set(bytes);
  return copy;
}

function computePass(device: GPUDevice): GPUComputePassEncoder {
  if (!encoder) encoder = device.createCommandEncoder({ label: "step" });
  if (!pass) pass = encoder.beginComputePass();
  return pass;
}

/** The shared encoder with no compute pass open, for commands that go between passes. */
function outsidePass(device: GPUDevice): GPUCommandEncoder {
  if (pass) {
    pass.end();
    pass = null;
  }
  encoder ??= device.createCommandEncoder({ label: "step" });
  return encoder;
}

/**
 * Encodes one dispatch of `kernel` into the shared compute pass. Nothing runs until the next
 * {@link flush} (which readbacks and uploads call).
 */
export function dispatch<P extends string>(
  kernel: Kernel<P>,
  args: DispatchArgs<NoInfer<P>>,
): void {
  const device = deviceForCaches();
  const [x, y = 1, z = 1] = args.workgroups;
  if (x === 0 || y === 0 || z === 0) return;
  const { key, pipeline } = pipelineFor(device, kernel, args.constants);
  let uniform: GPUBuffer | null = null;
  let uniformOffset = 0;
  let uniformSize = 0;
  if (args.params) {
    const layout = paramsLayout(kernel as Kernel);
    packParamsByName(kernel.name, layout, args.params, paramScratch);
    const bytes = new Uint8Array(paramScratch, 0, layout.size);
    uniformSize = layout.size;
    if (args.dynamicUniforms) {
      if (restaging) return restage(restaging, kernel, pipeline, args, bytes);
      if (recording && recording.restageFrom < 0) {
        invalidateRecording(
          `${kernel.name} takes per-step uniforms, whose values a replay would not update`,
        );
      }
      if (perStepUniforms.full) {
        // A step with more of these than slots: submit what is encoded, and double the slots.
        flush();
        perStepUniforms.grow(device);
      }
      ({ buffer: uniform, offset: uniformOffset } = perStepUniforms.take(device, bytes));
    } else {
      uniform = uniformBuffer(device, bytes);
    }
  } else if (kernel.params?.length) {
    throw new Error(
      `kernel ${kernel.name}: its params (${kernel.params.join(", ")}) were not given`,
    );
  }
  if (restaging) return restage(restaging, kernel, pipeline, args, null);
  const first = uniform ? 1 : 0;
  let groupKey = key;
  if (uniform) groupKey += `|u${bufferId(uniform)}@${uniformOffset}`;
  for (const b of args.buffers) {
    const binding = b as GPUBufferBinding | null;
    if (binding === null) groupKey += "|-";
    else if (binding.buffer === undefined) groupKey += `|${bufferId(b as GPUBuffer)}`;
    else groupKey += `|${bufferId(binding.buffer)}@${binding.offset ?? 0}:${binding.size ?? ""}`;
  }
  let group = bindGroups.get(groupKey);
  if (!group) {
    const bound: GPUBuffer[] = [];
    const entries: GPUBindGroupEntry[] = [];
    args.buffers.forEach((b, i) => {
      if (!b) return;
      bound.push(bufferOf(b));
      entries.push({
        binding: first + i,
        resource: (b as GPUBufferBinding).buffer === undefined ? { buffer: b as GPUBuffer } : b,
      });
    });
    if (uniform) {
      entries.unshift({
        binding: 0,
        resource: { buffer: uniform, offset: uniformOffset, size: uniformSize },
      });
    }
    group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    counters.bindGroupCreations++;
    bindGroups.set(groupKey, group);
    for (const b of uniform ? [uniform, ...bound] : bound) {
      const id = bufferId(b);
      let keys = bindGroupsByBuffer.get(id);
      if (!keys) bindGroupsByBuffer.set(id, keys = new Set());
      keys.add(groupKey);
    }
    if (bindGroups.size > MAX_CACHED_BIND_GROUPS) {
      bindGroups.delete(bindGroups.keys().next().value!);
    }
  }
  const p = profiler ? profiledPass(device, profiler, kernel) : computePass(device);
  p.setPipeline(pipeline);
  p.setBindGroup(0, group);
  p.dispatchWorkgroups(x, y, z);
  if (p !== pass) p.end();
  counters.dispatches++;
  if (recording) {
    const slot = args.dynamicUniforms ? uniformOffset : -1;
    if (slot >= 0) {
      // A replay stages the slots in order from the start of one submit: a recording whose
      // per-step uniforms went into two submits (an automatic flush between them) cannot.
      if (recording.uniforms && (recording.uniforms !== uniform || slot <= recording.lastSlot)) {
        invalidateRecording("its per-step uniforms span two submits");
      }
      recording.uniforms = uniform;
      recording.lastSlot = slot;
    }
    recording.commands.push({
      kind: "dispatch",
      kernel,
      pipeline,
      group,
      x,
      y,
      z,
      slot,
      buffers: args.buffers,
    });
    recording.dispatches++;
    for (const b of args.buffers) if (b) recording.buffers.add(bufferOf(b));
    if (uniform) recording.buffers.add(uniform);
  }
  commandEncoded();
}

/** Counts one encoded command; submits the encoder when it holds MAX_PENDING_COMMANDS. */
function commandEncoded(): void {
  if (++pendingCommands >= MAX_PENDING_COMMANDS) flush();
}

/** Timestamp pairs one profiling query set holds (WebGPU allows 4,096 queries per set). */
const PROFILE_CAPACITY = 2048;

interface Profiler {
  querySet: GPUQuerySet;
  /** Kernel label of each timestamp pair written so far. */
  labels: string[];
  /** Dispatches encoded after the query set filled up, not timed. */
  untimed: number;
}

let profiler: Profiler | null = null;

/** A compute pass of its own for one dispatch of `kernel`, timestamped at its start and end. */
function profiledPass(device: GPUDevice, prof: Profiler, kernel: Kernel): GPUComputePassEncoder {
  if (prof.labels.length === PROFILE_CAPACITY) {
    prof.untimed++;
    return computePass(device);
  }
  const label = kernel.entryPoint && kernel.entryPoint !== "main"
    ? `${kernel.name}:${kernel.entryPoint}`
    : kernel.name;
  const k = prof.labels.length;
  prof.labels.push(label);
  return outsidePass(device).beginComputePass({
    label,
    timestampWrites: {
      querySet: prof.querySet,
      beginningOfPassWriteIndex: 2 * k,
      endOfPassWriteIndex: 2 * k + 1,
    },
  });
}

/** GPU time spent in one kernel (entry points other than `main` are named `kernel:entry`). */
export interface KernelTime {
  /** The kernel's name: its WGSL file name, with `:entryPoint` for entry points but `main`. */
  kernel: string;
  /** Dispatches of it. */
  calls: number;
  /** Milliseconds of GPU time, summed over its dispatches. */
  ms: number;
}

/** What {@link profileKernels} measured. */
export interface KernelProfile<T> {
  /** What the profiled function returned. */
  result: T;
  /** Time per kernel, the most expensive first. */
  kernels: KernelTime[];
  /** Sum of the kernels' milliseconds. */
  totalMs: number;
  /**
   * Dispatches beyond the first 2,048, which were run but not timed (profile a smaller piece of
   * work to time them all).
   */
  untimed: number;
}

/**
 * Runs `fn` and measures the GPU time of every kernel it dispatches, with WebGPU timestamp
 * queries: each dispatch gets a compute pass of its own, timestamped at its start and end, and
 * the times are added up per kernel. Use it to see where a training step's milliseconds go; the
 * profiled work runs slightly slower than usual (one pass per dispatch) and ends with one wait on
 * the GPU. Needs an adapter with the `timestamp-query` feature, which `initGPU` requests when
 * it is offered (llvmpipe, lavapipe and the major GPU drivers offer it). On some drivers the
 * timestamps are quantized or, on a few, disabled for privacy; a time of 0 means "too short to
 * see". Not reentrant: profiles do not nest.
 *
 * @param fn the work to profile; it may be async. Work encoded before it is flushed first and
 * not counted.
 * @throws {Error} when the device lacks `timestamp-query` or a profile is already running.
 * @example
 * ```ts
 * import { conv2d, initGPU, profileKernels, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const x = Tensor.randn([2, 4, 8, 8], { seed: 0 });      // [N, C, H, W]
 * const w = Tensor.randn([6, 4, 3, 3], { seed: 1 });      // [O, C, KH, KW]
 * const { kernels, totalMs } = await profileKernels(() => conv2d(x, w, null, { padding: 1 }));
 * for (const k of kernels) console.log(k.kernel, k.calls, k.ms.toFixed(3), "ms");
 * console.log(totalMs >= 0);
 * ```
 */
export async function profileKernels<T>(fn: () => T | Promise<T>): Promise<KernelProfile<T>> {
  const device = deviceForCaches();
  if (!device.features.has("timestamp-query")) {
    throw new Error(
      "profileKernels(): this GPU device has no 'timestamp-query' feature, so kernel times " +
        "cannot be measured; the adapter does not offer it (adapter: see adapterDescription()).",
    );
  }
  if (profiler) {
    throw new Error("profileKernels(): a profile is already running; profiles do not nest.");
  }
  if (recording) throw new Error("profileKernels(): cannot profile while a step is recorded");
  flush();
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 * PROFILE_CAPACITY });
  const prof: Profiler = { querySet, labels: [], untimed: 0 };
  profiler = prof;
  let result: T;
  try {
    result = await fn();
  } finally {
    profiler = null;
  }
  const count = prof.labels.length;
  const kernels: KernelTime[] = [];
  let totalMs = 0;
  if (count > 0) {
    const bytes = 16 * count;
    const resolved = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      label: "profile",
    });
    outsidePass(device).resolveQuerySet(querySet, 0, 2 * count, resolved, 0);
    pendingCommands++;
    const raw = await readBuffer(resolved, 0, bytes);
    resolved.destroy();
    const stamps = new BigUint64Array(raw);
    const byKernel = new Map<string, KernelTime>();
    for (let k = 0; k < count; k++) {
      const begin = stamps[2 * k];
      const end = stamps[2 * k + 1];
      const ms = end > begin ? Number(end - begin) / 1e6 : 0;
      const label = prof.labels[k];
      let entry = byKernel.get(label);
      if (!entry) byKernel.set(label, entry = { kernel: label, calls: 0, ms: 0 });
      entry.calls++;
      entry.ms += ms;
      totalMs += ms;
    }
    kernels.push(...byKernel.values());
    kernels.sort((a, b) => b.ms - a.ms);
  }
  querySet.destroy();
  return { result: result!, kernels, totalMs, untimed: prof.untimed };
}

function forgetBindGroups(buffer: GPUBuffer): void {
  const id = bufferId(buffer);
  for (const key of bindGroupsByBuffer.get(id) ?? []) bindGroups.delete(key);
  bindGroupsByBuffer.delete(id);
}

/**
 * Destroys a buffer that is not from the tensor pool (a data set's images), after the work
 * encoded so far has been submitted, and drops the cached bind groups that bind it.
 */
export function destroyBuffer(buffer: GPUBuffer): void {
  if (cachedFor) forgetBindGroups(buffer);
  for (const rec of liveRecordings) {
    if (rec.buffers.has(buffer)) {
      rec.invalid = "a buffer its commands use was destroyed";
      liveRecordings.delete(rec);
    }
  }
  if (recording?.buffers.has(buffer)) {
    invalidateRecording("a buffer its commands use was destroyed");
  }
  if (pendingCommands > 0) destroyAfterSubmit.push(buffer);
  else buffer.destroy();
}

/** Encodes a buffer-to-buffer copy after the work encoded so far. */
export function copyBuffer(
  source: GPUBuffer,
  sourceOffset: number,
  destination: GPUBuffer,
  destinationOffset: number,
  byteLength: number,
): void {
  const device = deviceForCaches();
  if (restaging) throw restageMismatch("a copy came where the recording has none");
  encodeCopy(device, source, sourceOffset, destination, destinationOffset, byteLength);
}

/**
 * {@link copyBuffer} without the restage check (writeBuffer's copy out of a staging buffer);
 * added to the running recording only when `record`.
 */
function encodeCopy(
  device: GPUDevice,
  source: GPUBuffer,
  sourceOffset: number,
  destination: GPUBuffer,
  destinationOffset: number,
  byteLength: number,
  record = true,
): void {
  outsidePass(device).copyBufferToBuffer(
    source,
    sourceOffset,
    destination,
    destinationOffset,
    byteLength,
  );
  if (recording && record) {
    recording.commands.push({
      kind: "copy",
      source,
      sourceOffset,
      destination,
      destinationOffset,
      size: byteLength,
    });
    recording.buffers.add(source).add(destination);
  }
  commandEncoded();
}

/** Encodes zeroing `byteLength` bytes of `buffer` from `byteOffset` (a copy command, no kernel). */
export function clearBuffer(buffer: GPUBuffer, byteOffset: number, byteLength: number): void {
  const device = deviceForCaches();
  if (restaging) throw restageMismatch("a clear came where the recording has none");
  outsidePass(device).clearBuffer(buffer, byteOffset, byteLength);
  if (recording) {
    recording.commands.push({ kind: "clear", buffer, offset: byteOffset, size: byteLength });
    recording.buffers.add(buffer);
  }
  commandEncoded();
}

/**
 * Submits everything encoded so far as one command buffer, without waiting for it. Readbacks
 * flush on their own, and the encoder is also flushed every {@link MAX_PENDING_COMMANDS}
 * commands, so calling this is never needed for correctness; a loop that reads nothing back can
 * call it once per step to start the GPU on that step's work sooner.
 *
 * @example
 * ```ts
 * import { add, flush, gpuCounters, initGPU, Tensor } from "@resnet/webgpu";
 * await initGPU();
 * const before = gpuCounters().submits;
 * add(Tensor.randn([4, 4], { seed: 0 }), Tensor.ones([4, 4]));
 * flush();
 * console.log(gpuCounters().submits - before, gpuCounters().pendingCommands); // 1 0
 * ```
 */
export function flush(): void {
  const device = deviceForCaches();
  if (!encoder) return;
  if (pass) pass.end();
  const commands = encoder.finish();
  encoder = null;
  pass = null;
  pendingCommands = 0;
  perStepUniforms.commit(device);
  device.queue.submit([commands]);
  counters.submits++;
  uploadRing.submitted();

  for (const b of destroyAfterSubmit) b.destroy();
  destroyAfterSubmit = [];
}

/**
 * Writes `data` into `buffer` at `byteOffset`, ordered after all work encoded so far. With work
 * pending, the bytes go through a staging buffer from the upload ring, copied inside the encoder
 * (`queue.writeBuffer` into `buffer` itself would overtake that work), so uploads never split a
 * step into several submits and allocate nothing in steady state.
 */
export function writeBuffer(buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
  const device = deviceForCaches();
  const bytes = padTo4(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  // The restaged part may upload before its first command (Adam refilling its table of bias
  // corrections): each replay's restage function performs its own such uploads, encoded before
  // the replayed commands, so the recording neither holds nor needs them.
  const restagedUpload = restaging
    ? restaging.next === restaging.from
    : recording !== null && recording.restageFrom === recording.commands.length;
  if (restaging && !restagedUpload) {
    throw restageMismatch("an upload came where the recording has none");
  }
  counters.uploads++;
  if (!restagedUpload) {
    invalidateRecording(
      "it uploads data from the CPU (a replay would not upload the new values); write inputs " +
        "into tensors before the recorded work",
    );
  }
  if (pendingCommands === 0) {
    device.queue.writeBuffer(buffer, byteOffset, bytes as Uint8Array<ArrayBuffer>, 0, bytes.length);
    return;
  }
  const size = 2 ** Math.max(8, Math.ceil(Math.log2(bytes.byteLength)));
  const staging = uploadRing.take(device, size);
  device.queue.writeBuffer(staging, 0, bytes as Uint8Array<ArrayBuffer>, 0, bytes.byteLength);
  encodeCopy(device, staging, 0, buffer, byteOffset, bytes.byteLength, !restagedUpload);
}

/**
 * Copies `byteLength` bytes of `buffer` back to the CPU after all encoded work has run. The only
 * place the CPU waits for the GPU.
 */
export async function readBuffer(
  buffer: GPUBuffer,
  byteOffset: number,
  byteLength: number,
): Promise<ArrayBuffer> {
  const device = deviceForCaches();
  const size = Math.max(4, Math.ceil(byteLength / 4) * 4);
  let staging = readbackBuffers.get(size)?.pop();
  if (!staging) {
    staging = device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "readback",
    });
    counters.bufferCreations++;
  }
  invalidateRecording("it reads a tensor back to the CPU");
  copyBuffer(buffer, byteOffset, staging, 0, size);
  flush();
  counters.readbacks++;
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch (cause) {
    getDevice();
    throw new Error(`Reading a tensor back from the GPU failed: ${cause}`, { cause });
  }
  const result = staging.getMappedRange().slice(0, byteLength);
  staging.unmap();
  if (cachedFor === device) {
    let free = readbackBuffers.get(size);
    if (!free) readbackBuffers.set(size, free = []);
    free.push(staging);
  }
  getDevice();
  return result;
}

/** What {@link gpuCounters} returns. */
export interface GpuCounters {
  /** Kernel dispatches encoded. */
  dispatches: number;
  /** Command buffers submitted. */
  submits: number;
  /** Buffers read back to the CPU (each one wait on the GPU). */
  readbacks: number;
  /** Compute pipelines compiled. */
  pipelines: number;
  /** Buffers created outside the tensor pool (uniform, upload and readback buffers). */
  bufferCreations: number;
  /** Bind groups created (cache misses). */
  bindGroupCreations: number;
  /** Data written into buffers from the CPU (`writeBuffer`: a tensor's values, labels, draws). */
  uploads: number;
  /** Writes of the uniforms that change per step: at most one per submit, none when unchanged. */
  uniformWrites: number;
  /** Commands encoded and not yet submitted, now (not a running count). */
  pendingCommands: number;
}

/**
 * Counts of dispatches, submits, readbacks, compiled pipelines, buffers created outside the
 * tensor pool, bind groups created and buffer writes since the process started, and the commands
 * waiting in the encoder now; subtract two snapshots to measure a step.
 *
 * @example
 * ```ts
 * import { gpuCounters } from "@resnet/webgpu";
 * const before = gpuCounters();
 * console.log(before.dispatches >= 0, before.bindGroupCreations >= 0);
 * ```
 */
export function gpuCounters(): GpuCounters {
  return { ...counters, pendingCommands };
}

/**
 * Workgroup counts for `count` invocations in workgroups of `workgroupSize`, spread over y when x
 * would exceed WebGPU's 65,535 limit. Kernels compute their flat index as
 * `gid.x + gid.y * num_workgroups.x * WORKGROUP_SIZE` and return when it is `>= count`.
 */
export function grid1d(count: number, workgroupSize: number): [number, number, number] {
  const groups = Math.ceil(count / workgroupSize);
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y, 1];
}
