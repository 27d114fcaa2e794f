// torchvision's ResNets against torchvision itself (tests/fixtures/make_torchvision_fixtures.py):
// the repr, and for resnet18 and resnet50 at 64x64, batch 2, the training-mode output, loss,
// every parameter's gradient and every buffer after the step, and the eval-mode output, with
// the weights loaded from a safetensors file and from a PyTorch .pth file.
import assert from "node:assert/strict";
import { noGrad } from "../../src/autograd.ts";
import { encodeSafetensors, loadSafetensors } from "../../src/io/safetensors.ts";
import { encodeTorchCheckpoint, loadTorchCheckpoint } from "../../src/io/torch_checkpoint.ts";
import { resnet18, resnet50 } from "../../src/nn/torchvision.ts";
import type { ResNet } from "../../src/nn/torchvision.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest, relativeL2 } from "../_gpu.ts";
import { hashedState, hashValues, summary } from "./_hash_values.ts";

const builders: Record<string, (o: { numClasses?: number; seed?: number }) => ResNet> = {
  resnet18,
  resnet50,
};

interface Fixture {
  model: string;
  num_classes: number;
  input_shape: number[];
  /** The input's hash key: the first whose float64 forwards keep clear of ReLU and max-pool
   * decisions by `input_margin.required` times PyTorch's float32 error (see the script). */
  input_key: string;
  input_margin: {
    required: number;
    screened: string[];
    train: { ratio: number; relu: number; pool: number };
    eval: { ratio: number; relu: number; pool: number };
  };
  target: number[];
  output: number[];
  loss: number;
  eval_output: number[];
  grad: Record<string, [number, number, number]>;
  grad_f32_error: Record<string, number>;
  after: Record<string, [number, number, number]>;
  eval_loss: number;
  eval_grad: Record<string, [number, number, number]>;
}

async function readFixture(name: string): Promise<Fixture> {
  const url = new URL(`../fixtures/torchvision/${name}.json`, import.meta.url);
  return JSON.parse(await Deno.readTextFile(url));
}

/** Worst error of our summary against torchvision's, relative to the reference norm. */
function summaryError(ours: number[], theirs: number[]): number {
  const scale = Math.max(theirs[0], 1e-30);
  return Math.max(...ours.map((v, i) => Math.abs(v - theirs[i]) / scale));
}

for (const name of ["resnet18", "resnet50"]) {
  gpuTest(`${name}().toString() is torchvision's repr`, async () => {
    const expected = await Deno.readTextFile(
      new URL(`../fixtures/torchvision/${name}_repr.txt`, import.meta.url),
    );
    const model = builders[name]({ seed: 0 });
    assert.equal(model.toString() + "\n", expected);
    model.dispose();
  });
}

/** The state dict as safetensors bytes, read back through loadSafetensors. */
async function viaSafetensors(state: Map<string, Tensor>): Promise<Map<string, Tensor>> {
  const entries = await Promise.all([...state].map(async ([key, t]) => ({
    name: key,
    shape: t.shape,
    dtype: "F32" as const,
    data: await t.toArray(),
  })));
  return await loadSafetensors(encodeSafetensors(entries));
}

/** The state dict as PyTorch checkpoint bytes, read back through loadTorchCheckpoint. */
async function viaTorchCheckpoint(state: Map<string, Tensor>): Promise<Map<string, Tensor>> {
  const entries = await Promise.all(
    [...state].map(async ([key, t]) =>
      key.endsWith("num_batches_tracked")
        ? { name: key, shape: t.shape, dtype: "I64" as const, data: new BigInt64Array(1) }
        : { name: key, shape: t.shape, dtype: "F32" as const, data: await t.toArray() }
    ),
  );
  return await loadTorchCheckpoint(encodeTorchCheckpoint(entries));
}

const loaders: Record<string, (state: Map<string, Tensor>) => Promise<Map<string, Tensor>>> = {
  safetensors: viaSafetensors,
  pth: viaTorchCheckpoint,
};

