// The browser build end to end: the bundle holds no Deno API, and the example page trains a
// ResNet in Debian's headless Chromium (WebGPU on SwiftShader), driven through the DevTools
// protocol. Needs `chromium` on PATH (`apt-get install chromium`; .ci/run installs it).
import assert from "node:assert/strict";
import { buildBundle, BUNDLE_URL, serveExample } from "../../examples/browser/serve.ts";
import { decodeSafetensors } from "../../src/io/safetensors.ts";
import { resnet } from "../../src/nn/resnet.ts";
import { noGrad } from "../../src/autograd.ts";
import { CIFAR10_MEAN, CIFAR10_STD } from "../../src/data/cifar10.ts";
import { Tensor } from "../../src/tensor.ts";
import { initGPU } from "../../src/gpu/device.ts";
import { Browser, decodePng, findChromium, waitForReport } from "./_chromium.ts";

/** A use of the Deno namespace in bundled code: `Deno.x`, `Deno?.x`, `Deno[x]`. */
const DENO_API = /\bDeno\s*(?:\?\.|\.|\[)/g;

/** Each use of {@link DENO_API} in `code`, with the code around it. */
function denoUses(code: string): string[] {
  return [...code.matchAll(DENO_API)].map((m) =>
    code.slice(Math.max(0, m.index - 60), m.index + 40)
  );
}

let bundled: Promise<void> | null = null;
/** Runs `deno task bundle` once for every test of this file. */
function bundle(): Promise<void> {
  return bundled ??= buildBundle();
}

Deno.test("browser bundle: deno task bundle writes an ES module with no Deno.* call in it", async () => {
  await bundle();
  const code = await Deno.readTextFile(BUNDLE_URL);
  assert.deepEqual(denoUses(code), [], "a Deno-only API is reachable from browser.ts");
  assert.doesNotMatch(code, /from\s*["']node:/, "the bundle imports a node: module");
  const mod = await import(BUNDLE_URL.href);
  for (const name of ["initGPU", "Tensor", "resnet", "encodeSafetensors"]) {
    assert.ok(mod[name], `the bundle exports ${name}`);
  }
  assert.equal(typeof mod.data.DataLoader, "function");
  assert.equal(mod.data.ensureCifar10, undefined, "the CIFAR-10 download writes files");
  assert.equal(typeof mod.nn.Conv2d, "function");
  assert.equal(typeof mod.optim.SGD, "function");
  assert.equal(mod.loadSafetensors, undefined, "loadSafetensors reads files: not for browsers");
});

Deno.test("browser bundle: the Deno.* scan finds the file APIs when mod.ts is bundled instead", async () => {
  // The check above is only as good as its pattern: mod.ts reaches Deno.readFile and friends.
  const out = await Deno.makeTempFile({ suffix: ".js" });
  try {
    const { success } = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "--minify", "--output", out, "mod.ts"],
      cwd: new URL("../../", import.meta.url),
      stdout: "null",
      stderr: "inherit",
    }).output();
    assert.ok(success, "deno bundle mod.ts failed");
    const uses = denoUses(await Deno.readTextFile(out)).join("\n");
    for (const api of ["Deno.readFile", "Deno.rename", "Deno.mkdir"]) {
      assert.match(uses, RegExp(api));
    }
  } finally {
    await Deno.remove(out);
  }
});

const STEPS = 16;

/**
 * Run in the page after the automatic run: drops 8 PNGs (`red_N.png`, `blue_N.png`, noisy solid
 * colours) on the training zone, trains 2 steps with the Train button, then drops one PNG on the
 * prediction zone; resolves to the classes, the steps run and the predicted classes.
 */
const DROP_FILES_SCRIPT = `(async () => {
  const png = async (name, rgb, seed) => {
    const canvas = new OffscreenCanvas(48, 40);
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(48, 40);
    for (let i = 0; i < 48 * 40; i++) {
      for (let c = 0; c < 3; c++) image.data[4 * i + c] = rgb[c] + ((i * 7919 + seed * 31 + c) % 40);
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    return new File([await canvas.convertToBlob({ type: "image/png" })], name, { type: "image/png" });
  };
  const drop = (id, files) => {
    const dataTransfer = new DataTransfer();
    for (const file of files) dataTransfer.items.add(file);
    document.getElementById(id).dispatchEvent(
      new DragEvent("drop", { dataTransfer, bubbles: true, cancelable: true }),
    );
  };
  const until = async (ok) => {
    for (let i = 0; i < 1200 && !ok(); i++) await new Promise((r) => setTimeout(r, 100));
    if (!ok()) throw new Error("timed out; status " + __report.status + ", " + __report.error);
  };
  const files = [];
  for (let i = 0; i < 4; i++) {
    files.push(await png("red_" + i + ".png", [200, 20, 20], i));
    files.push(await png("blue-" + i + ".png", [20, 20, 200], i));
  }
  drop("train-drop", files);
  await until(() => document.getElementById("file-count").textContent === "8");
  document.getElementById("steps").value = "2";
  document.getElementById("batch").value = "4";
  document.getElementById("train").click();
  await until(() => __report.status === "trained" || __report.status === "error");
  const steps = __report.steps.length;
  __report.prediction = null;
  drop("predict-drop", [await png("query.png", [210, 30, 30], 9)]);
  await until(() => __report.prediction !== null || __report.status === "error");
  return { classes: __report.classes, steps, top: __report.prediction.top.map((t) => t.class) };
})()`;
const PAGE_QUERY = `?auto&steps=${STEPS}&batch=8&train=16&lr=0.05`;

