import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { loadCifar10Folder } from "../../src/data/cifar10.ts";
import { defaultDataDir, type DownloadProgress, ensureCifar10 } from "../../src/data/download.ts";
import { cifarArchive, cifarFiles, listDir, withTempDir } from "./_fixtures.ts";

const FILES = cifarFiles([2, 3, 1, 2, 4], 3);
const ARCHIVE = await cifarArchive(FILES);
const SIZE = ARCHIVE.length;
const MD5 = createHash("md5").update(ARCHIVE).digest("hex");

interface Served {
  url: string;
  /** "full" honours Range; "cut" closes the connection after `cutAt` bytes of the body. */
  mode: "full" | "cut" | "ignoreRange" | "404";
  cutAt: number;
  body: Uint8Array;
  requests: { range: string | null; status: number }[];
}

async function withServer(fn: (served: Served) => Promise<void>, body = ARCHIVE): Promise<void> {
  const served: Served = { url: "", mode: "full", cutAt: 0, body, requests: [] };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const range = request.headers.get("range");
    const data = served.body;
    if (served.mode === "404") {
      served.requests.push({ range, status: 404 });
      return new Response("not here", { status: 404 });
    }
    const m = range && served.mode !== "ignoreRange" ? /^bytes=(\d+)-$/.exec(range) : null;
    const start = m ? Number(m[1]) : 0;
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (start >= data.length && m) {
      served.requests.push({ range, status: 416 });
      return new Response(null, { status: 416, headers });
    }
    const status = m ? 206 : 200;
    served.requests.push({ range, status });
    if (m) headers["content-range"] = `bytes ${start}-${data.length - 1}/${data.length}`;
    headers["content-length"] = String(data.length - start);
    const slice = data.subarray(start);
    if (served.mode === "cut") {
      const cutAt = served.cutAt;
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(slice.slice(0, cutAt));
          // Closing short of content-length makes the server drop the connection.
          setTimeout(() => controller.close(), 50);
        },
      });
      return new Response(stream, { status, headers });
    }
    return new Response(slice.slice(), { status, headers });
  });
  served.url = `http://127.0.0.1:${server.addr.port}/cifar-10-binary.tar.gz`;
  try {
    await fn(served);
  } finally {
    await server.shutdown();
  }
}

const noFetch: typeof fetch = () => {
  throw new Error("the test expected no network access");
};

async function assertLoadsFixture(folder: string): Promise<void> {
  const { train, test } = await loadCifar10Folder(folder);
  assert.equal(train.count, 12);
  assert.equal(test.count, 3);
  assert.deepEqual(
    train.images.subarray(0, 3072),
    FILES.get("data_batch_1.bin")!.subarray(1, 3073),
  );
}

Deno.test("ensureCifar10() downloads, verifies, extracts and reports progress", async () => {
  await withTempDir(async (tmp) => {
    await withServer(async (served) => {
      const dataDir = `${tmp}/cache/nested`;
      const progress: DownloadProgress[] = [];
      const folder = await ensureCifar10({
        dataDir,
        url: served.url,
        expectedSize: SIZE,
        expectedMd5: MD5,
        onProgress: (p) => progress.push(p),
      });
      assert.equal(folder, `${dataDir}/cifar-10-batches-bin`);
      await assertLoadsFixture(folder);
      assert.deepEqual(await listDir(dataDir), ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]);
      assert.ok(progress.length >= 2);
      assert.equal(progress[0].receivedBytes, 0);
      const last = progress.at(-1)!;
      assert.equal(last.receivedBytes, SIZE);
      assert.equal(last.etaSeconds, 0);
      assert.ok(last.bytesPerSecond > 0);
      for (let i = 0; i < progress.length; i++) {
        assert.equal(progress[i].totalBytes, SIZE);
        if (i > 0) assert.ok(progress[i].receivedBytes >= progress[i - 1].receivedBytes);
      }
      assert.equal(served.requests.length, 1);
      // A second call finds the folder and touches no network.
      assert.equal(await ensureCifar10({ dataDir, fetch: noFetch }), folder);
    });
  });
});

Deno.test("ensureCifar10() uses a folder placed by hand as it is", async () => {
  await withTempDir(async (dataDir) => {
    await Deno.mkdir(`${dataDir}/cifar-10-batches-bin`);
    await Deno.writeTextFile(`${dataDir}/cifar-10-batches-bin/mine.txt`, "x");
    const folder = await ensureCifar10({ dataDir, fetch: noFetch });
    assert.equal(folder, `${dataDir}/cifar-10-batches-bin`);
    assert.deepEqual(await listDir(folder), ["mine.txt"]);
  });
});

