/**
 * `deno task predict`: classifies PNG and JPEG files with a checkpoint of `deno task train` (or a
 * PyTorch state dict saved as safetensors) and prints the most likely classes with their
 * probabilities, or with `--json` one JSON object per image. A thin layer over `predict()` from
 * `@resnet/webgpu/predict`.
 *
 * Usage:
 *   deno run --allow-read --allow-env examples/predict.ts --checkpoint FILE \
 *     --image a.png b.jpg … [--top 3] [--json] [--model resnet20]
 *
 * Bad flags, missing or unreadable files, files that are not images and checkpoints that do not
 * fit the model print one line and exit with code 2.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { initGPU } from "../mod.ts";
import { loadClassifier, predict, PredictError } from "../src/predict.ts";

const HELP = `Classify images with a trained ResNet.

Usage: deno task predict --checkpoint FILE --image a.png b.jpg … [flags]

  --checkpoint FILE   weights: runs/<date>/best.safetensors from deno task train, or a PyTorch
                      state dict saved as safetensors
  --image FILE …      PNG or JPEG files, any size (cut to their centred square, resampled to
                      32x32, normalized as in training); further file names may follow
  --top K             how many of the most likely classes to list [3]
  --json              one JSON line per image: {"file", "index", "label", "probability", "top"}
  --model NAME        resnet<6n+2> or labml [the one the checkpoint was trained as]
  --help              this text`;

/**
 * Runs the command line with `args` and returns the exit code: 0, or 2 (with one line on stderr)
 * for bad flags and bad input.
 *
 * @example
 * ```ts
 * import { main } from "@resnet/webgpu/predict/cli";
 * console.log(await main(["--image", "cat.png"])); // 2: "error: --checkpoint FILE is needed" on stderr
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        checkpoint: { type: "string" },
        image: { type: "string", multiple: true },
        top: { type: "string" },
        json: { type: "boolean" },
        model: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    return usage((error as Error).message);
  }
  const flags = parsed.values;
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.checkpoint) {
    return usage("--checkpoint FILE is needed (e.g. runs/<date>/best.safetensors)");
  }
  const images = [...(flags.image ?? []), ...parsed.positionals];
  if (images.length === 0) return usage("--image FILE … is needed (PNG or JPEG files)");
  const top = Number(flags.top ?? 3);
  if (!Number.isInteger(top) || top < 1) {
    return usage(`--top must be a positive integer, got "${flags.top}"`);
  }
  try {
    await initGPU();
    const classifier = await loadClassifier(flags.checkpoint, { model: flags.model });
    const results = await predict(classifier, images, { top });
    if (flags.json) {
      for (const result of results) console.log(JSON.stringify(result));
      return 0;
    }
    const percent = (p: number) => `${(p * 100).toFixed(1)}%`;
    console.log(`${classifier.modelName} from ${flags.checkpoint}:`);
    for (const { file, label, probability, top } of results) {
      const others = top.slice(1).map((c) => `${c.label} ${percent(c.probability)}`).join(", ");
      console.log(`${file}: ${label} ${percent(probability)}${others ? `  (${others})` : ""}`);
    }
    return 0;
  } catch (error) {
    if (error instanceof PredictError) {
      console.error(`error: ${error.message}`);
      return 2;
    }
    throw error;
  }
}

function usage(message: string): number {
  console.error(`error: ${message} (--help lists the flags)`);
  return 2;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(`error: ${(error as Error).message.split("\n")[0]}`);
    Deno.exit(1);
  }
}
