// endEpoch(): the files an epoch's end writes, and when best.safetensors changes.
import assert from "node:assert/strict";
import { Linear } from "../../src/nn/linear.ts";
import { SGD } from "../../src/optim/sgd.ts";
import type { EpochMetrics } from "../../src/train/curves.ts";
import { endEpoch } from "../../src/train/epoch_end.ts";
import { loadCheckpoint } from "../../src/train/checkpoint.ts";
import { ProgressReporter } from "../../src/train/progress.ts";
import { gpuTest } from "../_gpu.ts";

function metrics(epoch: number, testAcc: number): EpochMetrics {
  return {
    epoch,
    step: 10 * epoch,
    lr: 0.1,
    train_loss: 1 / epoch,
    train_acc: 0.5,
    test_loss: 1.5 / epoch,
    test_acc: testAcc,
    seconds: 65,
    images_per_sec: 512,
  };
}

gpuTest("endEpoch() appends metrics, redraws curves, saves last and keeps the best", async () => {
  const logDir = `${await Deno.makeTempDir()}/run`;
  try {
    const model = new Linear(3, 2, { seed: 0 });
    const optimizer = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    const lines: string[] = [];
    const progress = new ProgressReporter({ write: (text) => lines.push(text), live: false });
    const history: EpochMetrics[] = [];
    const bestEpoch = async () => {
      const best = await loadCheckpoint(`${logDir}/best.safetensors`);
      best.dispose();
      return best.epoch;
    };
    const results: boolean[] = [];
    for (const [epoch, acc] of [[1, 0.5], [2, 0.4], [3, 0.6], [4, 0.6]]) {
      const m = metrics(epoch, acc);
      const { isBest } = await endEpoch(m, {
        logDir,
        model,
        optimizer,
        checkpoint: { epoch, step: m.step, extra: { note: "resume state" } },
        history,
        epochs: 4,
        title: "linear",
        progress,
      });
      history.push(m);
      results.push(isBest);
      assert.equal(await bestEpoch(), epoch === 2 ? 1 : epoch === 4 ? 3 : epoch);
    }
    assert.deepEqual(results, [true, false, true, false]);
    const written = (await Deno.readTextFile(`${logDir}/metrics.jsonl`)).trim().split("\n");
    assert.deepEqual(written.map((l) => JSON.parse(l)), history);
    const svg = await Deno.readTextFile(`${logDir}/curves.svg`);
    assert.match(svg, /linear: accuracy/);
    const last = await loadCheckpoint(`${logDir}/last.safetensors`);
    assert.equal(last.step, 40);
    assert.deepEqual(last.extra, { note: "resume state" });
    last.dispose();
    assert.match(
      lines[2],
      /^epoch 3\/4 {2}step 30 {2}lr 0\.100 {2}train loss 0\.3333 acc 50\.00% {2}test loss 0\.5000 acc 60\.00% {2}512\.0 img\/s {2}1m05s {2}peak GPU memory [\d.]+ MiB\n$/,
    );
  } finally {
    await Deno.remove(`${logDir}/..`, { recursive: true });
  }
});
