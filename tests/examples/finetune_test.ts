// examples/finetune.ts end to end on the fixture folder (tests/fixtures/image_folder): from a
// torchvision-layout .pth with a 1000-class head to a 2-class .pth that loads back strictly
// (tests/fixtures/check_torchvision_load.py loads it into torchvision with strict=True).
import assert from "node:assert/strict";
import { finetune } from "../../examples/finetune.ts";
import { loadTorchCheckpoint, saveTorchCheckpoint } from "../../src/io/torch_checkpoint.ts";
import { resnet18 } from "../../src/nn/torchvision.ts";
import { gpuTest } from "../_gpu.ts";

const folder = new URL("../fixtures/image_folder", import.meta.url).pathname;

for (const freezeBackbone of [true, false]) {
  gpuTest(
    `finetune ${freezeBackbone ? "with a frozen backbone" : "of the whole network"}: ` +
      "loads a torchvision .pth, replaces fc, trains, saves a .pth that loads strictly",
    async () => {
      const dir = await Deno.makeTempDir();
      const pretrained = resnet18({ seed: 5 });
      await saveTorchCheckpoint(`${dir}/pretrained.pth`, pretrained.stateDict());
      const before = await pretrained.getSubmodule("conv1").parameters()[0].toArray();
      pretrained.dispose();
      const lines: string[] = [];
      const result = await finetune({
        weights: `${dir}/pretrained.pth`,
        data: folder,
        val: folder,
        epochs: freezeBackbone ? 3 : 1,
        batchSize: 4,
        size: 32,
        side: 40,
        lr: 0.01,
        freezeBackbone,
        out: `${dir}/finetuned.pth`,
        log: (line) => lines.push(line),
      });
      assert.deepEqual(result.classes, ["disc", "stripes"]);
      assert.ok(result.losses.every(Number.isFinite), `losses ${result.losses}`);
      assert.ok(result.valAccuracy !== null && result.valAccuracy >= 0);
      assert.ok(lines.some((l) => l.startsWith("saved ")), lines.join("\n"));
      result.model.dispose();

      const saved = await loadTorchCheckpoint(`${dir}/finetuned.pth`);
      assert.deepEqual(saved.get("fc.weight")!.shape, [2, 512]);
      const model = resnet18({ numClasses: 2 });
      model.loadStateDict(saved); // strict: every torchvision key, nothing else
      const after = await saved.get("conv1.weight")!.toArray();
      const same = after.every((v, i) => v === before[i]);
      assert.equal(same, freezeBackbone, "the backbone changes exactly when not frozen");
      const tracked = await saved.get("bn1.num_batches_tracked")!.item();
      assert.equal(tracked, freezeBackbone ? 0 : 3, "batch norm statistics update only unfrozen");
      model.dispose();
      for (const t of saved.values()) t.dispose();
      await Deno.remove(dir, { recursive: true });
    },
  );
}