Deno.test({
  name: "browser page: resnet(8) trains in headless Chromium, the loss falls, the plot is drawn, " +
    "the page's checkpoint loads in Deno with the same values and logits, and dropped PNG files " +
    "train and predict",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const chromium = await findChromium();
    if (!chromium) {
      throw new Error(
        "Chromium is not installed, and this test drives the example page in it: install it " +
          "with `apt-get install chromium` (Debian/Ubuntu; .ci/run does this), or set CHROMIUM " +
          "to a Chromium or Chrome executable",
      );
    }
    await bundle();
    let url = "";
    const server = serveExample({ port: 0, onListen: (address) => url = address });
    let browser: Browser | null = null;
    try {
      browser = await Browser.launch(chromium, url + PAGE_QUERY);
      const report = await waitForReport(browser, 240_000);
      console.log(
        `adapter: ${report.adapter}\n` +
          report.steps.map((s) =>
            `step ${s.step}: loss ${s.loss.toFixed(4)}, accuracy ${s.accuracy}, ` +
            `${s.ms.toFixed(0)} ms`
          ).join("\n") +
          `\nprediction: ${JSON.stringify(report.prediction?.top)} (label ` +
          `${report.prediction?.label})`,
      );

      // Training ran and learned: the two batches of 8 images repeat, so the loss must fall.
      assert.equal(report.steps.length, STEPS);
      for (const s of report.steps) assert.ok(Number.isFinite(s.loss), `step ${s.step} loss`);
      const first = (report.steps[0].loss + report.steps[1].loss) / 2;
      const last = (report.steps[STEPS - 1].loss + report.steps[STEPS - 2].loss) / 2;
      assert.ok(last < 0.6 * first, `mean loss of two steps fell from ${first} to ${last}`);

      // The plot is drawn: non-white pixels inside the plot's canvas, some in the loss colour.
      const png = await browser.screenshot();
      const screenshotPath = Deno.env.get("BROWSER_SCREENSHOT");
      if (screenshotPath) await Deno.writeFile(screenshotPath, png);
      const { width, rgba } = await decodePng(png);
      const plot = report.plot!;
      let ink = 0;
      let lossInk = 0;
      for (let y = Math.ceil(plot.y) + 2; y < plot.y + plot.height - 2; y++) {
        for (let x = Math.ceil(plot.x) + 2; x < plot.x + plot.width - 2; x++) {
          const [r, g, b] = rgba.subarray(4 * (y * width + x), 4 * (y * width + x) + 3);
          if (r < 240 || g < 240 || b < 240) ink++;
          if (Math.abs(r - 0x2f) < 24 && Math.abs(g - 0x6f) < 24 && Math.abs(b - 0xe8) < 24) {
            lossInk++;
          }
        }
      }
      console.log(`plot: ${ink} non-white pixels, ${lossInk} in the loss colour`);
      assert.ok(ink > 2000, `the plot has ${ink} non-white pixels`);
      assert.ok(lossInk > 800, `the loss curve has ${lossInk} pixels in its colour`);

      // The checkpoint saved in the page decodes in Deno to the values the page summed.
      const bytes = Uint8Array.from(atob(report.checkpoint!.base64), (c) => c.charCodeAt(0));
      const { metadata, tensors } = decodeSafetensors(bytes, "page checkpoint");
      assert.deepEqual(JSON.parse(metadata.classes), report.classes);
      assert.deepEqual([...tensors.keys()].sort(), Object.keys(report.checkpoint!.sums).sort());
      for (const [name, { values }] of tensors) {
        const sum = values.reduce((a, v) => a + v, 0);
        assert.equal(sum, report.checkpoint!.sums[name], `sum of ${name}`);
      }
      const counters = [...tensors].filter(([name]) => name.endsWith("num_batches_tracked"));
      assert.ok(counters.length > 0 && counters.every(([, t]) => t.dtype === "I64"));
      assert.equal(counters[0][1].values[0], STEPS, "batch norm counted every step");

      // Loaded into a model here (Deno's WebGPU), it gives the logits the page's model gave.
      await initGPU();
      const model = resnet(8, { numClasses: report.classes.length });
      model.loadStateDict(
        new Map([...tensors].map(([name, t]) => [name, Tensor.from(t.values, t.shape)])),
      );
      model.eval();
      const pixels = Uint8Array.from(atob(report.prediction!.pixels), (c) => c.charCodeAt(0));
      const input = Float32Array.from(
        pixels,
        (p, i) => (p / 255 - CIFAR10_MEAN[i >> 10]) / CIFAR10_STD[i >> 10],
      );
      const logits = await noGrad(() => model.forward(Tensor.from(input, [1, 3, 32, 32])))
        .toArray();
      const expected = report.prediction!.logits;
      const scale = Math.max(1, ...expected.map(Math.abs));
      for (let k = 0; k < expected.length; k++) {
        assert.ok(
          Math.abs(logits[k] - expected[k]) < 1e-3 * scale,
          `logit ${k}: Deno ${logits[k]}, page ${expected[k]}`,
        );
      }
      model.dispose();

      // Dropped files: PNGs made in the page and dropped (a DragEvent with a DataTransfer) on
      // the training zone train a two-class model, and one dropped on the prediction zone gets
      // those classes' probabilities.
      const dropped = await browser.evaluate<{ classes: string[]; steps: number; top: string[] }>(
        DROP_FILES_SCRIPT,
      );
      assert.deepEqual(dropped.classes, ["blue", "red"]);
      assert.equal(dropped.steps, 2);
      assert.deepEqual([...dropped.top].sort(), ["blue", "red"]);
    } finally {
      await browser?.close();
      await server.shutdown();
    }
  },
});
