// Progress lines, curves, metrics.csv, early stopping and the training options of the CLI.
import assert from "node:assert/strict";
import { memoryStats, resetPeakMemory } from "../../src/gpu/buffer_pool.ts";
import { Linear } from "../../src/nn/linear.ts";
import { buildModel } from "../../src/train/models.ts";
import { type EpochMetrics, renderCurves, type StepPoint } from "../../src/train/curves.ts";
import { endEpoch } from "../../src/train/epoch_end.ts";
import { ProgressReporter } from "../../src/train/progress.ts";
import { train, type TrainConfig } from "../../src/train/trainer.ts";
import { main, UsageError } from "../../examples/train_cifar10.ts";
import { Tensor } from "../../src/tensor.ts";
import { cifarFiles, writeFolder } from "../data/_fixtures.ts";
import { gpuTest } from "../_gpu.ts";
import { config as tinyConfig, Recorder } from "./_run.ts";

/** The tiny run with 32 synthetic training images. */
function config(logDir: string, overrides: Partial<TrainConfig> = {}): TrainConfig {
  return tinyConfig(logDir, { syntheticSizes: { train: 32, test: 16 }, ...overrides });
}

function metrics(epoch: number, testAcc: number, lr = 0.1): EpochMetrics {
  return {
    epoch,
    step: 10 * epoch,
    lr,
    train_loss: 2 / epoch,
    train_acc: 0.3,
    test_loss: 2.5 / epoch,
    test_acc: testAcc,
    seconds: 3,
    images_per_sec: 100,
  };
}

Deno.test("a progress line shows the global step, lr, the run's ETA and the peak GPU memory", () => {
  const lines: string[] = [];
  const progress = new ProgressReporter({ write: (t) => lines.push(t), live: false });
  progress.update({
    epoch: 1,
    epochs: 3,
    batch: 5,
    batches: 5,
    loss: 2,
    accuracy: 0.25,
    imagesPerSecond: 100,
    etaSeconds: 0,
    step: 5,
    totalSteps: 15,
    runEtaSeconds: 125,
    lr: 0.1,
    peakMemoryBytes: 3 * 2 ** 20,
  });
  assert.equal(
    lines[0],
    "epoch 1/3  5/5  step 5/15  lr 0.100  loss 2.0000  acc 25.0%  100.0 img/s  ETA 2m05s " +
      "(epoch 0s)  peak GPU 3.0 MiB\n",
  );
  const live: string[] = [];
  new ProgressReporter({ write: (t) => live.push(t), live: true }).update({
    epoch: 1,
    epochs: 1,
    batch: 3,
    batches: 3,
    loss: 1,
    accuracy: 1,
    imagesPerSecond: NaN,
    etaSeconds: NaN,
    runEtaSeconds: NaN,
  });
  assert.match(live[0], /3\/3 █{24} .*ETA \? \(epoch \?\)$/);
});

/** The numbers of attribute `name` on the elements of `svg` whose tag starts with `tag`. */
function attrs(svg: string, tag: string, name: string): number[] {
  return [...svg.matchAll(new RegExp(`<${tag}[^>]*\\s${name}="([\\d.]+)"`, "g"))].map((m) =>
    Number(m[1])
  );
}

Deno.test("curves keep legends above the plot, label both axes' ticks, and plot the learning rate", () => {
  const steps: StepPoint[] = [1, 2, 3, 4].map((k) => ({
    step: 10 * k,
    epoch: k / 4,
    train_loss: 2.3 - 0.2 * k,
    train_acc: 0.1 * k,
    lr: 0.1,
  }));
  const svg = renderCurves([metrics(1, 0.4)], "resnet8", steps);
  const panels = svg.split('<g class="panel"').slice(1);
  assert.equal(panels.length, 3);
  assert.match(panels[2], /resnet8: learning rate/);
  for (const panel of panels) {
    const [top] = attrs(panel, 'rect class="plot-area"', "y");
    const legend = panel.slice(panel.indexOf('<g class="legend">'), panel.indexOf("</g>"));
    const legendBottoms = attrs(legend, "rect", "y").map((y) => y + 10);
    assert.ok(legendBottoms.length > 0 && legendBottoms.every((b) => b <= top), "legend above");
    const xTicks = [...panel.matchAll(/class="x-tick"[^>]*>([^<]+)</g)].map((m) => m[1]);
    const yTicks = [...panel.matchAll(/class="y-tick"[^>]*>([^<]+)</g)].map((m) => m[1]);
    assert.ok(xTicks.length >= 3 && yTicks.length >= 3, `ticks ${xTicks} / ${yTicks}`);
    for (const t of [...xTicks, ...yTicks]) assert.ok(t.length <= 7, `tick label "${t}" is short`);
    // One epoch: the per-step series is a line of 4 points.
    const lines = [...panel.matchAll(/<polyline[^>]*points="([^"]+)"/g)].map((m) =>
      m[1].split(" ").length
    );
    assert.ok(lines.some((n) => n === 4), `a 4-point line in each panel, got ${lines}`);
  }
  assert.deepEqual(
    [...panels[0].matchAll(/class="x-tick"[^>]*>([^<]+)</g)].map((m) => m[1]),
    ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"],
  );
  assert.deepEqual(
    [...panels[1].matchAll(/class="y-tick"[^>]*>([^<]+)</g)].map((m) => m[1]),
    ["0%", "20%", "40%", "60%", "80%", "100%"],
  );
  // Small learning rates in exponent notation, x ticks of a long run in whole epochs.
  const adam = renderCurves([1, 2, 3, 4, 5, 6, 7].map((e) => metrics(e, 0.5, 2.5e-4)));
  const lrPanel = adam.split('<g class="panel"')[3];
  const lrTicks = [...lrPanel.matchAll(/class="y-tick"[^>]*>([^<]+)</g)].map((m) => m[1]);
  assert.deepEqual(lrTicks, ["0", "5e-5", "1e-4", "1.5e-4", "2e-4", "2.5e-4"]);
  const epochs = [...lrPanel.matchAll(/class="x-tick"[^>]*>([^<]+)</g)].map((m) => m[1]);
  assert.deepEqual(epochs, ["0", "2", "4", "6", "8"]);
});

