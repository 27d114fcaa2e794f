// Argument checks shared by the layer constructors.

/** `value` as a positive integer, or a RangeError naming the layer and argument. */
export function positiveInt(layer: string, name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${layer}: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** One number or `[h, w]` as a pair of integers >= `min`. */
export function pair(
  layer: string,
  name: string,
  value: number | readonly number[],
  min: number,
): [number, number] {
  const p = typeof value === "number" ? [value, value] : [...value];
  if (p.length !== 2 || !p.every((v) => Number.isInteger(v) && v >= min)) {
    throw new RangeError(
      `${layer}: ${name} must be an integer >= ${min} or a pair [h, w] of them, got ` +
        JSON.stringify(value),
    );
  }
  return [p[0], p[1]];
}