Deno.test("ensureCifar10() deletes a download whose MD5 or size is wrong and says so", async () => {
  await withTempDir(async (dataDir) => {
    await withServer(async (served) => {
      await assert.rejects(
        () =>
          ensureCifar10({
            dataDir,
            url: served.url,
            expectedSize: SIZE,
            expectedMd5: "0".repeat(32),
          }),
        (e: Error) =>
          e.message.includes(`its MD5 is ${MD5}, expected ${"0".repeat(32)}`) &&
          e.message.includes("the download was deleted"),
      );
      assert.deepEqual(await listDir(dataDir), []);
      await assert.rejects(
        () => ensureCifar10({ dataDir, url: served.url, expectedSize: SIZE + 1, expectedMd5: MD5 }),
        (e: Error) =>
          e.message.includes(`the server's file is ${SIZE} bytes, not the expected ${SIZE + 1}`) &&
          e.message.includes("the download was deleted"),
      );
      assert.deepEqual(await listDir(dataDir), []);
    });
  });
});

Deno.test("ensureCifar10() keeps an interrupted download and resumes it with a Range request", async () => {
  await withTempDir(async (dataDir) => {
    await withServer(async (served) => {
      const options = { dataDir, url: served.url, expectedSize: SIZE, expectedMd5: MD5 };
      served.mode = "cut";
      served.cutAt = Math.floor(SIZE / 2);
      await assert.rejects(
        () => ensureCifar10(options),
        (e: Error) =>
          e.message.includes(served.url) &&
          e.message.includes(`${dataDir}/cifar-10-batches-bin/`) &&
          e.message.includes("the next call resumes it"),
      );
      assert.deepEqual(await listDir(dataDir), ["cifar-10-binary.tar.gz.part"]);
      assert.equal((await Deno.stat(`${dataDir}/cifar-10-binary.tar.gz.part`)).size, served.cutAt);

      served.mode = "full";
      const progress: DownloadProgress[] = [];
      const folder = await ensureCifar10({
        ...options,
        keepArchive: false,
        onProgress: (p) => progress.push(p),
      });
      await assertLoadsFixture(folder);
      assert.deepEqual(served.requests.map((r) => [r.range, r.status]), [
        [null, 200],
        [`bytes=${served.cutAt}-`, 206],
      ]);
      assert.equal(progress[0].receivedBytes, served.cutAt);
      assert.deepEqual(await listDir(dataDir), ["cifar-10-batches-bin"]);
    });
  });
});

Deno.test("ensureCifar10() restarts cleanly when the server ignores Range or the part is bad", async () => {
  await withTempDir(async (dataDir) => {
    await withServer(async (served) => {
      const options = { dataDir, url: served.url, expectedSize: SIZE, expectedMd5: MD5 };
      const part = `${dataDir}/cifar-10-binary.tar.gz.part`;
      // A bogus partial file: a server answering 200 to the Range request replaces it.
      await Deno.writeFile(part, new Uint8Array(1000).fill(7));
      served.mode = "ignoreRange";
      await assertLoadsFixture(await ensureCifar10(options));
      assert.deepEqual(served.requests.map((r) => [r.range, r.status]), [["bytes=1000-", 200]]);

      // A bogus partial file extended by a server that honours Range fails the MD5 check and is
      // deleted; the next call starts over and succeeds.
      await Deno.remove(`${dataDir}/cifar-10-batches-bin`, { recursive: true });
      await Deno.remove(`${dataDir}/cifar-10-binary.tar.gz`);
      await Deno.writeFile(part, new Uint8Array(1000).fill(7));
      served.mode = "full";
      await assert.rejects(() => ensureCifar10(options), /MD5 is .* the download was deleted/);
      assert.deepEqual(await listDir(dataDir), []);
      await assertLoadsFixture(await ensureCifar10(options));

      // A partial file as large as the whole needs no request at all, only verification.
      await Deno.remove(`${dataDir}/cifar-10-batches-bin`, { recursive: true });
      await Deno.rename(`${dataDir}/cifar-10-binary.tar.gz`, part);
      await assertLoadsFixture(await ensureCifar10({ ...options, fetch: noFetch }));
    });
  });
});

Deno.test("ensureCifar10() names the URL and the folder when the server is unreachable or errs", async () => {
  await withTempDir(async (dataDir) => {
    let closedUrl = "";
    await withServer((served) => {
      closedUrl = served.url;
      return Promise.resolve();
    });
    await assert.rejects(
      () => ensureCifar10({ dataDir, url: closedUrl }),
      (e: Error) =>
        e.message.startsWith(`Could not download CIFAR-10 from ${closedUrl}`) &&
        e.message.includes(`its files are in ${dataDir}/cifar-10-batches-bin/`),
    );
    await withServer(async (served) => {
      served.mode = "404";
      await assert.rejects(
        () => ensureCifar10({ dataDir, url: served.url }),
        (e: Error) =>
          e.message.includes(`from ${served.url}: the server answered 404`) &&
          e.message.includes(`${dataDir}/cifar-10-batches-bin/`),
      );
    });
    assert.deepEqual(await listDir(dataDir), []);
  });
});

