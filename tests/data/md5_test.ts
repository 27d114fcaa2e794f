import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Md5, md5Hex } from "../../src/data/_md5.ts";
import { Generator } from "../../src/random.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("md5Hex() matches the RFC 1321 test suite", () => {
  const suite: [string, string][] = [
    ["", "d41d8cd98f00b204e9800998ecf8427e"],
    ["a", "0cc175b9c0f1b6a831c399e269772661"],
    ["abc", "900150983cd24fb0d6963f7d28e17f72"],
    ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
    ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
    [
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
      "d174ab98d277d9f5a5611c2c9f419d9f",
    ],
    [
      "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
      "57edf4a22be3c955ac49da2e2107b67a",
    ],
  ];
  for (const [input, expected] of suite) assert.equal(md5Hex(text(input)), expected, input);
});

Deno.test("Md5 matches node:crypto at every padding boundary and for 1 MB fed in odd pieces", () => {
  const g = new Generator(3);
  const big = new Uint8Array(1 << 20);
  for (let i = 0; i < big.length; i++) big[i] = g.nextUint32() & 255;
  const reference = (b: Uint8Array) => createHash("md5").update(b).digest("hex");
  for (const n of [1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000]) {
    assert.equal(md5Hex(big.subarray(0, n)), reference(big.subarray(0, n)), `length ${n}`);
  }
  const hash = new Md5();
  let at = 0;
  for (let i = 0; at < big.length; i++) {
    const n = [1, 63, 64, 65, 4097, 0, 100_003][i % 7];
    hash.update(big.subarray(at, at + n));
    at += n;
  }
  const digest = hash.digest();
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex, reference(big));
  assert.equal(hash.hexDigest(), reference(big)); // reading again gives the same digest
  assert.throws(() => hash.update(new Uint8Array(1)), /already read/);
});
