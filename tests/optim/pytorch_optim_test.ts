// Two training steps of the seed's basic ResNet with each optimizer against PyTorch 1.13, from
// fixtures written by tests/fixtures/make_optim_fixtures.py: losses, gradients, every parameter,
// every BatchNorm buffer and the optimizer state after the two steps.
//
// The conv biases that feed a training-mode BatchNorm are frozen in the fixtures and here (their
// true gradient is zero, so backward yields only rounding noise that Adam would amplify into
// steps of up to lr; see make_optim_fixtures.py). They stay in the optimizer's parameter list,
// which therefore skips parameters without a gradient inside a real model, as PyTorch does.
import assert from "node:assert/strict";
import { loadSafetensors } from "../../src/io/safetensors.ts";
import * as nn from "../../src/nn/mod.ts";
import { ResNetBase } from "../../src/nn/resnet.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Adam, AdamW } from "../../src/optim/adam.ts";
import type { Optimizer } from "../../src/optim/optimizer.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { tidy } from "../../src/scope.ts";
import type { Tensor } from "../../src/tensor.ts";
import { gpuTest, relativeL2 } from "../_gpu.ts";

const CASES: { file: string; make: (params: Tensor[]) => Optimizer }[] = [
  {
    file: "optim_sgd",
    make: (params) => new SGD(params, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 }),
  },
  {
    file: "optim_sgd_nesterov",
    make: (params) =>
      new SGD(params, { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: true }),
  },
  { file: "optim_adam", make: (params) => new Adam(params, { lr: 1e-3, weightDecay: 1e-4 }) },
  { file: "optim_adamw", make: (params) => new AdamW(params, { lr: 1e-3, weightDecay: 1e-2 }) },
];

const STEPS = 2;

for (const { file, make } of CASES) {
  gpuTest(`${file}: two training steps of the basic ResNet match PyTorch`, async () => {
    const metadata: Record<string, string> = {};
    const fixture = await loadSafetensors(
      new URL(`../fixtures/${file}.safetensors`, import.meta.url),
      {
        metadata,
      },
    );
    const get = (key: string) => {
      const t = fixture.get(key);
      if (!t) throw new Error(`fixture ${file} lacks ${key}`);
      return t;
    };
    const model = new nn.Sequential(
      new ResNetBase([2, 1], [6, 10], { firstKernelSize: 3 }),
      new nn.Linear(10, 5),
    );
    const initial = new Map<string, Tensor>();
    for (const [key, t] of fixture) if (key.startsWith("model.")) initial.set(key.slice(6), t);
    model.loadStateDict(initial);
    model.train();
    const named = model.namedParameters();
    const frozen = new Set(metadata.frozen.split(","));
    assert.equal(frozen.size, 9);
    for (const [name, p] of named) if (frozen.has(name)) p.requiresGrad = false;
    assert.equal(named.filter(([name]) => frozen.has(name)).length, frozen.size);
    const opt = make(model.parameters());
    const x = get("input");
    const targets = Int32Array.from(await get("target").toArray());

    for (let step = 1; step <= STEPS; step++) {
      const trained = named.filter(([, p]) => p.requiresGrad);
      const { loss, grads } = tidy(() => {
        const loss = crossEntropy(model.forward(x), targets);
        loss.backward();
        assert.ok(named.every(([name, p]) => (p.grad === null) === frozen.has(name)));
        const grads = trained.map(([, p]) => p.grad!.clone());
        opt.step();
        opt.zeroGrad();
        return { loss, grads };
      });
      const lossErr = relativeL2([await loss.item()], await get(`loss.${step}`).toArray());
      assert.ok(lossErr <= 1e-5, `step ${step}: loss relative error ${lossErr}`);
      for (const [k, [name]] of trained.entries()) {
        const err = relativeL2(
          await grads[k].toArray(),
          await get(`grad.${step}.${name}`).toArray(),
        );
        assert.ok(err <= 1e-3, `step ${step}: gradient of ${name}: relative L2 error ${err}`);
      }
      loss.dispose();
      grads.forEach((g) => g.dispose());
    }

    for (const [name, p] of named) {
      const ours = await p.toArray();
      if (frozen.has(name)) {
        assert.deepEqual(ours, await get(`model.${name}`).toArray(), `frozen ${name} changed`);
      }
      const err = relativeL2(ours, await get(`after.${name}`).toArray());
      assert.ok(err <= 1e-4, `${name} after ${STEPS} steps: relative L2 error ${err}`);
    }
    for (const [name, b] of model.namedBuffers()) {
      const err = relativeL2(await b.toArray(), await get(`after.${name}`).toArray());
      assert.ok(err <= 1e-4, `${name} after ${STEPS} steps: relative L2 error ${err}`);
      if (name.endsWith("num_batches_tracked")) assert.equal(await b.item(), STEPS);
    }

    const { state, hyper } = opt.stateDict();
    const expectedKeys = [...fixture.keys()]
      .filter((key) => key.startsWith("optim.") && !key.endsWith(".step"))
      .map((key) => key.slice(6));
    assert.ok(expectedKeys.length > 0);
    assert.deepEqual([...state.keys()].sort(), expectedKeys.sort());
    for (const [key, t] of state) {
      const err = relativeL2(await t.toArray(), await get(`optim.${key}`).toArray());
      assert.ok(err <= 1e-3, `optimizer state ${key}: relative L2 error ${err}`);
    }
    if ("step" in hyper) {
      const expected = await Promise.all(
        named.map(async (_, i) =>
          fixture.has(`optim.${i}.step`) ? await get(`optim.${i}.step`).item() : 0
        ),
      );
      assert.deepEqual(hyper.step, expected);
    }

    opt.dispose();
    model.dispose();
    for (const t of fixture.values()) t.dispose();
  });
}
