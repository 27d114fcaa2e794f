/**
 * A private `XDG_RUNTIME_DIR` for processes started without one (a Linux shell outside a desktop
 * session, a container, CI). Without it, the Wayland client library that the Vulkan and GL
 * drivers load prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` twice
 * when the WebGPU adapter is requested. The library reads the variable when the adapter is
 * requested, not when the process starts, so setting it beforehand in this process is enough.
 * Importing this module makes `initGPU()` call {@link ensureRuntimeDir} first; mod.ts imports it,
 * the browser build does not. Internal: not exported by mod.ts.
 *
 * @module
 */
import { setAdapterPreparation } from "./device.ts";

/** Where `XDG_RUNTIME_DIR` points when no private folder can be made: an absolute path, never created. */
export const UNUSED_RUNTIME_DIR = "/nonexistent/resnet-webgpu-runtime";

/**
 * On Linux, when `XDG_RUNTIME_DIR` is unset or not an absolute path, creates a private folder
 * (mode 0700) in the system's temporary folder, points `XDG_RUNTIME_DIR` of this process at it,
 * and removes it when the process exits. Without the permission to create it, points the variable
 * at {@link UNUSED_RUNTIME_DIR} instead, a path that is never created: the drivers only check that
 * the variable is absolute, and compute work opens no socket there. Does nothing on other systems,
 * when the variable is already an absolute path, or without the permission to read and set it (it
 * asks for none: no permission prompt). Call it before `navigator.gpu.requestAdapter()`.
 *
 * @returns the folder it created, or `undefined` when it created none.
 */
export function ensureRuntimeDir(): string | undefined {
  if (Deno.build.os !== "linux") return undefined;
  const granted = (descriptor: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(descriptor).state === "granted";
  if (!granted({ name: "env", variable: "XDG_RUNTIME_DIR" })) return undefined;
  if (Deno.env.get("XDG_RUNTIME_DIR")?.startsWith("/")) return undefined;
  let dir: string;
  try {
    if (!granted({ name: "write" })) throw new Error("no write permission");
    dir = Deno.makeTempDirSync({ prefix: "resnet-webgpu-runtime-" });
    Deno.chmodSync(dir, 0o700);
  } catch {
    Deno.env.set("XDG_RUNTIME_DIR", UNUSED_RUNTIME_DIR);
    return undefined;
  }
  Deno.env.set("XDG_RUNTIME_DIR", dir);
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already gone, or the process lost the permission: nothing left to do.
    }
  });
  return dir;
}

setAdapterPreparation(ensureRuntimeDir);
