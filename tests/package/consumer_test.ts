// The package as published, used by a project of its own: the files `deno publish --dry-run`
// lists are copied to a temporary folder and served over HTTP on 127.0.0.1, and a consumer project
// whose import map points `@resnet/webgpu` there runs the README's quick start, the trainer
// (`--max-steps 2`) and the predictor. Nothing from this checkout is reachable to it but the
// served files, so a file missing from the package, a path that only resolves locally or a `.wgsl`
// text import that fails from a remote module breaks this test.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const text = new TextDecoder();

/** Runs this Deno with `args` in `cwd`; returns exit code and output. */
async function deno(args: string[], cwd: string) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
  }).output();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

/** The package's files, relative to the root, as `deno publish --dry-run` lists them. */
async function publishedFiles(): Promise<string[]> {
  const { code, stdout, stderr } = await deno(["publish", "--dry-run", "--allow-dirty"], root);
  assert.equal(code, 0, `deno publish --dry-run failed:\n${stderr}`);
  const rootUrl = new URL("../../", import.meta.url).href;
  const files = [...(stdout + stderr).matchAll(/^\s+(file:\/\/\S+) \(/gm)].map((m) => m[1]);
  assert.ok(files.length > 0, `no file list in:\n${stdout}${stderr}`);
  return files.map((url) => {
    assert.ok(url.startsWith(rootUrl), url);
    return decodeURIComponent(url.slice(rootUrl.length));
  });
}

const contentTypes: Record<string, string> = {
  ts: "application/typescript",
  js: "application/javascript",
  json: "application/json",
  wgsl: "text/plain",
  md: "text/markdown",
};

Deno.test({
  name:
    "package: the published files, served over HTTP, run the README quick start, train --max-steps 2 and predict from a consumer project",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const temp = await Deno.makeTempDir({ prefix: "resnet-webgpu-package-" });
    const served = join(temp, "package");
    const consumer = join(temp, "consumer");
    const files = await publishedFiles();
    for (const file of ["mod.ts", "deno.json", "README.md", "examples/train_cifar10.ts"]) {
      assert.ok(files.includes(file), `${file} is published`);
    }
    assert.ok(!files.some((f) => f.startsWith("tests/")), "tests/ is not published");
    for (const file of files) {
      await Deno.mkdir(dirname(join(served, file)), { recursive: true });
      await Deno.copyFile(join(root, file), join(served, file));
    }
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname).slice(1);
      if (!files.includes(path)) return new Response("not found", { status: 404 });
      const type = contentTypes[path.split(".").pop()!] ?? "application/octet-stream";
      return new Response(await Deno.readFile(join(served, path)), {
        headers: { "content-type": type },
      });
    });
    try {
      const host = `127.0.0.1:${server.addr.port}`;
      const base = `http://${host}/`;
      const config = JSON.parse(await Deno.readTextFile(join(served, "deno.json")));
      const imports: Record<string, string> = {};
      for (const [subpath, target] of Object.entries(config.exports as Record<string, string>)) {
        imports[`@resnet/webgpu${subpath.slice(1)}`] = new URL(target, base).href;
      }
      await Deno.mkdir(consumer, { recursive: true });
      await Deno.writeTextFile(join(consumer, "deno.json"), JSON.stringify({ imports }, null, 2));
      const allowImport = `--allow-import=${host}`;

      // The README's quick start, with the permissions the README gives.
      const readme = await Deno.readTextFile(join(served, "README.md"));
      const section = readme.slice(readme.indexOf("\n## Quick start"));
      const quickStart = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
      assert.ok(quickStart, "the README's quick start has a ts block");
      await Deno.writeTextFile(join(consumer, "main.ts"), quickStart);
      const permissions = /deno run ((?:--allow-[a-z]+ )+)main\.ts/.exec(readme)?.[1];
      assert.ok(permissions, "the README gives the quick start's deno run line");
      const start = await deno(
        ["run", "--no-prompt", allowImport, ...permissions.trim().split(" "), "main.ts"],
        consumer,
      );
      assert.equal(start.code, 0, `quick start failed:\n${start.stdout}${start.stderr}`);
      assert.match(start.stdout, /0\.conv\.weight/);
      assert.ok((await Deno.stat(join(consumer, "resnet20.safetensors"))).size > 1e6);

      // The trainer, run by its URL as `deno run jsr:@resnet/webgpu/train/cli` would.
      const trainer = await deno([
        "run",
        "--no-prompt",
        allowImport,
        "--allow-read",
        "--allow-write",
        "--allow-env",
        imports["@resnet/webgpu/train/cli"],
        "--model",
        "resnet8",
        "--dataset",
        "synthetic",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--log-dir",
        "run",
      ], consumer);
      assert.equal(trainer.code, 0, `train failed:\n${trainer.stdout}${trainer.stderr}`);
      assert.match(trainer.stdout + trainer.stderr, /done: 1 epochs, 2 steps/);

      // The predictor on that checkpoint and an image of the consumer's.
      await Deno.copyFile(
        join(root, "tests/fixtures/images/synthetic_test_0.png"),
        join(consumer, "image.png"),
      );
      const predictor = await deno([
        "run",
        "--no-prompt",
        allowImport,
        "--allow-read",
        "--allow-env",
        imports["@resnet/webgpu/predict/cli"],
        "--checkpoint",
        "run/last.safetensors",
        "--json",
        "--image",
        "image.png",
      ], consumer);
      assert.equal(predictor.code, 0, `predict failed:\n${predictor.stdout}${predictor.stderr}`);
      const result = JSON.parse(predictor.stdout);
      assert.equal(result.file, "image.png");
      assert.equal(result.top.length, 3);
    } finally {
      await server.shutdown();
      await Deno.remove(temp, { recursive: true });
    }
  },
});
