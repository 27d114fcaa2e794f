import assert from "node:assert/strict";
import { UNUSED_RUNTIME_DIR } from "../../src/gpu/_runtime_dir.ts";

const MESSAGE = "XDG_RUNTIME_DIR is invalid or not set";

/** Runs `code` in a fresh Deno without XDG_RUNTIME_DIR; returns its stdout and stderr. */
async function runWithoutRuntimeDir(code: string, permissions: string[]) {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/script.ts`;
    await Deno.writeTextFile(script, code);
    const env = Deno.env.toObject();
    delete env.XDG_RUNTIME_DIR;
    const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...permissions, script],
      env: { ...env, NO_COLOR: "1" },
      clearEnv: true,
    }).output();
    const text = new TextDecoder();
    return { stdout: text.decode(stdout), stderr: text.decode(stderr), success };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const moduleUrl = new URL("../../src/gpu/_runtime_dir.ts", import.meta.url).href;
const requestAdapter = `const adapter = await navigator.gpu.requestAdapter();
console.log(JSON.stringify({ adapter: !!adapter, dir: Deno.env.get("XDG_RUNTIME_DIR") ?? null }));`;

Deno.test({
  name:
    "ensureRuntimeDir: no XDG_RUNTIME_DIR message when the adapter is requested; a private 0700 folder, removed at exit",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const control = await runWithoutRuntimeDir(requestAdapter, ["--allow-env"]);
    const fixed = await runWithoutRuntimeDir(
      `import { ensureRuntimeDir } from "${moduleUrl}";
const made = ensureRuntimeDir();
const mode = made ? Deno.statSync(made).mode! & 0o777 : null;
console.log(JSON.stringify({ made, mode }));
${requestAdapter}`,
      ["--allow-env", "--allow-write", "--allow-read"],
    );
    assert.ok(fixed.success, fixed.stderr);
    assert.ok(!fixed.stderr.includes(MESSAGE), fixed.stderr);
    const [first, second] = fixed.stdout.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(first.mode, 0o700);
    assert.equal(second.dir, first.made);
    assert.ok(second.adapter, "an adapter is found with the private folder");
    await assert.rejects(Deno.stat(first.made), Deno.errors.NotFound, "removed at exit");
    // This machine's drivers print the message without the fix (else the check above proves
    // nothing here, and says so).
    if (!control.stderr.includes(MESSAGE)) {
      console.log("note: the drivers here do not print the message even without the fix");
    }
  },
});

Deno.test({
  name:
    "ensureRuntimeDir: without write permission an absolute unused path, no folder and no message; a preset path is kept",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const withoutWrite = await runWithoutRuntimeDir(
      `import { ensureRuntimeDir } from "${moduleUrl}";
const made = ensureRuntimeDir() ?? null;
console.log(JSON.stringify({ made, dir: Deno.env.get("XDG_RUNTIME_DIR") }));
${requestAdapter}`,
      ["--allow-env"],
    );
    assert.ok(withoutWrite.success, withoutWrite.stderr);
    const lines = withoutWrite.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines[0], { made: null, dir: UNUSED_RUNTIME_DIR });
    assert.ok(lines[1].adapter, "the adapter was found");
    assert.ok(!withoutWrite.stderr.includes(MESSAGE), `stderr: ${withoutWrite.stderr}`);
    let exists = true;
    try {
      await Deno.stat(UNUSED_RUNTIME_DIR);
    } catch {
      exists = false;
    }
    assert.equal(exists, false, `${UNUSED_RUNTIME_DIR} was created`);
    const preset = await runWithoutRuntimeDir(
      `import { ensureRuntimeDir } from "${moduleUrl}";
Deno.env.set("XDG_RUNTIME_DIR", "/somewhere/absolute");
console.log(JSON.stringify({ made: ensureRuntimeDir() ?? null, dir: Deno.env.get("XDG_RUNTIME_DIR") }));`,
      ["--allow-env", "--allow-write"],
    );
    assert.deepEqual(JSON.parse(preset.stdout), { made: null, dir: "/somewhere/absolute" });
  },
});

Deno.test({
  name: "initGPU() from mod.ts prints no XDG_RUNTIME_DIR message in a process started without one",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const modUrl = new URL("../../mod.ts", import.meta.url).href;
    const run = await runWithoutRuntimeDir(
      `import { adapterDescription, initGPU } from "${modUrl}";
await initGPU();
console.log(JSON.stringify({ adapter: adapterDescription() }));`,
      ["--allow-env", "--allow-read", "--allow-write"],
    );
    assert.ok(run.success, run.stderr);
    assert.notEqual(JSON.parse(run.stdout).adapter, "none");
    assert.ok(!run.stderr.includes(MESSAGE), `stderr: ${run.stderr}`);
  },
});
