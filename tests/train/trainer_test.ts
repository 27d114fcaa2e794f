import assert from "node:assert/strict";
import { CIFAR10_MEAN, CIFAR10_STD } from "../../src/data/cifar10.ts";
import { SYNTHETIC_CLASSES } from "../../src/data/synthetic.ts";
import { loadSafetensors } from "../../src/io/safetensors.ts";
import { type StepEndContext, train } from "../../src/train/trainer.ts";
import { main, UsageError } from "../../examples/train_cifar10.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { gpuTest } from "../_gpu.ts";
import { config, Recorder } from "./_run.ts";

async function weights(path: string): Promise<Map<string, Float32Array>> {
  const tensors = await loadSafetensors(path);
  const out = new Map<string, Float32Array>();
  for (const [k, t] of tensors) {
    out.set(k, await t.toArray());
    t.dispose();
  }
  return out;
}

gpuTest("2 epochs equal 1 epoch + resume + 1 epoch, bit for bit, and mid-epoch too", async () => {
  const root = await Deno.makeTempDir();
  try {
    const straight = await train(config(`${root}/a`), { progress: new Recorder() });
    assert.equal(straight.epochs, 2);
    assert.equal(straight.steps, 8);

    // Stop after the first epoch (max-steps), then resume with the same flags.
    await train(config(`${root}/b`, { maxSteps: 4 }), { progress: new Recorder() });
    const resumed = await train(config(`${root}/b`), {
      progress: new Recorder(),
      resumeFrom: `${root}/b/last.safetensors`,
    });
    assert.equal(resumed.steps, 8);

    // Interrupt mid-epoch (Ctrl-C), then resume.
    const controller = new AbortController();
    const quiet = new Recorder();
    quiet.onUpdate = (s) => {
      if (s.epoch === 1 && s.batch === 2) controller.abort();
    };
    const stopped = await train(config(`${root}/c`), {
      progress: quiet,
      signal: controller.signal,
    });
    assert.ok(stopped.interrupted);
    assert.equal(stopped.steps, 2);
    await train(config(`${root}/c`), {
      progress: new Recorder(),
      resumeFrom: `${root}/c/last.safetensors`,
    });

    const a = await weights(`${root}/a/last.safetensors`);
    for (const run of ["b", "c"]) {
      const other = await weights(`${root}/${run}/last.safetensors`);
      assert.deepEqual([...other.keys()], [...a.keys()]);
      for (const [key, values] of a) {
        assert.deepEqual(other.get(key), values, `run ${run}: ${key} differs`);
      }
    }
    const metrics = (await Deno.readTextFile(`${root}/b/metrics.jsonl`)).trim().split("\n");
    assert.equal(metrics.length, 2);
    assert.deepEqual(
      JSON.parse(metrics[1]).test_acc,
      JSON.parse((await Deno.readTextFile(`${root}/a/metrics.jsonl`)).trim().split("\n")[1])
        .test_acc,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest("a short synthetic run learns well above chance and writes every output", async () => {
  const root = await Deno.makeTempDir();
  try {
    const summary = await train(
      config(root, {
        epochs: 2,
        batchSize: 32,
        lr: 0.1,
        syntheticSizes: { train: 480, test: 200 },
      }),
      { progress: new Recorder() },
    );
    assert.ok(summary.best_test_accuracy > 0.3, `test accuracy ${summary.best_test_accuracy}`);
    const lines = (await Deno.readTextFile(`${root}/metrics.jsonl`)).trim().split("\n");
    const first = JSON.parse(lines[0]);
    for (
      const key of [
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
        "images_per_sec",
      ]
    ) {
      assert.equal(typeof first[key], "number", key);
    }
    const written = JSON.parse(await Deno.readTextFile(`${root}/summary.json`));
    assert.equal(written.model, "resnet8");
    assert.equal(written.final_test_accuracy, summary.final_test_accuracy);
    assert.ok(typeof written.adapter === "string" && written.adapter.length > 0);
    const svg = await Deno.readTextFile(`${root}/curves.svg`);
    assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    // Loss and accuracy: per step, train and test per epoch; the learning rate per step.
    assert.equal((svg.match(/<polyline/g) ?? []).length, 7);
    assert.ok((await Deno.readTextFile(`${root}/metrics.csv`)).startsWith("epoch,step,lr,"));
    const metadata: Record<string, string> = {};
    const best = await loadSafetensors(`${root}/best.safetensors`, { metadata });
    assert.ok(best.has("0.blocks.2.shortcut.bn.running_var"));
    // How predict() prepares images: the loaders' normalization and the data set's class names.
    const { input } = JSON.parse(metadata.extra);
    assert.deepEqual(input, {
      size: 32,
      mean: [...CIFAR10_MEAN],
      std: [...CIFAR10_STD],
      classes: [...SYNTHETIC_CLASSES],
    });
    assert.ok(best.has("optimizer.0.momentum_buffer"));
    for (const t of best.values()) t.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest(
  'onStepEnd returning "stop" saves a checkpoint mid-epoch that resumes exactly',
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const seen: Omit<StepEndContext, "loss" | "model" | "optimizer">[] = [];
      const losses: number[] = [];
      const stopped = await train(config(`${root}/a`), {
        progress: new Recorder(),
        onStepEnd: async ({ loss, model: _model, optimizer: _optimizer, ...where }) => {
          seen.push(where);
          losses.push(await loss.item());
          if (where.step === 3) return "stop";
        },
      });
      assert.equal(stopped.interrupted, true);
      assert.equal(stopped.steps, 3);
      assert.equal(stopped.epochs, 0);
      assert.deepEqual(seen.map((s) => [s.epoch, s.batch, s.step]), [[1, 1, 1], [1, 2, 2], [
        1,
        3,
        3,
      ]]);
      assert.deepEqual(
        [seen[0].epochs, seen[0].batches, seen[0].totalSteps],
        [2, 4, 8],
      );
      assert.ok(losses.every((l) => Number.isFinite(l) && l > 0), `losses ${losses}`);
      await assert.rejects(Deno.stat(`${root}/a/metrics.jsonl`), Deno.errors.NotFound);

      const resumed = await train(config(`${root}/a`), {
        progress: new Recorder(),
        resumeFrom: `${root}/a/last.safetensors`,
      });
      assert.equal(resumed.steps, 8);
      assert.equal(resumed.interrupted, false);
      const straight = await train(config(`${root}/b`), { progress: new Recorder() });
      assert.equal(straight.final_test_accuracy, resumed.final_test_accuracy);
      const a = await weights(`${root}/a/last.safetensors`);
      const b = await weights(`${root}/b/last.safetensors`);
      for (const [key, values] of b) assert.deepEqual(a.get(key), values, key);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest('onEpochEnd returning "stop" ends the run after that epoch\'s files', async () => {
  const root = await Deno.makeTempDir();
  try {
    const small = { epochs: 3, syntheticSizes: { train: 32, test: 16 } };
    const ends: [number, number, boolean][] = [];
    const summary = await train(config(root, small), {
      progress: new Recorder(),
      onEpochEnd: ({ metrics, history, isBest }) => {
        ends.push([metrics.epoch, history.length, isBest]);
        return metrics.epoch === 2 ? "stop" : undefined;
      },
    });
    assert.deepEqual(ends.map(([epoch, epochs]) => [epoch, epochs]), [[1, 1], [2, 2]]);
    assert.equal(ends[0][2], true, "the first epoch is the best so far");
    assert.equal(summary.epochs, 2);
    assert.equal(summary.steps, 4);
    assert.equal(summary.interrupted, true);
    const lines = (await Deno.readTextFile(`${root}/metrics.jsonl`)).trim().split("\n");
    assert.equal(lines.length, 2);
    assert.equal(JSON.parse(lines[1]).step, 4);
    assert.ok((await Deno.stat(`${root}/last.safetensors`)).isFile);

    // A stop at the run's last epoch is no interruption: the run was over anyway.
    const last = await train(config(`${root}/last`, { ...small, epochs: 1 }), {
      progress: new Recorder(),
      onEpochEnd: () => "stop",
    });
    assert.equal(last.epochs, 1);
    assert.equal(last.interrupted, false);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the train CLI refuses bad flags with a usage error", async () => {
  const bad = [
    ["--epochs", "0"],
    ["--batch-size", "x"],
    ["--lr", "-1"],
    ["--optimizer", "rmsprop"],
    ["--schedule", "linear"],
    ["--augment", "rotate"],
    ["--dataset", "imagenet"],
    ["--model", "resnet21"],
    ["--momentum", "1.5"],
    ["--eval-only"],
    ["--checkpoint", "x.safetensors"],
    ["--unknown-flag"],
  ];
  for (const args of bad) {
    await assert.rejects(() => main(args), UsageError, `accepted ${args.join(" ")}`);
  }
  assert.equal(await main(["--help"]), 0);
});

gpuTest(
  "a training step is one submit: each step that reads nothing back submits once",
  async () => {
    // On lavapipe a second submit waits until the first has run, so a step split into two submits
    // could not encode while the GPU works on the step before it.
    const root = await Deno.makeTempDir();
    try {
      const steps: { submits: number; readbacks: number }[] = [];
      let last = gpuCounters();
      await train(config(root, { epochs: 1, syntheticSizes: { train: 256, test: 16 } }), {
        progress: new Recorder(),
        onStepEnd: () => {
          const now = gpuCounters();
          steps.push({
            submits: now.submits - last.submits,
            readbacks: now.readbacks - last.readbacks,
          });
          last = now;
          return undefined;
        },
      });
      assert.equal(steps.length, 16);
      const quiet = steps.filter((s) => s.readbacks === 0);
      assert.ok(quiet.length > 0, JSON.stringify(steps));
      assert.ok(quiet.every((s) => s.submits === 1), JSON.stringify(steps));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
