// The train CLI as a real process: signals, kill -9, two runs in one folder, permissions. Each run
// is tiny (resnet8, 64 synthetic images, batches of 16: 4 steps an epoch).
import assert from "node:assert/strict";
import { readCheckpointInfo } from "../../src/train/checkpoint.ts";
import { gpuTest } from "../_gpu.ts";

const CLI = new URL("../../examples/train_cifar10.ts", import.meta.url).pathname;
const TINY = ["--model", "resnet8", "--dataset", "synthetic", "--synthetic-size", "64,16"];
const TINY_BATCH = ["--batch-size", "16", "--seed", "1"];

/** A running `deno run examples/train_cifar10.ts`, its standard error collected as it comes. */
class Run {
  readonly child: Deno.ChildProcess;
  stderr = "";
  readonly done: Promise<Deno.CommandStatus>;

  constructor(
    args: string[],
    options: { permissions?: string[]; env?: Record<string, string> } = {},
  ) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...(options.permissions ?? ["-A"]), CLI, ...args],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    const decoder = new TextDecoder();
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) this.stderr += decoder.decode(chunk, { stream: true });
    };
    const streams = Promise.all([collect(this.child.stderr), collect(this.child.stdout)]);
    this.done = streams.then(() => this.child.status);
  }

  /** Waits until standard error (or out) matches `pattern`. */
  async waitFor(pattern: RegExp, seconds = 120): Promise<void> {
    const until = performance.now() + seconds * 1000;
    while (!pattern.test(this.stderr)) {
      if (performance.now() > until) {
        throw new Error(`no ${pattern} after ${seconds} s; output:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function metrics(dir: string): Promise<Record<string, number>[]> {
  return (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
}

gpuTest(
  "SIGTERM saves last.safetensors and exits 143 without NaN%; --resume continues it",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const run = new Run([...TINY, ...TINY_BATCH, "--epochs", "50", "--log-dir", root]);
      await run.waitFor(/estimate:/);
      run.child.kill("SIGTERM");
      const status = await run.done;
      assert.equal(status.code, 143, run.stderr);
      assert.match(run.stderr, /SIGTERM: finishing this step and saving a checkpoint/);
      assert.match(run.stderr, /interrupted: saved .*last.safetensors at step (\d+), /);
      assert.match(run.stderr, /stopped: \d+ epochs, \d+ steps, .*--resume .*last.safetensors/);
      assert.doesNotMatch(run.stderr, /NaN/);
      const saved = await readCheckpointInfo(`${root}/last.safetensors`);
      assert.ok(saved.step > 0);

      const resumed = new Run(["--resume", `${root}/last.safetensors`, "--max-steps", "8"]);
      assert.equal((await resumed.done).code, 0, resumed.stderr);
      assert.match(resumed.stderr, new RegExp(`resumed from .* at step ${saved.step}, `));
      const lines = await metrics(root);
      assert.deepEqual(lines.map((m) => m.epoch), [1, 2]);
      for (const m of lines) {
        assert.ok(Object.values(m).every((v) => Number.isFinite(v)) && m.train_loss > 0);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "kill -9 loses at most the work since the last checkpoint; resume logs each epoch once",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const run = new Run([...TINY, ...TINY_BATCH, "--epochs", "3", "--log-dir", root]);
      await run.waitFor(/epoch 1\/3 {2}step 4 {2}lr/);
      run.child.kill("SIGKILL");
      await run.done;
      const saved = await readCheckpointInfo(`${root}/last.safetensors`);
      assert.ok(saved.epoch >= 1);
      // What a write killed half-way leaves behind.
      await Deno.writeTextFile(`${root}/last.safetensors.tmp-00c0ffee`, "half a checkpoint");

      const resumed = new Run(["--resume", `${root}/last.safetensors`]);
      assert.equal((await resumed.done).code, 0, resumed.stderr);
      assert.match(resumed.stderr, /removed 1 temporary file\(s\) a killed write left/);
      assert.deepEqual((await metrics(root)).map((m) => m.epoch), [1, 2, 3]);
      assert.equal((await readCheckpointInfo(`${root}/last.safetensors`)).step, 12);
      const names = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name);
      assert.ok(!names.some((n) => n.includes(".tmp")), names.join(", "));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "a second run into a live run's log dir is refused with its pid; a killed run's lock is not",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const first = new Run([...TINY, ...TINY_BATCH, "--epochs", "50", "--log-dir", root]);
      await first.waitFor(/estimate:/);
      const second = new Run([...TINY, ...TINY_BATCH, "--epochs", "1", "--log-dir", root]);
      const status = await second.done;
      assert.equal(status.code, 1);
      assert.match(
        second.stderr,
        new RegExp(`error: The log dir ".*" is in use by a live run \\(pid ${first.child.pid}, `),
      );
      first.child.kill("SIGKILL");
      await first.done;
      // The killed run left its lock file, but no lock: a new run may replace the folder.
      const third = new Run([
        ...TINY,
        ...TINY_BATCH,
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--log-dir",
        root,
        "--overwrite",
      ]);
      assert.equal((await third.done).code, 0, third.stderr);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest("a --log-dir the permissions forbid is named, with no --allow-all advice", async () => {
  const root = await Deno.makeTempDir();
  try {
    const run = new Run([...TINY, "--epochs", "1", "--log-dir", `${root}/forbidden/run`], {
      permissions: ["--allow-read", `--allow-write=${root}/allowed`, "--allow-env"],
    });
    assert.equal((await run.done).code, 1);
    assert.match(
      run.stderr,
      /error: Cannot write to the log dir ".*forbidden\/run": this process has no write permission there/,
    );
    assert.doesNotMatch(run.stderr, /--allow-all/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

gpuTest(
  "--eval-only neither creates ~/.cache nor goes online; --model must match the checkpoint",
  async () => {
    const root = await Deno.makeTempDir();
    try {
      const trained = new Run([
        ...TINY,
        ...TINY_BATCH,
        "--epochs",
        "1",
        "--log-dir",
        `${root}/run`,
      ]);
      assert.equal((await trained.done).code, 0, trained.stderr);
      const offline = {
        permissions: ["--allow-read", `--allow-write=${root}`, "--allow-env"],
        // Deno's own cache stays where it is; only the data set's default folder would move.
        env: {
          HOME: `${root}/home`,
          XDG_CACHE_HOME: "",
          DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
        },
      };
      const checkpoint = `${root}/run/best.safetensors`;
      const evaluated = new Run(["--eval-only", "--checkpoint", checkpoint], offline);
      assert.equal((await evaluated.done).code, 0, evaluated.stderr);
      assert.match(evaluated.stderr, /on synthetic test set \(16 images\): loss \d/);
      await assert.rejects(Deno.stat(`${root}/home/.cache/resnet-webgpu`), Deno.errors.NotFound);

      const elsewhere = new Run(
        [
          "--eval-only",
          "--checkpoint",
          checkpoint,
          "--dataset",
          "cifar10",
          "--data-dir",
          `${root}/none`,
        ],
        offline,
      );
      assert.equal((await elsewhere.done).code, 1);
      assert.match(
        elsewhere.stderr,
        /CIFAR-10 is not in .*none\/cifar-10-batches-bin, and this call does not download/,
      );
      await assert.rejects(Deno.stat(`${root}/none`), Deno.errors.NotFound);
      await assert.rejects(Deno.stat(`${root}/home/.cache/resnet-webgpu`), Deno.errors.NotFound);

      const mismatch = new Run(["--eval-only", "--checkpoint", checkpoint, "--model", "resnet20"]);
      assert.equal((await mismatch.done).code, 2);
      assert.match(
        mismatch.stderr,
        /--model resnet20 does not match the checkpoint .*, which holds a resnet8 model/,
      );
      const resumeMismatch = new Run([
        "--resume",
        `${root}/run/last.safetensors`,
        "--model",
        "resnet14",
      ]);
      assert.equal((await resumeMismatch.done).code, 2);
      assert.match(resumeMismatch.stderr, /--model resnet14 does not match the checkpoint/);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
