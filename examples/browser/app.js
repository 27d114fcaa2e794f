// The page's logic: shows the WebGPU adapter, trains resnet(8) on the built-in synthetic set or on
// dropped images, plots loss and accuracy per step, saves the model as .safetensors and predicts
// on a dropped image. Everything it imports comes from the bundle that `deno task bundle` builds.
//
// URL parameters (used by tests/browser/page_test.ts): `steps`, `batch`, `lr`, `train` (synthetic
// training images), and `auto` to train at once and then save and predict without clicks. The
// page keeps its results in `window.__report`, which `status` "done" or "error" ends.
// The bundle is imported by a computed specifier, so that type-checking `examples/` does not look
// for dist/ (the server maps ./resnet_webgpu.js to dist/resnet_webgpu.js).
const BUNDLE = "./resnet_webgpu.js";
const {
  adapterDescription,
  correctCount,
  crossEntropy,
  data,
  encodeSafetensors,
  initGPU,
  noGrad,
  optim,
  resnet,
  Tensor,
  tidy,
} = await import(BUNDLE);
const { CIFAR10_MEAN, CIFAR10_STD, DataLoader, syntheticCifar } = data;

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const SIZE = 32;
const PIXELS = SIZE * SIZE;

/** What the page did, for people (on the page) and for the browser test (as JSON). */
const report = {
  status: "starting",
  adapter: null,
  error: null,
  config: null,
  classes: [],
  steps: [],
  plot: null,
  checkpoint: null,
  prediction: null,
};
globalThis.__report = report;

for (const key of ["steps", "batch", "lr"]) {
  if (params.has(key)) $(key).value = params.get(key);
}

const synthetic = syntheticCifar({
  trainCount: Number(params.get("train") ?? 2000),
  testCount: 10,
  seed: 0,
});
/** Images dropped on the training zone: `{ name, label, pixels }`, pixels `[3, 32, 32]` bytes. */
const dropped = [];
let model = null;
let classes = [];
let stopRequested = false;

function fail(error) {
  console.error(error);
  report.error = String(error?.stack ?? error);
  report.status = "error";
  $("status").textContent = `error: ${error?.message ?? error}`;
  $("status").className = "error";
}

function setStatus(text) {
  $("status").textContent = text;
}

// ---- images: decoding, thumbnails, datasets ----------------------------------------------------

/** Decodes a PNG/JPEG blob with createImageBitmap into `[3, 32, 32]` planar RGB bytes. */
async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(SIZE, SIZE);
  const ctx = canvas.getContext("2d");
  // The centred square crop, scaled to 32x32.
  const side = Math.min(bitmap.width, bitmap.height);
  ctx.drawImage(
    bitmap,
    (bitmap.width - side) / 2,
    (bitmap.height - side) / 2,
    side,
    side,
    0,
    0,
    SIZE,
    SIZE,
  );
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, SIZE, SIZE).data;
  const pixels = new Uint8Array(3 * PIXELS);
  for (let i = 0; i < PIXELS; i++) {
    for (let c = 0; c < 3; c++) pixels[c * PIXELS + i] = rgba[4 * i + c];
  }
  return pixels;
}

/** Draws `[3, 32, 32]` planar bytes on a 32x32 canvas. */
function drawPixels(canvas, pixels) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(SIZE, SIZE);
  for (let i = 0; i < PIXELS; i++) {
    for (let c = 0; c < 3; c++) image.data[4 * i + c] = pixels[c * PIXELS + i];
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

/** The class of a dropped file: its name up to the first `_`, `-`, space, digit or dot. */
function classOf(fileName) {
  return fileName.toLowerCase().split(/[_\-\s\d.]/)[0] || "unnamed";
}

function showThumbnails(images, count) {
  const thumbs = $("thumbs");
  thumbs.replaceChildren();
  for (let i = 0; i < Math.min(count, 48); i++) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    drawPixels(canvas, images.subarray(i * 3 * PIXELS, (i + 1) * 3 * PIXELS));
    thumbs.append(canvas);
  }
}

/** The dataset the Train button uses, in the loader's layout: `[N, 3, 32, 32]` bytes. */
function currentDataset() {
  const useFiles = document.querySelector("input[name=source]:checked").value === "files";
  if (!useFiles) return synthetic.train;
  if (dropped.length === 0) throw new Error("drop some PNG or JPEG files first");
  const names = [...new Set(dropped.map((d) => d.label))].sort();
  if (names.length < 2) throw new Error(`need images of at least 2 classes, got ${names}`);
  const images = new Uint8Array(dropped.length * 3 * PIXELS);
  const labels = new Uint8Array(dropped.length);
  dropped.forEach((d, i) => {
    images.set(d.pixels, i * 3 * PIXELS);
    labels[i] = names.indexOf(d.label);
  });
  return { images, labels, count: dropped.length, classes: names, name: "dropped-files" };
}

