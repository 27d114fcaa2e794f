// Test helpers: headless Chromium driven through the DevTools protocol (CDP) over Deno's built-in
// WebSocket, and a PNG decoder for its screenshots. No dependencies.

/**
 * `$CHROMIUM` when set, else the first `chromium` on PATH (Debian's package), else null.
 * `deno task test` allows running `chromium` only; another executable in `$CHROMIUM` needs a run
 * permission of its own.
 */
export async function findChromium(): Promise<string | null> {
  const explicit = Deno.env.get("CHROMIUM");
  if (explicit) return explicit;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
    try {
      if ((await Deno.stat(`${dir}/chromium`)).isFile) return `${dir}/chromium`;
    } catch {
      // not in this folder
    }
  }
  return null;
}

/** A console message or exception from the page, for failure messages. */
export interface PageLog {
  type: string;
  text: string;
}

/** One page of a headless Chromium, with a CDP session to it. */
export class Browser {
  readonly logs: PageLog[] = [];
  #process: Deno.ChildProcess;
  #profile: string;
  #socket: WebSocket | null = null;
  #nextId = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #stderr: Promise<string>;

  private constructor(process: Deno.ChildProcess, profile: string) {
    this.#process = process;
    this.#profile = profile;
    this.#stderr = new Response(process.stderr).text().catch(() => "");
  }

