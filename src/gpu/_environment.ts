/**
 * Lets `initGPU()` read its environment variables (`RESNET_WEBGPU_KERNELS`,
 * `RESNET_WEBGPU_LIMITS`) through `Deno.env`, where the permission to read them is granted (it asks
 * for none: no permission prompt). mod.ts imports it; the browser build does not, so that
 * device.ts names no Deno API. Internal: not exported by mod.ts.
 *
 * @module
 */
import { setEnvironmentReader } from "./device.ts";

/** The variable's value, or undefined when it is unset or may not be read. */
export function readEnvironment(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
    return undefined;
  }
  return Deno.env.get(name);
}

setEnvironmentReader(readEnvironment);