gpuTest(
  "endEpoch() writes metrics.csv beside metrics.jsonl and reports the peak GPU memory",
  async () => {
    const logDir = await Deno.makeTempDir();
    try {
      const model = new Linear(3, 2, { seed: 0 });
      const lines: string[] = [];
      const progress = new ProgressReporter({ write: (t) => lines.push(t), live: false });
      resetPeakMemory();
      const big = Tensor.empty([4 << 20]); // 16 MiB, released before the epoch ends
      big.dispose();
      assert.ok(memoryStats().inUseBytes < 16 * 2 ** 20);
      const history: EpochMetrics[] = [];
      for (const m of [metrics(1, 0.5), { ...metrics(2, 0.6), test_loss: NaN }]) {
        await endEpoch(m, { logDir, model, optimizer: null, checkpoint: m, history, progress });
        history.push(m);
      }
      const csv = (await Deno.readTextFile(`${logDir}/metrics.csv`)).split("\n");
      assert.equal(
        csv[0],
        "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,images_per_sec",
      );
      assert.equal(csv[1], "1,10,0.1,2,0.3,2.5,0.5,3,100");
      assert.equal(csv[2], "2,20,0.1,1,0.3,,0.6,3,100", "NaN is an empty cell");
      assert.equal(csv.length, 4);
      const jsonl = (await Deno.readTextFile(`${logDir}/metrics.jsonl`)).trim().split("\n");
      assert.equal(jsonl.length, csv.length - 2);
      const peak = Number(/peak GPU memory ([\d.]+) MiB/.exec(lines[0])![1]);
      assert.ok(peak >= 16, `peak ${peak} MiB includes the 16 MiB tensor`);
    } finally {
      await Deno.remove(logDir, { recursive: true });
    }
  },
);