  /**
   * Starts `executable` headless with WebGPU on (SwiftShader without a GPU), opens `url` and
   * connects to that page's DevTools endpoint.
   */
  static async launch(
    executable: string,
    url: string,
    { width = 1000, height = 1000 } = {},
  ): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "resnet-chromium-" });
    const process = new Deno.Command(executable, {
      args: [
        "--headless=new",
        "--no-sandbox",
        "--enable-unsafe-webgpu",
        "--enable-unsafe-swiftshader",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        `--window-size=${width},${height}`,
        url,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const browser = new Browser(process, profile);
    try {
      await browser.#connect(url);
    } catch (error) {
      await browser.close();
      const stderr = (await browser.#stderr).split("\n").slice(-20).join("\n");
      throw new Error(`${(error as Error).message}\nchromium's stderr (last lines):\n${stderr}`);
    }
    return browser;
  }

  /** Reads the DevTools port Chromium wrote into its profile, then attaches to the page. */
  async #connect(url: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    let port = "";
    while (!port) {
      if (Date.now() > deadline) throw new Error("chromium did not open its DevTools port in 30 s");
      try {
        port = (await Deno.readTextFile(`${this.#profile}/DevToolsActivePort`)).split("\n")[0];
      } catch {
        await delay(100);
      }
    }
    let target: { type: string; url: string; webSocketDebuggerUrl: string } | undefined;
    while (!target) {
      if (Date.now() > deadline) throw new Error(`chromium did not open ${url} in 30 s`);
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      target = targets.find((t: { type: string }) => t.type === "page");
      if (!target) await delay(100);
    }
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error("cannot connect to chromium's DevTools socket"));
    });
    socket.onmessage = (event) => this.#onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      for (const { reject } of this.#pending.values()) reject(new Error("DevTools socket closed"));
      this.#pending.clear();
    };
    this.#socket = socket;
    await this.send("Runtime.enable");
  }

  #onMessage(message: {
    id?: number;
    result?: unknown;
    error?: { message: string };
    method?: string;
    params?: Record<string, unknown>;
  }): void {
    if (message.id !== undefined) {
      const pending = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.error) pending?.reject(new Error(`CDP: ${message.error.message}`));
      else pending?.resolve(message.result);
    } else if (message.method === "Runtime.consoleAPICalled") {
      const args = message.params!.args as { value?: unknown; description?: string }[];
      this.logs.push({
        type: String(message.params!.type),
        text: args.map((a) => a.description ?? String(a.value)).join(" "),
      });
    } else if (message.method === "Runtime.exceptionThrown") {
      const details = message.params!.exceptionDetails as {
        text: string;
        exception?: { description?: string };
      };
      this.logs.push({
        type: "exception",
        text: details.exception?.description ?? details.text,
      });
    }
  }

  /** Sends one CDP command to the page and returns its result. */
  send<T = Record<string, unknown>>(method: string, params: unknown = {}): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#socket!.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates `expression` in the page (awaiting a promise) and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const { result, exceptionDetails } = await this.send<{
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    }>("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (exceptionDetails) {
      throw new Error(
        `page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`,
      );
    }
    return result.value as T;
  }

  /** A PNG of the viewport. */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", {
      format: "png",
    });
    return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  }

  /** Closes the socket, ends the browser and removes its profile. */
  async close(): Promise<void> {
    this.#socket?.close();
    try {
      this.#process.kill("SIGKILL");
    } catch {
      // already ended
    }
    await this.#process.status;
    await this.#stderr;
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A decoded 8-bit PNG: `width * height` pixels, RGBA. */
export interface DecodedPng {
  width: number;
  height: number;
  rgba: Uint8Array;
}

/**
 * Decodes an 8-bit, non-interlaced PNG of colour type 2 (RGB) or 6 (RGBA), as Chromium's
 * screenshots are: the IDAT chunks are inflated with `DecompressionStream("deflate")` and each
 * row's filter undone.
 */
export async function decodePng(bytes: Uint8Array): Promise<DecodedPng> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (!signature.every((b, i) => bytes[i] === b)) throw new Error("not a PNG");
  let width = 0;
  let height = 0;
  let colorType = 0;
  const idat: Uint8Array[] = [];
  for (let at = 8; at < bytes.length;) {
    const length = view.getUint32(at);
    const type = new TextDecoder().decode(bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const depth = body[8];
      colorType = body[9];
      if (depth !== 8 || (colorType !== 2 && colorType !== 6) || body[12] !== 0) {
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colorType}, interlaced`);
      }
    } else if (type === "IDAT") {
      idat.push(body);
    } else if (type === "IEND") {
      break;
    }
    at += 12 + length;
  }
  const inflated = new Uint8Array(
    await new Response(
      new Blob(idat as BlobPart[]).stream().pipeThrough(new DecompressionStream("deflate")),
    ).arrayBuffer(),
  );
  const channels = colorType === 6 ? 4 : 3;
  const stride = width * channels;
  const raw = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = inflated[y * (stride + 1)];
    const line = inflated.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = raw.subarray(y * stride, (y + 1) * stride);
    const previous = y > 0 ? raw.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? out[i - channels] : 0;
      const b = previous[i];
      const c = i >= channels ? previous[i - channels] : 0;
      let predictor = 0;
      if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Error(`PNG row ${y}: unknown filter ${filter}`);
      out[i] = (line[i] + predictor) & 255;
    }
  }
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    rgba[4 * i] = raw[channels * i];
    rgba[4 * i + 1] = raw[channels * i + 1];
    rgba[4 * i + 2] = raw[channels * i + 2];
    rgba[4 * i + 3] = channels === 4 ? raw[4 * i + 3] : 255;
  }
  return { width, height, rgba };
}

/** What `window.__report` of examples/browser/app.js holds. */
export interface PageReport {
  status: string;
  adapter: string | null;
  error: string | null;
  classes: string[];
  steps: { step: number; loss: number; accuracy: number; ms: number }[];
  plot: { x: number; y: number; width: number; height: number; background: number[] } | null;
  checkpoint: { base64: string; sums: Record<string, number>; bytes: number } | null;
  prediction: {
    pixels: string;
    logits: number[];
    top: { class: string; probability: number }[];
    label: string;
  } | null;
}

/** Polls `window.__report` until the page is done, failing with the page's log otherwise. */
export async function waitForReport(browser: Browser, timeoutMs: number): Promise<PageReport> {
  const deadline = Date.now() + timeoutMs;
  let report: PageReport | null = null;
  while (Date.now() < deadline) {
    report = await browser.evaluate<PageReport | null>("globalThis.__report ?? null");
    if (report?.status === "done") return report;
    if (report?.status === "error") break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const log = browser.logs.map((l) => `  [${l.type}] ${l.text}`).join("\n");
  throw new Error(
    `the page did not finish (status ${report?.status ?? "no report"}, ` +
      `${report?.steps.length ?? 0} steps` +
      (report?.error ? `, error: ${report.error}` : ", timed out") + `)\npage log:\n${log}`,
  );
}
