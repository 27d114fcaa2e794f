/**
 * The browser build of `@resnet/webgpu`: everything that runs on `navigator.gpu` without Deno —
 * tensors, ops, `nn` layers, the ResNet models, `optim` with its schedules, safetensors to and from
 * bytes, and `data.DataLoader` fed from arrays. Files, environment variables, the CIFAR-10
 * download and the training CLI stay in `mod.ts`; no `Deno.*` call is reachable from here.
 * `deno task bundle` turns this module into `dist/resnet_webgpu.js`, one ES module with the WGSL
 * kernels inlined, for a `<script type="module">`.
 *
 * @example
 * ```ts
 * import {
 *   crossEntropy,
 *   encodeSafetensors,
 *   initGPU,
 *   optim,
 *   resnet,
 *   Tensor,
 *   tidy,
 * } from "@resnet/webgpu/browser";
 * await initGPU();
 * const model = resnet(8, { numClasses: 4, seed: 0 });
 * const opt = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
 * const x = Tensor.randn([2, 3, 16, 16], { seed: 1 });
 * const loss = tidy(() => {
 *   const loss = crossEntropy(model.forward(x), new Int32Array([1, 3]));
 *   loss.backward();
 *   opt.step();
 *   opt.zeroGrad();
 *   return loss;
 * });
 * console.log(await loss.item());
 * // A checkpoint as bytes, e.g. for a download link.
 * const state = [...model.stateDict()];
 * const values = await Promise.all(state.map(([, t]) => t.toArray()));
 * const bytes = encodeSafetensors(state.map(([name, t], i) => ({
 *   name,
 *   shape: t.shape,
 *   dtype: name.endsWith("num_batches_tracked") ? "I64" : "F32",
 *   data: name.endsWith("num_batches_tracked")
 *     ? BigInt64Array.from(values[i], (v) => BigInt(Math.round(v)))
 *     : values[i],
 * })));
 * console.log(bytes.length);
 * ```
 *
 * @module
 */
export * from "./src/_core.ts";
// Data as a namespace, as in mod.ts, with the in-memory parts only (no CIFAR-10 download or
// folder reader).
export * as data from "./src/data/_in_memory.ts";
