/**
 * Uniform params filled by field name: the layout of a kernel's `struct Params`, parsed from its
 * WGSL, checked against the field list its launcher declares, and a packer that writes the values
 * of an object at the parsed offsets. Internal: not exported by mod.ts.
 *
 * @module
 */

/** One field of a parsed `struct Params`. */
export interface ParamField {
  /** The field's name in WGSL. */
  name: string;
  /** Scalar type of its elements. */
  type: "u32" | "i32" | "f32";
  /** Byte offset in the struct (WGSL's uniform layout rules). */
  offset: number;
  /** Elements: 1 for a scalar, 4 * N for `array<vec4u, N>` (and i32/f32 alike). */
  count: number;
}

/** The parsed layout of a uniform struct. */
export interface ParamsLayout {
  fields: ParamField[];
  /** Size of the struct in bytes, rounded up to 16 (uniform buffers bind in 16-byte units). */
  size: number;
}

/** Parses `struct <name> { ... }` from WGSL source into its uniform-buffer layout. */
export function parseParamsStruct(source: string, structName = "Params"): ParamsLayout {
  const start = source.search(new RegExp(`\\bstruct\\s+${structName}\\s*\\{`));
  if (start < 0) throw new Error(`no 'struct ${structName}' in the WGSL source`);
  const open = source.indexOf("{", start);
  const close = source.indexOf("}", open);
  const body = source.slice(open + 1, close).replace(/\/\/[^\n]*/g, "");
  const fields: ParamField[] = [];
  let offset = 0;
  let align = 4;
  for (const raw of splitMembers(body)) {
    const member = raw.trim();
    if (!member) continue;
    const m = member.match(/^(\w+)\s*:\s*(.+)$/);
    if (!m) throw new Error(`'struct ${structName}': cannot read member '${member}'`);
    const [, name, typeText] = m;
    const type = typeText.replace(/\s+/g, "");
    let scalar: ParamField["type"];
    let count: number;
    let fieldAlign: number;
    let size: number;
    const arrayOfVec4 = type.match(/^array<vec4(u|i|f|<u32>|<i32>|<f32>),(\d+)>$/);
    if (type === "u32" || type === "i32" || type === "f32") {
      scalar = type;
      count = 1;
      fieldAlign = 4;
      size = 4;
    } else if (arrayOfVec4) {
      const letter = arrayOfVec4[1].replace(/[<>]/g, "")[0];
      scalar = letter === "u" ? "u32" : letter === "i" ? "i32" : "f32";
      count = 4 * Number(arrayOfVec4[2]);
      fieldAlign = 16;
      size = 4 * count;
    } else {
      throw new Error(
        `'struct ${structName}': member '${name}' has type ${typeText.trim()}; params support ` +
          "u32, i32, f32 and array<vec4u|vec4i|vec4f, N>",
      );
    }
    offset = Math.ceil(offset / fieldAlign) * fieldAlign;
    fields.push({ name, type: scalar, offset, count });
    offset += size;
    align = Math.max(align, fieldAlign);
  }
  const size = Math.ceil(Math.ceil(offset / align) * align / 16) * 16;
  return { fields, size: Math.max(16, size) };
}

/** The struct's members: commas outside `<...>` separate them. */
function splitMembers(body: string): string[] {
  const members: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch === "<") depth++;
    else if (ch === ">") depth--;
    else if (ch === "," && depth === 0) {
      members.push(body.slice(start, i));
      start = i + 1;
    }
  }
  members.push(body.slice(start));
  return members;
}

/**
 * Checks that `declared` (a launcher's field list) names the fields of `layout` in the same order,
 * and says which are missing, extra or out of order otherwise.
 */
export function checkDeclaredParams(
  kernelName: string,
  layout: ParamsLayout,
  declared: readonly string[],
): void {
  const wgsl = layout.fields.map((f) => f.name);
  if (wgsl.join() === declared.join()) return;
  const missing = wgsl.filter((n) => !declared.includes(n));
  const extra = declared.filter((n) => !wgsl.includes(n));
  const problems: string[] = [];
  if (missing.length) problems.push(`missing ${missing.join(", ")}`);
  if (extra.length) problems.push(`not in the WGSL: ${extra.join(", ")}`);
  if (!missing.length && !extra.length) problems.push("the same fields in another order");
  throw new Error(
    `kernel ${kernelName}: the launcher's params (${declared.join(", ")}) do not match the ` +
      `kernel's struct Params (${wgsl.join(", ")}): ${problems.join("; ")}`,
  );
}

/** Values of a kernel's params by field name: numbers, or number arrays for array fields. */
export type ParamValues<F extends string = string> = {
  readonly [K in F]: number | readonly number[];
};

/**
 * Writes `values` into `out` (at least `layout.size` bytes, zeroed where no field lies) at the
 * parsed offsets. Every field must be given, and nothing else.
 */
export function packParamsByName(
  kernelName: string,
  layout: ParamsLayout,
  values: ParamValues,
  out: ArrayBuffer,
): void {
  const u32 = new Uint32Array(out, 0, layout.size / 4);
  const i32 = new Int32Array(out, 0, layout.size / 4);
  const f32 = new Float32Array(out, 0, layout.size / 4);
  u32.fill(0);
  let given = 0;
  for (const _ in values) given++;
  if (given !== layout.fields.length) {
    const names = layout.fields.map((f) => f.name);
    const missing = names.filter((n) => values[n] === undefined);
    const extra = Object.keys(values).filter((k) => !names.includes(k));
    const problems = [
      ...missing.map((n) => `params.${n} is missing`),
      ...(extra.length ? [`params not in its struct Params: ${extra.join(", ")}`] : []),
    ];
    throw new Error(
      `kernel ${kernelName}: ${problems.join("; ")}; expected exactly ${names.join(", ")}`,
    );
  }
  for (const field of layout.fields) {
    const value = values[field.name];
    const word = field.offset / 4;
    const view = field.type === "u32" ? u32 : field.type === "i32" ? i32 : f32;
    if (typeof value === "number") {
      if (field.count !== 1) {
        throw new Error(`kernel ${kernelName}: params.${field.name} must be an array`);
      }
      view[word] = value;
    } else if (value !== undefined && typeof value === "object") {
      if (field.count === 1 || value.length > field.count) {
        throw new Error(
          `kernel ${kernelName}: params.${field.name} must be ` +
            (field.count === 1 ? "a number" : `at most ${field.count} numbers`) +
            `, got ${value.length}`,
        );
      }
      for (let k = 0; k < value.length; k++) view[word + k] = value[k];
    } else {
      throw new Error(
        `kernel ${kernelName}: params.${field.name} is missing; expected exactly ` +
          layout.fields.map((f) => f.name).join(", "),
      );
    }
  }
}
