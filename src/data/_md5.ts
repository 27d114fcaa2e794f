/**
 * MD5 (RFC 1321), streaming, to verify downloads against a published checksum without holding
 * the file in memory. Not for security: MD5 only detects corruption and truncation here.
 *
 * @module
 */

// Per-step additive constants: floor(abs(sin(i + 1)) * 2^32).
const K = new Int32Array(64);
for (let i = 0; i < 64; i++) K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 4294967296) | 0;

// Per-step left-rotation amounts: four per round, repeated four times within the round.
const ROTATIONS = [[7, 12, 17, 22], [5, 9, 14, 20], [4, 11, 16, 23], [6, 10, 15, 21]];
const S = new Uint8Array(64);
for (let i = 0; i < 64; i++) S[i] = ROTATIONS[i >> 4][i & 3];

// Which message word each step reads.
const G = new Uint8Array(64);
for (let i = 0; i < 64; i++) {
  G[i] = i < 16 ? i : i < 32 ? (5 * i + 1) % 16 : i < 48 ? (3 * i + 5) % 16 : (7 * i) % 16;
}

/**
 * An incremental MD5 hash: feed bytes in any number of {@link Md5.update} calls, then read the
 * digest once.
 *
 * @example
 * ```ts
 * import { Md5 } from "./_md5.ts";
 * const hash = new Md5();
 * hash.update(new TextEncoder().encode("a"));
 * hash.update(new TextEncoder().encode("bc"));
 * console.log(hash.hexDigest()); // "900150983cd24fb0d6963f7d28e17f72"
 * ```
 */
export class Md5 {
  #state = new Int32Array([0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476]);
  #block = new Uint8Array(64);
  #blockLength = 0;
  #words = new Int32Array(16);
  #length = 0;
  #finished: Uint8Array | null = null;

  /**
   * Adds `bytes` to the message; returns this hash for chaining.
   *
   * @throws {Error} after the digest was read.
   */
  update(bytes: Uint8Array): this {
    if (this.#finished) {
      throw new Error("Md5.update(): the digest was already read; create a new Md5");
    }
    if (!(bytes instanceof Uint8Array)) {
      throw new TypeError(`Md5.update(): expects a Uint8Array, got ${typeof bytes}`);
    }
    this.#length += bytes.length;
    let at = 0;
    if (this.#blockLength > 0) {
      const take = Math.min(64 - this.#blockLength, bytes.length);
      this.#block.set(bytes.subarray(0, take), this.#blockLength);
      this.#blockLength += take;
      at = take;
      if (this.#blockLength < 64) return this;
      this.#compress(this.#block, 0);
      this.#blockLength = 0;
    }
    for (; at + 64 <= bytes.length; at += 64) this.#compress(bytes, at);
    if (at < bytes.length) {
      this.#block.set(bytes.subarray(at));
      this.#blockLength = bytes.length - at;
    }
    return this;
  }

  /** The 16-byte digest. Finishes the hash: later {@link Md5.update} calls throw. */
  digest(): Uint8Array {
    if (this.#finished) return this.#finished.slice();
    const bitLength = this.#length * 8;
    const padding = new Uint8Array(((this.#blockLength < 56 ? 56 : 120) - this.#blockLength) + 8);
    padding[0] = 0x80;
    const view = new DataView(padding.buffer);
    view.setUint32(padding.length - 8, bitLength >>> 0, true);
    view.setUint32(padding.length - 4, Math.floor(bitLength / 4294967296) >>> 0, true);
    this.update(padding);
    const out = new Uint8Array(16);
    const outView = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) outView.setInt32(4 * i, this.#state[i], true);
    this.#finished = out;
    return out.slice();
  }

  /** The digest as 32 lowercase hex digits, as `md5sum` prints it. */
  hexDigest(): string {
    return Array.from(this.digest(), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  #compress(bytes: Uint8Array, offset: number): void {
    const w = this.#words;
    for (let i = 0; i < 16; i++) {
      const j = offset + 4 * i;
      w[i] = bytes[j] | (bytes[j + 1] << 8) | (bytes[j + 2] << 16) | (bytes[j + 3] << 24);
    }
    const state = this.#state;
    let a = state[0];
    let b = state[1];
    let c = state[2];
    let d = state[3];
    for (let i = 0; i < 64; i++) {
      let f: number;
      if (i < 16) f = (b & c) | (~b & d);
      else if (i < 32) f = (d & b) | (~d & c);
      else if (i < 48) f = b ^ c ^ d;
      else f = c ^ (b | ~d);
      const sum = (a + f + K[i] + w[G[i]]) | 0;
      const s = S[i];
      a = d;
      d = c;
      c = b;
      b = (b + ((sum << s) | (sum >>> (32 - s)))) | 0;
    }
    state[0] = (state[0] + a) | 0;
    state[1] = (state[1] + b) | 0;
    state[2] = (state[2] + c) | 0;
    state[3] = (state[3] + d) | 0;
  }
}

/**
 * The MD5 of `bytes` as 32 lowercase hex digits.
 *
 * @example
 * ```ts
 * import { md5Hex } from "./_md5.ts";
 * console.log(md5Hex(new Uint8Array(0))); // "d41d8cd98f00b204e9800998ecf8427e"
 * ```
 */
export function md5Hex(bytes: Uint8Array): string {
  return new Md5().update(bytes).hexDigest();
}
