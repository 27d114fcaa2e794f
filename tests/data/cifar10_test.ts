import assert from "node:assert/strict";
import {
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  loadCifar10Folder,
  parseCifarRecords,
} from "../../src/data/cifar10.ts";
import { cifarFiles, cifarRecords, CLASS_NAMES, withTempDir, writeFolder } from "./_fixtures.ts";

Deno.test("parseCifarRecords() splits labels and [N, 3, 32, 32] images", () => {
  const bytes = cifarRecords(3, 4);
  const { images, labels, count } = parseCifarRecords(bytes, "x.bin", 10);
  assert.equal(count, 3);
  assert.deepEqual(Array.from(labels), [4, 5, 6]);
  assert.equal(images.length, 3 * 3072);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(
      images.subarray(i * 3072, (i + 1) * 3072),
      bytes.subarray(i * 3073 + 1, (i + 1) * 3073),
    );
  }
  assert.equal(parseCifarRecords(new Uint8Array(0), "empty.bin").count, 0);
  assert.throws(
    () => parseCifarRecords(bytes.subarray(0, 3073 + 100), "cut.bin"),
    /cut\.bin is 3173 bytes, not a whole number of 3073-byte records/,
  );
  assert.throws(() => parseCifarRecords(bytes, "few.bin", 5), /few\.bin: record 1 has label 5/);
  assert.throws(() => parseCifarRecords([1, 2] as unknown as Uint8Array, "x"), TypeError);
});

Deno.test("constants match torchvision's CIFAR-10 conventions", () => {
  assert.deepEqual(CIFAR10_CLASSES, CLASS_NAMES);
  assert.deepEqual(CIFAR10_MEAN, [0.4914, 0.4822, 0.4465]);
  assert.deepEqual(CIFAR10_STD, [0.2470, 0.2435, 0.2616]);
});

Deno.test("loadCifar10Folder() loads a 7-record subset folder in file order with meta classes", async () => {
  await withTempDir(async (dir) => {
    const files = cifarFiles([2, 1, 0, 3, 1], 3);
    await writeFolder(dir, files);
    const { train, test } = await loadCifar10Folder(dir);
    assert.equal(train.count, 7);
    assert.equal(test.count, 3);
    assert.deepEqual(train.classes, CLASS_NAMES);
    assert.deepEqual(test.classes, CLASS_NAMES);
    assert.equal(train.name, "cifar10-train");
    assert.equal(test.name, "cifar10-test");
    const records = [1, 2, 3, 4, 5].map((i) => files.get(`data_batch_${i}.bin`)!);
    let at = 0;
    for (const file of records) {
      for (let r = 0; r < file.length / 3073; r++, at++) {
        assert.equal(train.labels[at], file[r * 3073]);
        assert.deepEqual(
          train.images.subarray(at * 3072, (at + 1) * 3072),
          file.subarray(r * 3073 + 1, (r + 1) * 3073),
        );
      }
    }
    assert.deepEqual(Array.from(test.labels), [99 % 10, 100 % 10, 101 % 10]);
  });
});

Deno.test("loadCifar10Folder() names the file for missing, truncated and mislabelled data", async () => {
  await withTempDir(async (dir) => {
    const files = cifarFiles([1, 1, 1, 1, 1], 1);
    files.delete("data_batch_3.bin");
    await writeFolder(dir, files);
    await assert.rejects(
      () => loadCifar10Folder(dir),
      (e: Error) =>
        e.message.includes("data_batch_3.bin is missing from the folder") &&
        e.message.includes(dir),
    );
    await Deno.writeFile(`${dir}/data_batch_3.bin`, cifarRecords(2, 0).subarray(0, 5000));
    await assert.rejects(
      () => loadCifar10Folder(dir),
      (e: Error) => e.message.includes(`${dir}/data_batch_3.bin is 5000 bytes`),
    );
    await Deno.writeFile(`${dir}/data_batch_3.bin`, cifarRecords(1, 0));
    // Three classes only: record 0 of test_batch.bin (label 9) is out of range.
    await Deno.writeTextFile(`${dir}/batches.meta.txt`, "a\nb\nc\n");
    await assert.rejects(
      () => loadCifar10Folder(dir),
      /test_batch\.bin: record 0 has label 9, but there are only 3 classes/,
    );
    await Deno.remove(`${dir}/batches.meta.txt`);
    await assert.rejects(() => loadCifar10Folder(dir), /batches\.meta\.txt is missing/);
    await Deno.writeTextFile(`${dir}/batches.meta.txt`, "\n\n");
    await assert.rejects(() => loadCifar10Folder(dir), /names no classes/);
  });
});

Deno.test(
  "loadCifar10Folder() refuses a FIFO or a link to /dev/zero at once, and an empty test set",
  {
    ignore: Deno.build.os === "windows",
  },
  async () => {
    await withTempDir(async (dir) => {
      await writeFolder(dir, cifarFiles([1, 1, 1, 1, 1], 1));
      await Deno.remove(`${dir}/data_batch_2.bin`);
      await Deno.symlink("/dev/zero", `${dir}/data_batch_2.bin`);
      await assert.rejects(
        () => loadCifar10Folder(dir),
        /data_batch_2\.bin is not a regular file \(it is a device, FIFO or socket\)/,
      );
      await Deno.remove(`${dir}/data_batch_2.bin`);
      const mkfifo = await new Deno.Command("mkfifo", { args: [`${dir}/data_batch_2.bin`] })
        .output();
      assert.ok(mkfifo.success);
      // Reading a FIFO with no writer would block forever.
      await assert.rejects(() => loadCifar10Folder(dir), /data_batch_2\.bin is not a regular file/);
      await Deno.remove(`${dir}/data_batch_2.bin`);
      await Deno.writeFile(`${dir}/data_batch_2.bin`, cifarRecords(1, 0));

      await Deno.writeFile(`${dir}/test_batch.bin`, new Uint8Array(0));
      await assert.rejects(
        () => loadCifar10Folder(dir),
        /test_batch\.bin is empty: the test set needs at least one 3073-byte record/,
      );
    });
  },
);