gpuTest(
  "--patience stops a run whose test accuracy stops improving, and the summary says so",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      // lr 0: the test accuracy of epoch 2 equals epoch 1's, which is no improvement.
      const progress = new Recorder();
      const summary = await train(config(root, { epochs: 5, lr: 0, patience: 1 }), { progress });
      assert.equal(summary.epochs, 2);
      assert.equal(summary.stopped_early, true);
      assert.equal(summary.interrupted, false);
      assert.ok(progress.lines.some((l) => /^early stopping: .* 1 epochs \(patience 1\)/.test(l)));
      const written = JSON.parse(await Deno.readTextFile(`${root}/summary.json`));
      assert.equal(written.stopped_early, true);
      // Every update shows the global step, the run's ETA, the lr and the peak memory.
      const last = progress.states.at(-1)!;
      assert.equal(last.step, 4);
      assert.equal(last.totalSteps, 10);
      assert.equal(last.lr, 0);
      assert.ok(last.peakMemoryBytes! > 0);
      assert.ok(progress.states.every((s) => s.runEtaSeconds !== undefined));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "the progress bar and the epoch line end at --max-steps, not at the loader's or recipe's end",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const progress = new Recorder();
      const summary = await train(
        config(root, { epochs: 3, maxSteps: 3, syntheticSizes: { train: 64, test: 16 } }),
        { progress },
      );
      assert.equal(summary.steps, 3);
      const last = progress.states.at(-1)!;
      assert.deepEqual(
        [last.epoch, last.epochs, last.batch, last.batches, last.step, last.totalSteps],
        [1, 1, 3, 3, 3, 3],
      );
      assert.equal(last.runEtaSeconds, 0);
      // The epoch's line counts this run's epochs as the bar does, not the recipe's 3.
      const epochLine = progress.lines.find((line) => line.startsWith("epoch 1/"));
      assert.ok(epochLine?.startsWith("epoch 1/1 "), `epoch line: ${epochLine}`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "label smoothing, gradient clipping and cutout reach the training step",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const quiet = () => new Recorder();
      // lr 0: smoothing changes the training loss only; the test loss is plain cross-entropy.
      const plain = await train(config(`${root}/a`, { epochs: 1, lr: 0 }), { progress: quiet() });
      const smooth = await train(config(`${root}/b`, { epochs: 1, lr: 0, labelSmoothing: 0.5 }), {
        progress: quiet(),
      });
      assert.equal(plain.epochs, 1);
      assert.equal(smooth.epochs, 1);
      const read = async (dir: string) =>
        JSON.parse((await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim());
      const [a, b] = [await read(`${root}/a`), await read(`${root}/b`)];
      assert.equal(b.test_loss, a.test_loss);
      assert.notEqual(b.train_loss, a.train_loss);

      // Clipping to norm 0 zeroes every gradient: without weight decay nothing moves.
      const clipped = config(`${root}/c`, {
        epochs: 1,
        lr: 0.5,
        weightDecay: 0,
        clipGradNorm: 0,
        augment: { crop: true, flip: true, cutout: 16 },
      });
      await train(clipped, { progress: quiet() });
      const { loadSafetensors } = await import("../../src/io/safetensors.ts");
      const saved = await loadSafetensors(`${root}/c/last.safetensors`);
      const initial = buildModel("resnet8", clipped.seed, 10);
      for (const [name, p] of initial.namedParameters()) {
        assert.deepEqual(await saved.get(name)!.toArray(), await p.toArray(), name);
      }
      for (const t of saved.values()) t.dispose();
      initial.dispose();
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest("the long-run warning is left out for synthetic data and --max-steps runs", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeFolder(`${root}/cifar-10-batches-bin`, cifarFiles([16, 16, 16, 16, 16], 16));
    const stopAt4 = {
      onStepEnd: ({ step }: { step: number }) => step === 4 ? "stop" as const : undefined,
    };
    let runs = 0;
    const run = async (overrides: Partial<TrainConfig>) => {
      const progress = new Recorder();
      await train(
        config(`${root}/run${++runs}`, {
          epochs: 100_000,
          dataDir: root,
          ...overrides,
        }),
        { progress, ...stopAt4 },
      );
      const estimate = progress.lines.some((l) => l.startsWith("estimate: "));
      return { estimate, warned: progress.lines.some((l) => /^This run would take/.test(l)) };
    };
    assert.deepEqual(await run({ dataset: "cifar10" }), { estimate: true, warned: true });
    assert.deepEqual(await run({ dataset: "synthetic" }), { estimate: true, warned: false });
    assert.deepEqual(
      await run({ dataset: "cifar10", maxSteps: 4_000_000 }),
      { estimate: true, warned: false },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the train CLI checks --patience, --label-smoothing, --clip-grad-norm, --augment cutout", async () => {
  for (
    const args of [
      ["--patience", "0"],
      ["--label-smoothing", "1.5"],
      ["--label-smoothing", "-0.1"],
      ["--clip-grad-norm", "-1"],
      ["--augment", "cutout=0"],
      ["--augment", "cutout=33"],
      ["--augment", "cutout=x"],
    ]
  ) {
    await assert.rejects(() => main(args), UsageError, `accepted ${args.join(" ")}`);
  }
});

gpuTest("a run with cutout, label smoothing and clipping resumes bit for bit", async () => {
  const root = await Deno.makeTempDir();
  try {
    const options = {
      augment: { crop: true, flip: true, cutout: 12 },
      labelSmoothing: 0.1,
      clipGradNorm: 1,
    };
    await train(config(`${root}/a`, options), { progress: new Recorder() });
    await train(config(`${root}/b`, { ...options, maxSteps: 3 }), { progress: new Recorder() });
    await train(config(`${root}/b`, options), {
      progress: new Recorder(),
      resumeFrom: `${root}/b/last.safetensors`,
    });
    const { loadSafetensors } = await import("../../src/io/safetensors.ts");
    const [a, b] = [
      await loadSafetensors(`${root}/a/last.safetensors`),
      await loadSafetensors(`${root}/b/last.safetensors`),
    ];
    assert.deepEqual([...b.keys()], [...a.keys()]);
    for (const [key, t] of a) assert.deepEqual(await b.get(key)!.toArray(), await t.toArray(), key);
    for (const t of [...a.values(), ...b.values()]) t.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