function onDrop(zone, handle) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = [...event.dataTransfer.files].filter((f) => /^image\//.test(f.type));
    handle(files).catch(fail);
  });
}

onDrop($("train-drop"), async (files) => {
  for (const file of files) {
    dropped.push({ name: file.name, label: classOf(file.name), pixels: await decodeImage(file) });
  }
  $("file-count").textContent = String(dropped.length);
  document.querySelector("input[name=source][value=files]").checked = true;
  const dataset = currentDataset();
  showThumbnails(dataset.images, dataset.count);
  setStatus(`${dataset.count} images, classes: ${dataset.classes.join(", ")}`);
});

// ---- the plot ---------------------------------------------------------------------------------

/** Loss (left axis, blue) and batch accuracy (right axis, 0 to 1, orange) against the step. */
function drawPlot(steps, total) {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const left = 48;
  const right = width - 48;
  const top = 16;
  const bottom = height - 28;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = "#d5d9e0";
  ctx.lineWidth = 1;
  ctx.strokeRect(left, top, right - left, bottom - top);
  const maxLoss = Math.max(1e-6, ...steps.map((s) => s.loss));
  const x = (i) => left + (right - left) * (total > 1 ? i / (total - 1) : 0.5);
  const yLoss = (v) => bottom - (bottom - top) * (v / maxLoss);
  const yAcc = (v) => bottom - (bottom - top) * v;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#566074";
  ctx.fillText(maxLoss.toFixed(2), 4, top + 10);
  ctx.fillText("0", 4, bottom);
  ctx.fillText("100%", right + 6, top + 10);
  ctx.fillText("0%", right + 6, bottom);
  ctx.fillText(`step ${total}`, right - 50, height - 8);
  // Each step faint, and bold its exponential moving average (weight 0.9 on the past).
  const line = (color, y, key) => {
    const path = (values, alpha, widthPx) => {
      ctx.globalAlpha = alpha;
      ctx.strokeStyle = color;
      ctx.lineWidth = widthPx;
      ctx.beginPath();
      values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
      ctx.stroke();
      ctx.globalAlpha = 1;
    };
    const raw = steps.map((s) => s[key]);
    let average = raw[0];
    path(raw, 0.3, 1);
    path(raw.map((v) => average = 0.9 * average + 0.1 * v), 1, 3);
  };
  line("#e8812f", yAcc, "accuracy");
  line("#2f6fe8", yLoss, "loss");
  ctx.fillStyle = "#2f6fe8";
  ctx.fillText("loss", left + 8, height - 8);
  ctx.fillStyle = "#e8812f";
  ctx.fillText("batch accuracy", left + 48, height - 8);
  const rect = canvas.getBoundingClientRect();
  report.plot = {
    x: rect.left + scrollX,
    y: rect.top + scrollY,
    width: rect.width,
    height: rect.height,
    background: [255, 255, 255],
  };
}

// ---- training ---------------------------------------------------------------------------------

async function train() {
  const steps = Math.max(1, Number($("steps").value));
  const batchSize = Math.max(1, Number($("batch").value));
  const lr = Number($("lr").value);
  const dataset = currentDataset();
  classes = dataset.classes;
  report.classes = [...classes];
  report.config = { steps, batchSize, lr, dataset: dataset.name, count: dataset.count };
  report.steps = [];
  report.status = "training";
  model?.dispose();
  model = resnet(8, { numClasses: classes.length, seed: 0 });
  model.train();
  const opt = new optim.SGD(model.parameters(), { lr, momentum: 0.9, weightDecay: 5e-4 });
  const loader = new DataLoader(dataset, {
    batchSize,
    seed: 0,
    augment: { crop: true, flip: true },
    dropLast: dataset.count >= batchSize,
  });
  stopRequested = false;
  $("train").disabled = true;
  $("stop").disabled = false;
  $("save").disabled = true;
  const started = performance.now();
  try {
    while (report.steps.length < steps && !stopRequested) {
      for (const { images, labels } of loader.batches()) {
        const [loss, correct] = tidy(() => {
          const logits = model.forward(images);
          const loss = crossEntropy(logits, labels);
          const correct = correctCount(logits, labels);
          loss.backward();
          opt.step();
          opt.zeroGrad();
          return [loss, correct];
        });
        images.dispose();
        const [lossValue, correctValue] = await Promise.all([loss.item(), correct.item()]);
        loss.dispose();
        correct.dispose();
        const step = {
          step: report.steps.length + 1,
          loss: lossValue,
          accuracy: correctValue / labels.length,
          ms: performance.now() - started,
        };
        report.steps.push(step);
        drawPlot(report.steps, steps);
        setStatus(
          `step ${step.step}/${steps}: loss ${lossValue.toFixed(3)}, batch accuracy ` +
            `${(100 * step.accuracy).toFixed(0)}%, ${(step.ms / step.step).toFixed(0)} ms/step`,
        );
        if (report.steps.length >= steps || stopRequested) break;
      }
    }
  } finally {
    loader.dispose();
    $("train").disabled = false;
    $("stop").disabled = true;
    $("save").disabled = false;
  }
}

