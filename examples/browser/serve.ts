/**
 * `deno task serve:browser`: builds the browser bundle (`deno task bundle`, into
 * `dist/resnet_webgpu.js`) and serves the example page on 127.0.0.1 with `Deno.serve`.
 *
 * ```sh
 * deno task serve:browser            # http://127.0.0.1:8000/
 * deno task serve:browser --port 0   # any free port
 * ```
 *
 * @module
 */

const PAGE_DIR = new URL("./", import.meta.url);
const REPO_ROOT = new URL("../../", import.meta.url);
/** Where `deno task bundle` writes the bundle. */
export const BUNDLE_URL: URL = new URL("dist/resnet_webgpu.js", REPO_ROOT);

/** What the server answers: the page's own files and the bundle, nothing else. */
const ROUTES: Record<string, { file: URL; type: string }> = {
  "/": { file: new URL("index.html", PAGE_DIR), type: "text/html; charset=utf-8" },
  "/index.html": { file: new URL("index.html", PAGE_DIR), type: "text/html; charset=utf-8" },
  "/app.js": { file: new URL("app.js", PAGE_DIR), type: "text/javascript; charset=utf-8" },
  "/resnet_webgpu.js": { file: BUNDLE_URL, type: "text/javascript; charset=utf-8" },
  "/resnet_webgpu.js.map": {
    file: new URL("dist/resnet_webgpu.js.map", REPO_ROOT),
    type: "application/json",
  },
};

/**
 * Runs `deno task bundle` in the repository (the same Deno executable as this process) and waits
 * for it.
 *
 * @throws {Error} with the bundler's output when it fails.
 * @example
 * ```ts ignore
 * import { buildBundle } from "./serve.ts";
 * await buildBundle(); // dist/resnet_webgpu.js
 * ```
 */
export async function buildBundle(): Promise<void> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "bundle"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!success) {
    const decoder = new TextDecoder();
    throw new Error(
      `deno task bundle failed:\n${decoder.decode(stdout)}${decoder.decode(stderr)}`,
    );
  }
}

/** Options of {@link serveExample}. */
export interface ServeExampleOptions {
  /** Port on 127.0.0.1; 0 picks a free one. Default 8000. */
  port?: number;
  /** Called once the server listens, with the page's address. */
  onListen?: (url: string) => void;
}

/**
 * Serves the page (`index.html`, `app.js`) and the bundle from `dist/` on 127.0.0.1. Build the
 * bundle first with {@link buildBundle}.
 *
 * @returns the server; `server.shutdown()` stops it.
 * @example
 * ```ts ignore
 * import { buildBundle, serveExample } from "./serve.ts";
 * await buildBundle();
 * const server = serveExample({ port: 0, onListen: (url) => console.log(url) });
 * await server.shutdown();
 * ```
 */
export function serveExample(options: ServeExampleOptions = {}): Deno.HttpServer<Deno.NetAddr> {
  const { port = 8000, onListen } = options;
  return Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => onListen?.(`http://127.0.0.1:${port}/`),
  }, async (request) => {
    const route = ROUTES[new URL(request.url).pathname];
    if (!route) return new Response("not found", { status: 404 });
    try {
      const body = await Deno.readFile(route.file);
      return new Response(body, {
        headers: { "content-type": route.type, "cache-control": "no-store" },
      });
    } catch (error) {
      return new Response(`cannot read ${route.file.pathname}: ${(error as Error).message}`, {
        status: 500,
      });
    }
  });
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--port");
  const port = at >= 0 ? Number(Deno.args[at + 1]) : 8000;
  console.log("building dist/resnet_webgpu.js …");
  await buildBundle();
  serveExample({
    port,
    onListen: (url) => console.log(`serving the browser example at ${url} (Ctrl-C stops)`),
  });
}