Deno.test("ensureCifar10() extracts a verified archive without network and refuses unsafe ones", async () => {
  await withTempDir(async (dataDir) => {
    const archive = `${dataDir}/cifar-10-binary.tar.gz`;
    await Deno.writeFile(archive, ARCHIVE);
    const options = { dataDir, expectedSize: SIZE, expectedMd5: MD5, fetch: noFetch };
    await assertLoadsFixture(await ensureCifar10(options));
    await Deno.remove(`${dataDir}/cifar-10-batches-bin`, { recursive: true });

    const evil = await cifarArchive(FILES, [{ name: "../evil.txt", data: new Uint8Array(3) }]);
    await Deno.writeFile(archive, evil);
    const evilMd5 = createHash("md5").update(evil).digest("hex");
    await assert.rejects(
      () => ensureCifar10({ ...options, expectedSize: evil.length, expectedMd5: evilMd5 }),
      /Extracting CIFAR-10 from .* failed: Refusing tar entry "\.\.\/evil\.txt"/,
    );
    const incomplete = new Map(FILES);
    incomplete.delete("test_batch.bin");
    const partial = await cifarArchive(incomplete);
    await Deno.writeFile(archive, partial);
    const partialMd5 = createHash("md5").update(partial).digest("hex");
    await assert.rejects(
      () => ensureCifar10({ ...options, expectedSize: partial.length, expectedMd5: partialMd5 }),
      /the archive has no cifar-10-batches-bin\/test_batch\.bin/,
    );
    // Nothing half-extracted remains, and nothing escaped the data folder.
    assert.deepEqual(await listDir(dataDir), ["cifar-10-binary.tar.gz"]);
    assert.ok(!(await listDir(`${dataDir}/..`)).includes("evil.txt"));
  });
});

Deno.test("defaultDataDir() follows XDG_CACHE_HOME, else ~/.cache", () => {
  const saved = { xdg: Deno.env.get("XDG_CACHE_HOME"), home: Deno.env.get("HOME") };
  const restore = (key: string, value: string | undefined) =>
    value === undefined ? Deno.env.delete(key) : Deno.env.set(key, value);
  try {
    Deno.env.set("XDG_CACHE_HOME", "/var/cache/me");
    Deno.env.set("HOME", "/home/me");
    if (Deno.build.os !== "windows") {
      assert.equal(defaultDataDir(), "/var/cache/me/resnet-webgpu");
      Deno.env.set("XDG_CACHE_HOME", "relative/ignored");
      assert.equal(defaultDataDir(), "/home/me/.cache/resnet-webgpu");
      Deno.env.delete("XDG_CACHE_HOME");
      assert.equal(defaultDataDir(), "/home/me/.cache/resnet-webgpu");
    }
  } finally {
    restore("XDG_CACHE_HOME", saved.xdg);
    restore("HOME", saved.home);
  }
});

Deno.test("ensureCifar10() keeps a user's own archive that fails verification and says why", async () => {
  await withTempDir(async (dataDir) => {
    const archive = `${dataDir}/cifar-10-binary.tar.gz`;
    const bytes = new TextEncoder().encode("not the archive");
    await Deno.writeFile(archive, bytes);
    await assert.rejects(
      () => ensureCifar10({ dataDir, fetch: noFetch }),
      /cifar-10-binary\.tar\.gz is not the CIFAR-10 archive: its size is 15 bytes, expected 170052171\. It was left as it is; remove or rename it/,
    );
    assert.deepEqual(await Deno.readFile(archive), bytes);
    // The right size, the wrong bytes: the MD5 says so.
    await assert.rejects(
      () => ensureCifar10({ dataDir, fetch: noFetch, expectedSize: bytes.length }),
      /its MD5 is [0-9a-f]{32}, expected c32a1d4ab5d03f1284b67883e8d87530/,
    );
    assert.deepEqual(await Deno.readFile(archive), bytes);
  });
});

Deno.test("ensureCifar10({ download: false }) creates nothing when the folder is missing", async () => {
  await withTempDir(async (root) => {
    const dataDir = `${root}/cache/resnet-webgpu`;
    await assert.rejects(
      () => ensureCifar10({ dataDir, download: false, fetch: noFetch }),
      /CIFAR-10 is not in .*cifar-10-batches-bin, and this call does not download/,
    );
    await assert.rejects(Deno.stat(`${root}/cache`), Deno.errors.NotFound);
  });
});