for (const name of ["resnet18", "resnet50"]) {
  for (const [format, load] of Object.entries(loaders)) {
    gpuTest(
      `${name} from ${format} matches torchvision: train output, loss, every gradient, ` +
        "running stats, eval output and gradients",
      async () => {
        const fx = await readFixture(name);
        const model = builders[name]({ numClasses: fx.num_classes, seed: 0 });
        const shapes = new Map([...model.stateDict()].map(([k, t]) => [k, t.shape]));
        const generated = hashedState(shapes);
        const loaded = await load(generated);
        model.loadStateDict(loaded);
        for (const t of generated.values()) t.dispose();
        const size = fx.input_shape.reduce((a, b) => a * b, 1);
        const x = Tensor.from(hashValues(fx.input_key, size, -2, 2), fx.input_shape);
        model.train();
        const output = model.forward(x);
        const loss = crossEntropy(output, Int32Array.from(fx.target));
        loss.backward();
        const outErr = relativeL2(await output.toArray(), fx.output);
        const lossErr = Math.abs((await loss.item()) - fx.loss) / fx.loss;
        assert.ok(outErr <= 1e-4, `train output relative L2 error ${outErr}`);
        assert.ok(lossErr <= 1e-4, `loss relative error ${lossErr}`);
        // Training-mode gradients: within 1e-3 of float64, or, where PyTorch's own float32 misses
        // by more (resnet50's ill-conditioned batch statistics, see the fixture script), within
        // 10 times PyTorch's float32 error.
        let worstGrad = 0;
        let worstRatio = 0;
        const params = model.namedParameters();
        assert.equal(params.length, Object.keys(fx.grad).length);
        for (const [key, p] of params) {
          assert.ok(p.grad, `${key} has no gradient`);
          const err = summaryError(summary(key, await p.grad.toArray()), fx.grad[key]);
          const torchErr = fx.grad_f32_error[key];
          worstGrad = Math.max(worstGrad, err);
          worstRatio = Math.max(worstRatio, err / Math.max(torchErr, 1e-4));
          assert.ok(
            err <= Math.max(1e-3, 10 * torchErr),
            `gradient of ${key}: summary error ${err} (PyTorch float32: ${torchErr})`,
          );
        }
        let worstBuffer = 0;
        for (const [key, b] of model.namedBuffers()) {
          if (key.endsWith("num_batches_tracked")) {
            assert.equal(await b.item(), 1, `${key} after one training forward`);
            continue;
          }
          const err = summaryError(summary(key, await b.toArray()), fx.after[key]);
          worstBuffer = Math.max(worstBuffer, err);
          assert.ok(err <= 1e-4, `${key} after one training forward: summary error ${err}`);
        }
        // Eval mode from the loaded state again (running statistics as loaded): output and every
        // gradient.
        model.loadStateDict(loaded);
        for (const t of loaded.values()) t.dispose();
        model.eval();
        model.zeroGrad();
        const evalOut = model.forward(x);
        const evalLoss = crossEntropy(evalOut, Int32Array.from(fx.target));
        evalLoss.backward();
        const evalErr = relativeL2(await evalOut.toArray(), fx.eval_output);
        assert.ok(evalErr <= 1e-4, `eval output relative L2 error ${evalErr}`);
        const evalLossErr = Math.abs((await evalLoss.item()) - fx.eval_loss) / fx.eval_loss;
        assert.ok(evalLossErr <= 1e-4, `eval loss relative error ${evalLossErr}`);
        let worstEvalGrad = 0;
        for (const [key, p] of params) {
          assert.ok(p.grad, `${key} has no eval-mode gradient`);
          const err = summaryError(summary(key, await p.grad.toArray()), fx.eval_grad[key]);
          worstEvalGrad = Math.max(worstEvalGrad, err);
          assert.ok(err <= 1e-4, `eval-mode gradient of ${key}: summary error ${err}`);
        }
        const noGradOut = noGrad(() => model.forward(x));
        const noGradErr = relativeL2(await noGradOut.toArray(), fx.eval_output);
        assert.ok(noGradErr <= 1e-4, `eval output under noGrad: relative L2 error ${noGradErr}`);
        const e = (v: number) => v.toExponential(1);
        const m = fx.input_margin;
        console.log(
          `${name} (${format}): output ${e(outErr)}, loss ${e(lossErr)}, grads ${e(worstGrad)} ` +
            `(${e(worstRatio)} x PyTorch f32), buffers ${e(worstBuffer)}, eval output ` +
            `${e(evalErr)}, eval grads ${e(worstEvalGrad)}, noGrad output ${e(noGradErr)}; ` +
            `input ${fx.input_key}: min |ReLU input| ${e(m.train.relu)} train, ` +
            `${e(m.eval.relu)} eval (${m.train.ratio.toFixed(2)}, ${m.eval.ratio.toFixed(2)} ` +
            `x PyTorch f32 error; ` +
            (m.screened.length
              ? `screened ${m.screened.join("+")} at ${m.required})`
              : "unscreened)"),
        );
        model.dispose();
      },
    );
  }
}
