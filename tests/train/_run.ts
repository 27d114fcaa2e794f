// Shared by the trainer's tests: a progress reporter that records instead of printing, and the
// configuration of a tiny synthetic run (resnet8, a few dozen images) in a given folder.
import { ProgressReporter, type ProgressState } from "../../src/train/progress.ts";
import type { TrainConfig } from "../../src/train/trainer.ts";

/** Records the progress lines and states a run reports, and prints nothing. */
export class Recorder extends ProgressReporter {
  lines: string[] = [];
  states: ProgressState[] = [];
  onUpdate?: (state: ProgressState) => void;
  constructor() {
    super({ write: () => {}, live: false });
  }
  override update(state: ProgressState): void {
    this.states.push(state);
    this.onUpdate?.(state);
  }
  override log(line: string): void {
    this.lines.push(line);
  }
}

/** A 2-epoch resnet8 run on 64 synthetic training and 16 test images, in `logDir`. */
export function config(logDir: string, overrides: Partial<TrainConfig> = {}): TrainConfig {
  return {
    model: "resnet8",
    epochs: 2,
    batchSize: 16,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 1e-4,
    optimizer: "sgd",
    schedule: "multistep",
    warmupEpochs: 0,
    augment: { crop: true, flip: true },
    dataset: "synthetic",
    dataDir: logDir,
    seed: 7,
    logDir,
    syntheticSizes: { train: 64, test: 16 },
    ...overrides,
  };
}
