/**
 * Durations for people: `1h02m`, `3m05s`, `12s`.
 *
 * @module
 */

/**
 * Formats seconds as `2d03h`, `1h02m`, `3m05s` or `12s`; `?` when not finite.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./_duration.ts";
 * console.log(formatDuration(3725)); // "1h02m"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  if (s >= 86400) {
    return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
  }
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}
