import assert from "node:assert/strict";
import {
  checkBoolean,
  checkFinite,
  checkInteger,
  checkNumber,
  checkOptions,
  checkTensor,
  checkTensorNd,
  describe,
  optionalTensor,
  pair,
} from "../../src/ops/_check.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

/** Asserts that `fn` throws an `kind` whose message matches `pattern`. */
function throwsWith(fn: () => unknown, kind: ErrorConstructor, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof kind && pattern.test((e as Error).message));
}

gpuTest("describe() names any value briefly", () => {
  assert.equal(describe(null), "null");
  assert.equal(describe(undefined), "undefined");
  assert.equal(describe(Tensor.zeros([2, 3])), "a Tensor [2, 3]");
  assert.equal(describe([1, 2, 3]), "an array of length 3");
  assert.equal(describe(new Map()), "Map");
  assert.equal(describe({}), "Object");
  assert.equal(describe("x".repeat(50)), `string "${"x".repeat(40)}"`);
  assert.equal(describe(2.5), "number 2.5");
  assert.equal(describe(false), "boolean false");
});

gpuTest("checkTensor(), checkTensorNd() and optionalTensor() name the op and argument", () => {
  const x = Tensor.zeros([2, 3]);
  checkTensor("op()", "x", x);
  throwsWith(
    () => checkTensor("op()", "x", [1]),
    TypeError,
    /^op\(\): x must be a Tensor, got an array of length 1$/,
  );
  checkTensorNd("op()", "x", x, 2, "[N, C]");
  throwsWith(
    () => checkTensorNd("op()", "x", x, 4, "[N, C, H, W]"),
    RangeError,
    /^op\(\): x must be \[N, C, H, W\], got \[2, 3\]$/,
  );
  throwsWith(
    () => checkTensorNd("op()", "x", 3, 4, "[N, C, H, W]"),
    TypeError,
    /x must be a Tensor, got number 3/,
  );
  assert.equal(optionalTensor("op()", "bias", undefined), null);
  assert.equal(optionalTensor("op()", "bias", null), null);
  assert.equal(optionalTensor("op()", "bias", x), x);
  throwsWith(
    () => optionalTensor("op()", "bias", 0),
    TypeError,
    /bias.*Tensor or null.*got number 0/,
  );
});

Deno.test("checkNumber(), checkFinite(), checkBoolean() and checkOptions() tell TypeError from RangeError", () => {
  assert.equal(checkNumber("op()", "s", Infinity), Infinity);
  assert.ok(Number.isNaN(checkNumber("op()", "s", NaN)));
  throwsWith(
    () => checkNumber("op()", "s", "2"),
    TypeError,
    /^op\(\): s must be a number, got string "2"$/,
  );
  assert.equal(checkFinite("op()", "lr", 0.1), 0.1);
  throwsWith(
    () => checkFinite("op()", "lr", NaN),
    RangeError,
    /lr must be a finite number, got NaN/,
  );
  throwsWith(() => checkFinite("op()", "lr", null), TypeError, /lr must be a number, got null/);
  assert.equal(checkBoolean("op()", "flag", false), false);
  throwsWith(
    () => checkBoolean("op()", "flag", 1),
    TypeError,
    /flag must be true or false, got number 1/,
  );
  checkOptions("op()", {}, "{ a: 1 }");
  for (const bad of [null, 3, [1], "x"]) {
    throwsWith(
      () => checkOptions("op()", bad, "{ a: 1 }"),
      TypeError,
      /options must be an object such as \{ a: 1 \}, got/,
    );
  }
});

Deno.test("checkInteger() names positive and non-negative integers", () => {
  assert.equal(checkInteger("L", "n", 3, 1), 3);
  assert.equal(checkInteger("L", "n", 0, 0), 0);
  throwsWith(
    () => checkInteger("L", "n", 0, 1),
    RangeError,
    /^L: n must be a positive integer, got 0$/,
  );
  throwsWith(
    () => checkInteger("L", "n", -1, 0),
    RangeError,
    /n must be a non-negative integer, got -1/,
  );
  throwsWith(() => checkInteger("L", "n", 2.5, 1), RangeError, /got 2\.5/);
  throwsWith(() => checkInteger("L", "n", 2, 3), RangeError, /n must be an integer >= 3, got 2/);
  throwsWith(
    () => checkInteger("L", "n", "2", 1),
    TypeError,
    /n must be a positive integer, got string "2"/,
  );
});

Deno.test("pair() reads one integer or [h, w], with a fallback for undefined", () => {
  assert.deepEqual(pair("op()", "stride", 2, 1), [2, 2]);
  assert.deepEqual(pair("op()", "stride", [1, 3], 1), [1, 3]);
  assert.deepEqual(pair("op()", "padding", undefined, 0, 0), [0, 0]);
  assert.deepEqual(pair("op()", "padding", [0, 0], 0), [0, 0]);
  const wanted = /^op\(\): stride must be a positive integer or a pair \[h, w\] of them, got /;
  throwsWith(() => pair("op()", "stride", undefined, 1), TypeError, wanted);
  throwsWith(() => pair("op()", "stride", "2", 1), TypeError, /got string "2"$/);
  throwsWith(() => pair("op()", "stride", [1, 2, 3], 1), RangeError, /got an array of length 3$/);
  throwsWith(() => pair("op()", "stride", [1, "2"], 1), TypeError, /got \[1, "2"\]$/);
  throwsWith(() => pair("op()", "stride", [1, 0], 1), RangeError, /got \[1, 0\]$/);
  throwsWith(() => pair("op()", "stride", 1.5, 1), RangeError, /got 1\.5$/);
  throwsWith(
    () => pair("op()", "padding", -1, 0),
    RangeError,
    /padding must be a non-negative integer or a pair/,
  );
});
