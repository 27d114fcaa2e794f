// Every size and value a user can pass is checked before anything is allocated: the CLI's flags,
// a checkpoint's metadata (validateConfig), model depths and safetensors headers. The fuzzers are
// seeded, so a failure reproduces; each runs a few hundred cases in well under a second.
import assert from "node:assert/strict";
import { decodeSafetensors, MAX_SAFETENSORS_TENSORS } from "../../src/io/safetensors.ts";
import { buildModel, MAX_DEPTH } from "../../src/train/models.ts";
import { CONFIG_LIMITS, type TrainConfig, validateConfig } from "../../src/train/trainer.ts";
import { parseFlags, UsageError } from "../../examples/train_cifar10.ts";
import { Generator } from "../../src/random.ts";

const VALID: TrainConfig = {
  model: "resnet8",
  epochs: 2,
  batchSize: 16,
  lr: 0.05,
  momentum: 0.9,
  weightDecay: 1e-4,
  optimizer: "sgd",
  schedule: "multistep",
  warmupEpochs: 0,
  augment: { crop: true, flip: true, cutout: 8 },
  dataset: "synthetic",
  dataDir: "data",
  seed: 7,
  logDir: "runs/x",
  syntheticSizes: { train: 64, test: 16 },
  patience: 3,
  labelSmoothing: 0.1,
  clipGradNorm: 1,
};

/** Values that break types and bounds, as a damaged or hostile checkpoint could hold. */
const NASTY: unknown[] = [
  undefined,
  null,
  -1,
  0,
  1.5,
  NaN,
  Infinity,
  -Infinity,
  1e30,
  2 ** 53,
  "",
  "x",
  "linear",
  "0x10",
  "resnet99999999999998",
  "resnet1208",
  "resnet-4",
  [],
  [1, 2],
  {},
  { crop: "yes", flip: true },
  { crop: true, flip: true, cutout: 33 },
  { crop: true, flip: true, cutout: -1 },
  { train: 0, test: 5 },
  { train: 1e9, test: 5 },
  { __proto__: { polluted: true } },
  true,
  "a".repeat(10_000),
];

function pick<T>(g: Generator, list: readonly T[]): T {
  return list[Math.floor(g.uniform() * list.length)];
}

