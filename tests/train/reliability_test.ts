// A run's files stay consistent whatever happens to it: a log folder holds one run, the
// checkpoint is the source of truth for metrics.jsonl on resume, an epoch interrupted before its
// evaluation is evaluated with its real train metrics, a diverging run stops keeping its last
// good checkpoint, and a checkpoint that does not fit is refused before any tensor is uploaded.
import assert from "node:assert/strict";
import {
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsEntry,
} from "../../src/io/safetensors.ts";
import { Linear } from "../../src/nn/linear.ts";
import { loadCheckpoint } from "../../src/train/checkpoint.ts";
import { train } from "../../src/train/trainer.ts";
import { gpuTest } from "../_gpu.ts";
import { config, Recorder } from "./_run.ts";

async function lines(path: string): Promise<Record<string, number>[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
}

/** Rewrites a checkpoint's metadata through `edit`, keeping its tensors. */
async function editMetadata(path: string, edit: (m: Record<string, string>) => void) {
  const { metadata, tensors } = decodeSafetensors(await Deno.readFile(path));
  edit(metadata);
  const entries: SafetensorsEntry[] = [...tensors].map(([name, t]) =>
    t.dtype === "I64"
      ? { name, shape: t.shape, dtype: "I64", data: BigInt64Array.from(t.values, BigInt) }
      : { name, shape: t.shape, dtype: "F32", data: t.values }
  );
  await Deno.writeFile(path, encodeSafetensors(entries, metadata));
}

