// `deno run -A tools/browser_screenshot.ts [steps]`: trains in the example page in headless
// Chromium (as tests/browser/page_test.ts does, with more steps and images) and writes the page's
// screenshot to examples/browser/screenshot.png, the one the README shows.
import { buildBundle, serveExample } from "../examples/browser/serve.ts";
import { Browser, findChromium, waitForReport } from "../tests/browser/_chromium.ts";

const steps = Number(Deno.args[0] ?? 150);
const output = new URL("../examples/browser/screenshot.png", import.meta.url);
const chromium = await findChromium();
if (!chromium) throw new Error("install chromium first: apt-get install chromium");
await buildBundle();
let url = "";
const server = serveExample({ port: 0, onListen: (address) => url = address });
const browser = await Browser.launch(chromium, `${url}?auto&steps=${steps}&batch=16&train=480`, {
  width: 1000,
  height: 1080,
});
try {
  const report = await waitForReport(browser, 30 * 60_000);
  const last = report.steps[report.steps.length - 1];
  console.log(`${report.adapter}: ${steps} steps, last loss ${last.loss.toFixed(3)}`);
  await Deno.writeFile(output, await browser.screenshot());
  console.log(`wrote ${output.pathname}`);
} finally {
  await browser.close();
  await server.shutdown();
}
