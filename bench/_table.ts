// Plain-text tables with aligned columns.

export type Align = "l" | "r";

/** `title`, then the header, a rule and the rows, each column padded to its widest cell. */
export function renderTable(
  title: string,
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[],
): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => align[i] === "r" ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))
      .join("  ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [title, line(header), rule, ...rows.map(line)].join("\n");
}

/** Milliseconds with three significant digits (at least 0.001). */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  if (ms < 1) return ms.toFixed(3);
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

/** A rate with three significant digits, "-" when absent. */
export function fmtRate(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "-";
  if (value < 10) return value.toFixed(2);
  if (value < 100) return value.toFixed(1);
  return value.toFixed(0);
}

/** A fraction as a percentage, "-" when absent. */
export function fmtPercent(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "-";
  return `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
}