Deno.test("validateConfig() refuses 500 seeded damaged configs with a named Error, never a TypeError", () => {
  const g = new Generator(11);
  const fields = Object.keys(VALID) as (keyof TrainConfig)[];
  let refused = 0;
  for (let i = 0; i < 500; i++) {
    const config = structuredClone(VALID) as unknown as Record<string, unknown>;
    const changes = 1 + Math.floor(g.uniform() * 3);
    for (let k = 0; k < changes; k++) config[pick(g, fields)] = pick(g, NASTY);
    let accepted: TrainConfig | undefined;
    try {
      accepted = validateConfig(config, "case " + i);
    } catch (error) {
      refused++;
      assert.equal((error as Error).constructor, Error, `case ${i}: ${error}`);
      const message = (error as Error).message;
      assert.match(message, new RegExp(`^case ${i}: "\\w+" must be .+, got `), message);
      assert.ok(message.length < 300, `case ${i}: a ${message.length}-character message`);
      continue;
    }
    // What passes is within every bound.
    assert.ok(accepted.epochs >= 1 && accepted.epochs <= CONFIG_LIMITS.epochs);
    assert.ok(accepted.batchSize >= 1 && accepted.batchSize <= CONFIG_LIMITS.batchSize);
    assert.ok(Number.isFinite(accepted.lr) && accepted.lr >= 0);
    assert.ok(accepted.momentum >= 0 && accepted.momentum < 1);
    assert.ok(["sgd", "adam", "adamw"].includes(accepted.optimizer));
    assert.ok(["multistep", "cosine", "onecycle", "constant"].includes(accepted.schedule));
    const cutout = accepted.augment.cutout ?? 0;
    assert.ok(Number.isInteger(cutout) && cutout >= 0 && cutout <= 32, `cutout ${cutout}`);
    const smoothing = accepted.labelSmoothing ?? 0;
    assert.ok(smoothing >= 0 && smoothing <= 1, `labelSmoothing ${smoothing}`);
    assert.ok(!((accepted.clipGradNorm ?? 0) < 0) && Number.isFinite(accepted.clipGradNorm ?? 0));
    assert.ok(accepted.patience === undefined || Number.isSafeInteger(accepted.patience));
    assert.doesNotThrow(() => buildModelName(accepted!.model));
  }
  assert.ok(refused > 400, `only ${refused} of 500 damaged configs were refused`);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

/** Checks the name's form only (no GPU): what buildModel would accept. */
function buildModelName(name: string): void {
  if (name === "labml") return;
  const depth = Number(/^resnet(\d+)$/.exec(name)![1]);
  assert.ok(depth >= 8 && depth <= MAX_DEPTH && (depth - 2) % 6 === 0, name);
}

Deno.test("buildModel() refuses a 6n+2 depth beyond resnet1202 at once, before allocating", () => {
  const started = performance.now();
  for (const name of ["resnet99999999999998", "resnet1208", "resnet" + "9".repeat(400)]) {
    assert.throws(() => buildModel(name, 0), RangeError);
  }
  assert.throws(() => buildModel("resnet99999999999998", 0), /from resnet8 to resnet1202/);
  assert.ok(performance.now() - started < 1000);
});

Deno.test("the train CLI reads negative numbers as numbers and refuses them by range", () => {
  const cases: [string[], RegExp][] = [
    [["--epochs", "-1"], /--epochs must be an integer from 1 to 100000, got "-1"/],
    [["--lr", "-1"], /--lr must be a decimal number >= 0, got "-1"/],
    [["--seed", "-1"], /--seed must be an integer from 0 to \d+, got "-1"/],
    [["--batch-size", "0x10"], /--batch-size must be an integer from 1 to 65536, got "0x10"/],
    [["--epochs", "1e3"], /--epochs must be an integer/],
    [["--lr", "Infinity"], /--lr must be a decimal number/],
    [["--lr", "-Infinity"], /--lr must be a decimal number/],
    [["--batch-size", "65537"], /--batch-size must be an integer from 1 to 65536/],
    [["--model", "resnet99999999999998"], /--model must be resnet<6n\+2> from resnet8 to/],
    [["--synthetic-size", "10,0"], /--synthetic-size must be an integer from 1/],
    [["--resume", "x", "--model", "resnet8", "--overwrite"], /--overwrite starts a new run/],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseFlags(args),
      (e) => e instanceof UsageError && message.test(e.message),
    );
  }
  const parsed = parseFlags(["--lr", "1e-3", "--seed", "3", "--synthetic-size", "64,16"])!;
  assert.equal(parsed.explicit.lr, 0.001);
  assert.deepEqual(parsed.explicit.syntheticSizes, { train: 64, test: 16 });
});

Deno.test("the train CLI's flags: 400 seeded random command lines are refused or within bounds", () => {
  const g = new Generator(5);
  const flags = [
    "--model",
    "--epochs",
    "--batch-size",
    "--lr",
    "--momentum",
    "--weight-decay",
    "--optimizer",
    "--schedule",
    "--warmup-epochs",
    "--augment",
    "--dataset",
    "--seed",
    "--max-steps",
    "--synthetic-size",
    "--overwrite",
  ];
  const values = [
    "-1",
    "0",
    "1",
    "16",
    "0x10",
    "1e30",
    "1e-3",
    "NaN",
    "Infinity",
    "",
    " 5",
    "+3",
    "1.5",
    "resnet20",
    "resnet99999999999998",
    "labml",
    "sgd",
    "cosine",
    "crop",
    "none",
    "synthetic",
    "64,16",
    "9".repeat(400),
    "--lr",
  ];
  for (let i = 0; i < 400; i++) {
    const args: string[] = [];
    const n = 1 + Math.floor(g.uniform() * 4);
    for (let k = 0; k < n; k++) {
      args.push(pick(g, flags));
      if (g.uniform() < 0.9) args.push(pick(g, values));
    }
    let parsed;
    try {
      parsed = parseFlags(args);
    } catch (error) {
      assert.ok(error instanceof UsageError, `${args.join(" ")}: ${error}`);
      assert.ok(error.message.length < 600, `${args.join(" ")}: ${error.message.length} chars`);
      continue;
    }
    if (parsed === null) continue; // --help
    const config = { ...parsed.defaults, ...parsed.explicit };
    if (config.warmupEpochs > config.epochs) continue; // the run's check, not the parser's
    assert.doesNotThrow(() => validateConfig(config, "flags"), args.join(" "));
  }
});

Deno.test("a safetensors header of more tensors than the cap is refused within seconds", () => {
  const entries: string[] = [];
  for (let i = 0; i <= MAX_SAFETENSORS_TENSORS; i++) {
    entries.push(`"t${i}":{"dtype":"U8","shape":[1],"data_offsets":[${i},${i + 1}]}`);
  }
  const header = new TextEncoder().encode(`{${entries.join(",")}}`);
  const bytes = new Uint8Array(8 + header.length + MAX_SAFETENSORS_TENSORS + 1);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
  bytes.set(header, 8);
  const started = performance.now();
  assert.throws(
    () => decodeSafetensors(bytes, "many.safetensors"),
    /holds 100001 tensors, more than the 100000 one file may hold/,
  );
  assert.ok(performance.now() - started < 5000);
});

Deno.test("safetensors errors stay short: 300 seeded headers with huge names and values", () => {
  const g = new Generator(3);
  const long = "n".repeat(100_000);
  const shapes: unknown[] = [[1], [-1], "x", new Array(40).fill(1), [1e20], null];
  const dtypes: unknown[] = ["F32", "Q4", long, 7, null];
  for (let i = 0; i < 300; i++) {
    const name = g.uniform() < 0.5 ? long + i : `t${i}`;
    const entry: Record<string, unknown> = {
      dtype: pick(g, dtypes),
      shape: pick(g, shapes),
      data_offsets: pick(g, [[0, 4], [0, 1e30], [4, 0], long]),
    };
    const header: Record<string, unknown> = { [name]: entry };
    if (g.uniform() < 0.3) header.__metadata__ = { [long]: pick(g, [1, long, null]) };
    const text = new TextEncoder().encode(JSON.stringify(header));
    const bytes = new Uint8Array(8 + text.length + 4);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(text.length), true);
    bytes.set(text, 8);
    try {
      decodeSafetensors(bytes, "f.safetensors");
    } catch (error) {
      assert.equal((error as Error).constructor, Error);
      assert.ok((error as Error).message.length < 600, (error as Error).message.slice(0, 300));
    }
  }
});