gpuTest(
  "a log dir holding another run is refused; --overwrite replaces it; best is kept",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      await train(config(root, { epochs: 1 }), { progress: new Recorder() });
      const best = await Deno.readFile(`${root}/best.safetensors`);
      const metrics = await Deno.readTextFile(`${root}/metrics.jsonl`);
      await assert.rejects(
        () => train(config(root, { epochs: 1, seed: 8 }), { progress: new Recorder() }),
        /The log dir ".*" holds another run \(metrics.jsonl, last.safetensors, best.safetensors, summary.json, curves.svg\); pass --resume .*last.safetensors to continue it, --overwrite to replace it, or another --log-dir/,
      );
      assert.deepEqual(await Deno.readFile(`${root}/best.safetensors`), best);
      assert.equal(await Deno.readTextFile(`${root}/metrics.jsonl`), metrics);

      // A live run's lock: the operating system's, held here by an open file.
      const lock = await Deno.open(`${root}/run.lock`, { write: true, create: true });
      await lock.lock(true);
      await lock.write(new TextEncoder().encode('{"pid": 4242}\n'));
      try {
        await assert.rejects(
          () => train(config(root, { epochs: 1 }), { progress: new Recorder(), overwrite: true }),
          /The log dir ".*" is in use by a live run \(pid 4242, see .*run.lock\)/,
        );
      } finally {
        await lock.unlock();
        lock.close();
      }

      const quiet = new Recorder();
      await train(config(root, { epochs: 1, seed: 8 }), { progress: quiet, overwrite: true });
      assert.ok(quiet.lines.some((l) => l.startsWith("--overwrite: removed the earlier run's")));
      assert.equal((await lines(`${root}/metrics.jsonl`)).length, 1);
      await assert.rejects(Deno.stat(`${root}/run.lock`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "leftover temporary files of a killed write are removed at start; others are kept",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const ours = [
        "last.safetensors.tmp-0123abcd",
        "best.safetensors.tmp",
        "metrics.jsonl.tmp-9f",
      ];
      for (const name of [...ours, "notes.txt.tmp-0123abcd"]) {
        await Deno.writeTextFile(`${root}/${name}`, "half");
      }
      const quiet = new Recorder();
      await train(config(root, { epochs: 1 }), { progress: quiet });
      const left = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name);
      for (const name of ours) assert.ok(!left.includes(name), `${name} is still there`);
      assert.ok(left.includes("notes.txt.tmp-0123abcd"));
      assert.ok(
        quiet.lines.some((l) => /^removed 3 temporary file\(s\) a killed write left/.test(l)),
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "resume rewrites metrics.jsonl to the checkpoint: no duplicate, extra or torn line",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      await train(config(`${root}/a`), { progress: new Recorder() });
      const straight = await lines(`${root}/a/metrics.jsonl`);

      // Killed after epoch 1's checkpoint, a metrics file that says more than the checkpoint.
      await train(config(`${root}/b`), { progress: new Recorder(), onEpochEnd: () => "stop" });
      const path = `${root}/b/metrics.jsonl`;
      const first = (await Deno.readTextFile(path)).trim();
      await Deno.writeTextFile(path, `${first}\n${first}\n{"epoch":2,"step":8,"lr":0.0`);
      const quiet = new Recorder();
      await train(config(`${root}/b`), {
        progress: quiet,
        resumeFrom: `${root}/b/last.safetensors`,
      });
      assert.ok(quiet.lines.some((l) => /held 3 line\(s\); rewritten to the 1 epoch/.test(l)));
      const resumed = await lines(path);
      assert.deepEqual(resumed.map((m) => m.epoch), [1, 2]);
      assert.equal(resumed[1].test_acc, straight[1].test_acc);
      assert.equal(resumed[1].train_loss, straight[1].train_loss);

      // A checkpoint ahead of metrics.jsonl (killed between the two writes) restores the line.
      await train(config(`${root}/c`), { progress: new Recorder(), onEpochEnd: () => "stop" });
      await Deno.remove(`${root}/c/metrics.jsonl`);
      await train(config(`${root}/c`), {
        progress: new Recorder(),
        resumeFrom: `${root}/c/last.safetensors`,
      });
      assert.deepEqual((await lines(`${root}/c/metrics.jsonl`)).map((m) => m.epoch), [1, 2]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "an epoch stopped after its last batch is evaluated on resume with its real train metrics",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      await train(config(`${root}/a`), { progress: new Recorder() });
      const straight = await lines(`${root}/a/metrics.jsonl`);

      // Stopped at epoch 1's last batch (trained, not evaluated), and at a mid-epoch batch.
      for (const stopAt of [4, 2]) {
        const dir = `${root}/stop${stopAt}`;
        const stopped = new Recorder();
        await train(config(dir), {
          progress: stopped,
          onStepEnd: ({ step }) => step === stopAt ? "stop" : undefined,
        });
        const where = stopped.lines.find((l) => l.startsWith("interrupted: saved"))!;
        assert.match(
          where,
          new RegExp(`at step ${stopAt}, epoch 1/2 in progress \\(batch ${stopAt}/4\\)`),
        );
        const resumed = new Recorder();
        await train(config(dir), { progress: resumed, resumeFrom: `${dir}/last.safetensors` });
        assert.ok(
          resumed.lines.some((l) => l.includes(`at step ${stopAt}, epoch 1/2 in progress`)),
          "the resume message counts epochs as the interrupt message does",
        );
        const metrics = await lines(`${dir}/metrics.jsonl`);
        assert.deepEqual(metrics.map((m) => m.epoch), [1, 2]);
        for (const key of ["train_loss", "train_acc", "test_loss", "test_acc", "step"]) {
          assert.equal(metrics[0][key], straight[0][key], `stopped at ${stopAt}: epoch 1 ${key}`);
        }
        assert.ok(metrics[0].train_loss > 0 && metrics[0].images_per_sec > 0);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest("best.safetensors and the best score survive a resume (from the checkpoint)", async () => {
  const root = await Deno.makeTempDir();
  try {
    await train(config(root), { progress: new Recorder(), onEpochEnd: () => "stop" });
    // Epoch 1 scored 100%: nothing after can beat it, even when metrics.jsonl is lost.
    await editMetadata(`${root}/last.safetensors`, (m) => {
      const extra = JSON.parse(m.extra);
      extra.history[0].test_acc = 1;
      m.extra = JSON.stringify(extra);
    });
    await Deno.copyFile(`${root}/last.safetensors`, `${root}/best.safetensors`);
    const best = await Deno.readFile(`${root}/best.safetensors`);
    await Deno.remove(`${root}/metrics.jsonl`);
    const summary = await train(config(root), {
      progress: new Recorder(),
      resumeFrom: `${root}/last.safetensors`,
    });
    assert.equal(summary.best_test_accuracy, 1);
    assert.deepEqual(await Deno.readFile(`${root}/best.safetensors`), best);
    assert.deepEqual((await lines(`${root}/metrics.jsonl`)).map((m) => m.epoch), [1, 2]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest("a diverging run stops with a clear error and keeps the last good checkpoint", async () => {
  const root = await Deno.makeTempDir();
  try {
    await train(config(root), { progress: new Recorder(), onEpochEnd: () => "stop" });
    const good = await Deno.readFile(`${root}/last.safetensors`);
    await assert.rejects(
      () =>
        train(config(root), {
          progress: new Recorder(),
          resumeFrom: `${root}/last.safetensors`,
          // As --lr 1e30 does from the first step.
          onStepEnd: ({ optimizer }) => {
            optimizer.lr = 1e30;
          },
        }),
      /The training loss is (NaN|-?Infinity) at step \d+ \(epoch 2\): the run diverged, so it stops without saving\. .*last.safetensors still holds the last good checkpoint \(step 4, after epoch 1\/2\)/,
    );
    assert.deepEqual(await Deno.readFile(`${root}/last.safetensors`), good);
    assert.equal((await lines(`${root}/metrics.jsonl`)).length, 1);

    // From scratch: no checkpoint before.
    await assert.rejects(
      () => train(config(`${root}/x`, { lr: 1e30 }), { progress: new Recorder() }),
      /the run diverged, so it stops without saving\. No checkpoint was saved before/,
    );
    await assert.rejects(Deno.stat(`${root}/x/last.safetensors`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest("a checkpoint of another model or with damaged metadata is refused by name", async () => {
  const root = await Deno.makeTempDir();
  try {
    await train(config(root), { progress: new Recorder(), onEpochEnd: () => "stop" });
    const last = `${root}/last.safetensors`;
    await assert.rejects(
      () =>
        train(config(root, { model: "resnet14" }), { progress: new Recorder(), resumeFrom: last }),
      /holds a resnet8 model, but this run trains resnet14; resume with --model resnet8/,
    );
    const good = await Deno.readFile(last);
    const damage: [(extra: Record<string, unknown>) => void, RegExp][] = [
      [(e) => e.schedule = "x", /"extra.schedule" must be \{ iteration: a count \}/],
      [(e) => delete e.schedule, /"extra.schedule" must be/],
      [(e) => e.loader = null, /DataLoader.loadStateDict\(\): expected/],
      [(e) => e.history = [{ epoch: 7 }], /"extra.history" entry 1 must be the metrics of epoch 1/],
      [(e) => e.history = "x", /"extra.history" must be a list/],
      [
        (e) => (e.flags as Record<string, unknown>).schedule = "linear",
        /"schedule" must be one of/,
      ],
      [(e) => (e.flags as Record<string, unknown>).optimizer = 3, /"optimizer" must be one of/],
    ];
    for (const [edit, message] of damage) {
      await Deno.writeFile(last, good);
      await editMetadata(last, (m) => {
        const extra = JSON.parse(m.extra);
        edit(extra);
        m.extra = JSON.stringify(extra);
      });
      await assert.rejects(
        () => train(config(root), { progress: new Recorder(), resumeFrom: last }),
        (error: Error) => error.constructor === Error && message.test(error.message),
        String(message),
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest(
  "a file of 50,000 tensors for another model is refused from its header, in one short line",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const entries: SafetensorsEntry[] = [];
      for (let i = 0; i < 50_000; i++) {
        entries.push({ name: `junk.${i}`, shape: [1], dtype: "F32", data: new Float32Array(1) });
      }
      const path = `${root}/many.safetensors`;
      await Deno.writeFile(path, encodeSafetensors(entries, { format: "pt" }));
      const started = performance.now();
      const error = await loadCheckpoint(path, { model: new Linear(3, 2) }).then(
        () => assert.fail("accepted"),
        (e: Error) => e,
      );
      assert.ok(performance.now() - started < 5000, `${performance.now() - started} ms`);
      assert.match(
        error.message,
        /missing 2 of the model's tensors: "weight", "bias"; 50000 tensors the model does not have: "junk.0", "junk.1", "junk.10", "junk.100", "junk.1000" and 49,995 more\. .*Nothing was loaded\./,
      );
      assert.ok(error.message.length < 400, `${error.message.length} characters`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
