/**
 * The data set a training run's flags name, with the offline fallback to synthetic data.
 *
 * @module
 */
import { type ImageDataset, loadCifar10Folder } from "../data/cifar10.ts";
import { CIFAR10_FOLDER, CIFAR10_URL, ensureCifar10 } from "../data/download.ts";
import { syntheticCifar } from "../data/synthetic.ts";
import { formatDuration } from "./_duration.ts";
import type { ProgressReporter } from "./progress.ts";
import type { TrainConfig } from "./trainer.ts";

/**
 * Loads the dataset the config names; `auto` takes CIFAR-10 (downloading it when needed, unless
 * `options.download` is false) and falls back to synthetic data with a banner saying why.
 */
export async function resolveDataset(
  config: Pick<TrainConfig, "dataset" | "dataDir" | "seed" | "syntheticSizes">,
  progress: ProgressReporter,
  options: { download?: boolean } = {},
): Promise<{ train: ImageDataset; test: ImageDataset; name: string }> {
  const synthetic = () => {
    const sizes = config.syntheticSizes ?? { train: 5000, test: 1000 };
    const { train, test } = syntheticCifar({
      trainCount: sizes.train,
      testCount: sizes.test,
      seed: config.seed,
    });
    return { train, test, name: "synthetic" };
  };
  if (config.dataset === "synthetic") return synthetic();
  try {
    const folder = await ensureCifar10({
      dataDir: config.dataDir,
      download: options.download,
      onProgress: (p) => {
        progress.status(
          `downloading CIFAR-10: ${(p.receivedBytes / 1e6).toFixed(1)} / ` +
            `${(p.totalBytes / 1e6).toFixed(1)} MB  ${(p.bytesPerSecond / 1e6).toFixed(2)} MB/s  ` +
            `ETA ${formatDuration(p.etaSeconds)}`,
          p.receivedBytes >= p.totalBytes,
        );
      },
    });
    const { train, test } = await loadCifar10Folder(folder);
    return { train, test, name: "cifar10" };
  } catch (error) {
    if (config.dataset === "cifar10") throw error;
    progress.log(
      [
        "=".repeat(78),
        "CIFAR-10 is not available, so this run uses the SYNTHETIC data set (10 procedurally",
        "generated classes in CIFAR-10's layout) to show the whole pipeline working.",
        `Why: ${(error as Error).message.split("\n")[0].split(". ")[0]}.`,
        `To train on CIFAR-10: allow network access to ${CIFAR10_URL}, or download it`,
        `elsewhere and unpack it so that ${config.dataDir}/${CIFAR10_FOLDER}/ holds`,
        "data_batch_1.bin … data_batch_5.bin and test_batch.bin; then run with --dataset cifar10.",
        "=".repeat(78),
      ].join("\n"),
    );
    return synthetic();
  }
}
