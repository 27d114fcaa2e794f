// The seed's models against PyTorch 1.13: forward, loss, every parameter gradient, the running
// statistics after a training step, and the eval-mode output (also after fuseConvBn), from
// fixtures written by tests/fixtures/make_fixtures.py.
import assert from "node:assert/strict";
import { loadSafetensors } from "../../src/io/safetensors.ts";
import * as nn from "../../src/nn/mod.ts";
import { fuseConvBn, resnet, ResNetBase } from "../../src/nn/resnet.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { mulScalar } from "../../src/ops/elementwise.ts";
import { noGrad } from "../../src/autograd.ts";
import type { Tensor } from "../../src/tensor.ts";
import { gpuTest, relativeL2 } from "../_gpu.ts";

const configs: Record<string, () => nn.Module> = {
  basic: () =>
    new nn.Sequential(
      new ResNetBase([2, 1], [6, 10], { firstKernelSize: 3 }),
      new nn.Linear(10, 5),
    ),
  bottleneck: () =>
    new nn.Sequential(
      new ResNetBase([1, 2], [6, 10], { bottlenecks: [4, 5], firstKernelSize: 7 }),
      new nn.Linear(10, 5),
    ),
  paper: () => resnet(8, { numClasses: 10 }),
};

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

async function values(t: Tensor): Promise<Float32Array> {
  return await t.toArray();
}

for (const [name, build] of Object.entries(configs)) {
  gpuTest(`${name} ResNet matches PyTorch: output, loss, gradients, running stats`, async () => {
    const fixture = await loadSafetensors(
      new URL(`../fixtures/${name}.safetensors`, import.meta.url),
    );
    const get = (key: string) => {
      const t = fixture.get(key);
      if (!t) throw new Error(`fixture ${name} lacks ${key}`);
      return t;
    };
    const model = build();
    const weights = new Map<string, Tensor>();
    for (const [key, t] of fixture) if (key.startsWith("model.")) weights.set(key.slice(6), t);
    model.loadStateDict(weights);
    model.train();

    const targets = Int32Array.from(await values(get("target")));
    const output = model.forward(get("input"));
    const loss = crossEntropy(output, targets);
    loss.backward();

    const outErr = relativeL2(await values(output), await values(get("output")));
    assert.ok(outErr <= 1e-4, `output relative L2 error ${outErr}`);
    const lossErr = relativeL2([await loss.item()], await values(get("loss")));
    assert.ok(lossErr <= 1e-4, `loss relative error ${lossErr}`);
    const params = model.namedParameters();
    assert.ok(params.length > 0);
    for (const [key, p] of params) {
      assert.ok(p.grad, `${key} has no gradient`);
      const ours = await values(p.grad);
      const theirs = await values(get(`grad.${key}`));
      if (norm(theirs) < 1e-6) {
        // A conv bias followed by batch norm: the exact gradient is zero (the normalization
        // removes any per-channel shift), so both sides hold rounding noise; relative error is
        // meaningless, the noise must stay tiny next to the ~1e-1 gradients elsewhere.
        assert.ok(norm(ours) < 1e-5, `gradient of ${key} should be ~0, has norm ${norm(ours)}`);
        continue;
      }
      const err = relativeL2(ours, theirs);
      assert.ok(err <= 1e-3, `gradient of ${key}: relative L2 error ${err}`);
    }
    for (const [key, b] of model.namedBuffers()) {
      const err = relativeL2(await values(b), await values(get(`after.${key}`)));
      assert.ok(err <= 1e-4, `${key} after one training forward: relative L2 error ${err}`);
    }

    model.eval();
    const evalOut = noGrad(() => model.forward(get("input")));
    const evalErr = relativeL2(await values(evalOut), await values(get("eval_output")));
    assert.ok(evalErr <= 1e-4, `eval output relative L2 error ${evalErr}`);
    // The same inference with every convolution and batch norm fused.
    fuseConvBn(model);
    const fusedOut = noGrad(() => model.forward(get("input")));
    const fusedErr = relativeL2(await values(fusedOut), await values(get("eval_output")));
    assert.ok(fusedErr <= 1e-4, `fused eval output relative L2 error ${fusedErr}`);
    model.dispose();
    for (const t of fixture.values()) t.dispose();
  });
}

// Module surgery and forward hooks against PyTorch: the same replacement and hooks on the basic
// model give the same outputs (tests/fixtures/make_fixtures.py, surgery.safetensors).
const surgeryCases: Record<string, (model: nn.Module, recorded: Tensor[]) => void> = {
  identity: (model) => model.setSubmodule("0.blocks.1.act1", new nn.Identity()),
  hook: (model, recorded) => {
    model.getSubmodule("0.blocks.0.bn2").registerForwardHook((_m, _input, output) => {
      recorded.push(output);
    });
    model.getSubmodule("0.blocks.1.bn1").registerForwardHook((_m, _input, output) =>
      mulScalar(output, 2)
    );
  },
};

for (const [name, prepare] of Object.entries(surgeryCases)) {
  gpuTest(`basic ResNet with PyTorch's surgery "${name}" gives PyTorch's outputs`, async () => {
    const fixture = await loadSafetensors(
      new URL("../fixtures/surgery.safetensors", import.meta.url),
    );
    const get = (key: string) => {
      const t = fixture.get(key);
      if (!t) throw new Error(`fixture surgery lacks ${key}`);
      return t;
    };
    const model = configs.basic();
    const weights = new Map<string, Tensor>();
    for (const [key, t] of fixture) if (key.startsWith("model.")) weights.set(key.slice(6), t);
    model.loadStateDict(weights);
    const recorded: Tensor[] = [];
    prepare(model, recorded);
    model.train();
    const output = model.forward(get("input"));
    const err = relativeL2(await values(output), await values(get(`${name}.output`)));
    assert.ok(err <= 1e-4, `output relative L2 error ${err}`);
    if (name === "hook") {
      assert.equal(recorded.length, 1);
      const bnErr = relativeL2(await values(recorded[0]), await values(get("hook.bn_output")));
      assert.ok(bnErr <= 1e-4, `hooked batch norm's output relative L2 error ${bnErr}`);
    }
    model.eval();
    const evalOut = noGrad(() => model.forward(get("input")));
    const evalErr = relativeL2(await values(evalOut), await values(get(`${name}.eval_output`)));
    assert.ok(evalErr <= 1e-4, `eval output relative L2 error ${evalErr}`);
    model.dispose();
    for (const t of fixture.values()) t.dispose();
  });
}
