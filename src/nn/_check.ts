// Transitional: the layers' argument checks live in ../ops/_check.ts. batch_norm2d.ts and
// resnet.ts still import positiveInt from here; once they call checkInteger(layer, name, value,
// 1) from ../ops/_check.ts, delete this file.
import { checkInteger } from "../ops/_check.ts";

/** `value` as a positive integer, or a RangeError naming the layer and argument. */
export function positiveInt(layer: string, name: string, value: number): number {
  return checkInteger(layer, name, value, 1);
}