// ---- checkpoint -------------------------------------------------------------------------------

/** The model's state dict as safetensors bytes, with PyTorch's dtypes (I64 for counters). */
async function checkpointBytes() {
  const state = [...model.stateDict()];
  const values = await Promise.all(state.map(([, t]) => t.toArray()));
  const entries = state.map(([name, t], i) =>
    name.endsWith("num_batches_tracked")
      ? {
        name,
        shape: t.shape,
        dtype: "I64",
        data: BigInt64Array.from(values[i], (v) => BigInt(Math.round(v))),
      }
      : { name, shape: t.shape, dtype: "F32", data: values[i] }
  );
  const sums = Object.fromEntries(
    state.map(([name], i) => [name, values[i].reduce((a, v) => a + v, 0)]),
  );
  const bytes = encodeSafetensors(entries, { format: "pt", classes: JSON.stringify(classes) });
  return { bytes, sums };
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

async function save() {
  const { bytes, sums } = await checkpointBytes();
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  link.download = "resnet8.safetensors";
  link.textContent = `resnet8.safetensors (${(bytes.length / 1024).toFixed(0)} KiB)`;
  link.hidden = false;
  if (params.has("auto")) {
    report.checkpoint = { base64: toBase64(bytes), sums, bytes: bytes.length };
  } else {
    link.click();
  }
}

// ---- prediction -------------------------------------------------------------------------------

/** Top classes of one image: its bytes normalised as the loader does, through the eval model. */
async function predict(blob) {
  if (!model) throw new Error("train the model first");
  const pixels = await decodeImage(blob);
  drawPixels($("predict-image"), pixels);
  const input = new Float32Array(3 * PIXELS);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < PIXELS; i++) {
      input[c * PIXELS + i] = (pixels[c * PIXELS + i] / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c];
    }
  }
  model.eval();
  const logits = noGrad(() => {
    const x = Tensor.from(input, [1, 3, SIZE, SIZE]);
    const out = model.forward(x);
    x.dispose();
    return out;
  });
  model.train();
  const values = await logits.toArray();
  logits.dispose();
  const peak = Math.max(...values);
  const exp = values.map((v) => Math.exp(v - peak));
  const total = exp.reduce((a, v) => a + v, 0);
  const top = [...exp.keys()].sort((a, b) => exp[b] - exp[a]).slice(0, 3)
    .map((k) => ({ class: classes[k], probability: exp[k] / total }));
  $("predictions").replaceChildren(...top.map((t) => {
    const item = document.createElement("li");
    item.textContent = `${t.class}: ${(100 * t.probability).toFixed(1)}%`;
    return item;
  }));
  return { pixels: toBase64(pixels), logits: [...values], top };
}

onDrop($("predict-drop"), async (files) => {
  if (files.length) report.prediction = await predict(files[0]);
});

// ---- wiring -----------------------------------------------------------------------------------

$("train").addEventListener("click", () => train().then(() => report.status = "trained", fail));
$("stop").addEventListener("click", () => stopRequested = true);
$("save").addEventListener("click", () => save().catch(fail));

/** The first synthetic test image as a PNG file, as if it had been dropped on the page. */
async function syntheticPng() {
  const canvas = new OffscreenCanvas(SIZE, SIZE);
  drawPixels(canvas, synthetic.test.images.subarray(0, 3 * PIXELS));
  return await canvas.convertToBlob({ type: "image/png" });
}

async function main() {
  if (!navigator.gpu) {
    throw new Error(
      "navigator.gpu is undefined: this browser has no WebGPU (Chrome/Edge 113+ on Windows, " +
        "macOS and ChromeOS; on Linux start Chrome with --enable-unsafe-webgpu)",
    );
  }
  await initGPU();
  report.adapter = adapterDescription();
  $("adapter").textContent = report.adapter;
  showThumbnails(synthetic.train.images, synthetic.train.count);
  drawPlot([], 1);
  report.status = "ready";
  setStatus("ready: press Train");
  if (params.has("auto")) {
    await train();
    await save();
    const png = await syntheticPng();
    report.prediction = await predict(png);
    report.prediction.label = synthetic.test.classes[synthetic.test.labels[0]];
    report.status = "done";
  }
}

main().catch(fail);
