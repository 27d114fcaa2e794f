/**
 * Quick start: build the paper's ResNet-8 for CIFAR-sized images, run a forward and backward pass
 * on the GPU, take a few plain gradient-descent steps, and save the weights as safetensors with
 * PyTorch's state-dict keys.
 *
 * Run: `deno task quickstart` (or `deno run --allow-read --allow-write examples/quickstart.ts`).
 *
 * @module
 */
import {
  adapterDescription,
  add,
  crossEntropy,
  initGPU,
  loadSafetensors,
  mulScalar,
  noGrad,
  resnet,
  saveSafetensors,
  Tensor,
  tidy,
} from "../mod.ts";

await initGPU();
console.log(`adapter: ${adapterDescription()}`);

const model = resnet(8, { numClasses: 10, seed: 0 });
const images = Tensor.randn([8, 3, 32, 32], { seed: 1 });
const labels = new Int32Array([0, 1, 2, 3, 4, 5, 6, 7]);
const lr = 0.1;

for (let step = 1; step <= 5; step++) {
  // tidy() returns every intermediate tensor's buffer to the pool when the step ends.
  const loss = tidy(() => {
    model.zeroGrad();
    const loss = crossEntropy(model.call(images), labels);
    loss.backward();
    noGrad(() => {
      for (const p of model.parameters()) p.copyFrom(add(p, mulScalar(p.grad!, -lr)));
    });
    return loss;
  });
  console.log(`step ${step}: loss ${(await loss.item()).toFixed(4)}`);
  loss.dispose();
}

const path = await Deno.makeTempFile({ suffix: ".safetensors" });
await saveSafetensors(path, model.stateDict(), { model: "resnet8" });
const restored = resnet(8, { numClasses: 10 });
restored.loadStateDict(await loadSafetensors(path));
console.log(`saved and reloaded ${restored.stateDict().size} tensors from ${path}`);
