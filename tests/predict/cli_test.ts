import assert from "node:assert/strict";
import { saveCheckpoint } from "../../src/train/checkpoint.ts";
import { buildModel } from "../../src/train/models.ts";
import { gpuTest } from "../_gpu.ts";

const cli = new URL("../../examples/predict.ts", import.meta.url).pathname;
const fixtures = new URL("../fixtures/images/", import.meta.url);
const png = new URL("synthetic_test_0.png", fixtures).pathname;
const jpeg = new URL("synthetic_test_3.jpg", fixtures).pathname;

/** Runs `deno task predict`'s command line with its task's permissions. */
async function run(args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "--allow-env", cli, ...args],
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

gpuTest(
  "predict CLI: --json prints one line per image with file, index, label, probability and top; plain output names each file",
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const checkpoint = `${dir}/run.safetensors`;
      await saveCheckpoint(checkpoint, buildModel("resnet8", 0), null, {
        epoch: 1,
        step: 1,
        extra: { flags: { model: "resnet8" }, dataset: "synthetic" },
      });
      const json = await run([
        "--checkpoint",
        checkpoint,
        "--json",
        "--top",
        "2",
        "--image",
        png,
        jpeg,
      ]);
      assert.equal(json.code, 0, json.stderr);
      const lines = json.stdout.trim().split("\n").map((line) => JSON.parse(line));
      assert.deepEqual(lines.map((l) => l.file), [png, jpeg]);
      for (const line of lines) {
        assert.deepEqual(Object.keys(line), ["file", "index", "label", "probability", "top"]);
        assert.equal(line.top.length, 2);
        assert.deepEqual(Object.keys(line.top[0]), ["index", "label", "probability"]);
        assert.deepEqual(line.top[0], {
          index: line.index,
          label: line.label,
          probability: line.probability,
        });
        assert.ok(line.top[0].probability >= line.top[1].probability);
      }
      const plain = await run(["--checkpoint", checkpoint, png]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.match(
        plain.stdout,
        /^resnet8 from .*\n.*synthetic_test_0\.png: [a-z-]+ \d+\.\d% {2}\(.*%, .*%\)\n$/,
      );

      const text = `${dir}/notes.txt`;
      await Deno.writeTextFile(text, "hello");
      const cases: [string[], RegExp][] = [
        [["--image", png], /^error: --checkpoint FILE is needed/],
        [["--checkpoint", checkpoint], /^error: --image FILE … is needed/],
        [
          ["--checkpoint", checkpoint, "--top", "x", png],
          /^error: --top must be a positive integer/,
        ],
        [
          ["--checkpoint", checkpoint, "--image", `${dir}/missing.png`],
          /^error: image ".*missing\.png" not found$/,
        ],
        [
          ["--checkpoint", checkpoint, "--image", text],
          /^error: ".*notes\.txt" is not a PNG or JPEG image$/,
        ],
        [["--checkpoint", text, "--image", png], /^error: ".*notes\.txt" is not a checkpoint/],
        [
          ["--checkpoint", checkpoint, "--model", "resnet20", png],
          /^error: .* does not fit model resnet20: .*; it was trained as resnet8$/,
        ],
        [["--checkpoint", checkpoint, "--model", "vgg", png], /^error: Unknown model "vgg"/],
      ];
      for (const [args, pattern] of cases) {
        const { code, stdout, stderr } = await run(args);
        assert.equal(code, 2, `${args.join(" ")}: exit code`);
        assert.equal(stdout, "", args.join(" "));
        const lines = stderr.split("\n").filter((line) => line && !/XDG_RUNTIME_DIR/.test(line));
        assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${stderr}`);
        assert.match(lines[0], pattern);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
