// The stored entries of a zip (names and bytes), for tests that rebuild a checkpoint around a
// mutated pickle. Handles only the stored zips encodeTorchCheckpoint writes.
export function readEntries(bytes: Uint8Array): [string, Uint8Array][] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: [string, Uint8Array][] = [];
  let p = 0;
  while (view.getUint32(p, true) === 0x04034b50) {
    const size = view.getUint32(p + 18, true);
    const nameLength = view.getUint16(p + 26, true);
    const extraLength = view.getUint16(p + 28, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 30, p + 30 + nameLength));
    const start = p + 30 + nameLength + extraLength;
    out.push([name, bytes.slice(start, start + size)]);
    p = start + size;
  }
  return out;
}
