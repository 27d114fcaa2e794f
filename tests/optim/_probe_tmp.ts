import { loadSafetensors } from "../../src/io/safetensors.ts";
import * as nn from "../../src/nn/mod.ts";
import { ResNetBase } from "../../src/nn/resnet.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { Adam, AdamW } from "../../src/optim/adam.ts";
import { Optimizer } from "../../src/optim/optimizer.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpu, relativeL2 } from "../_gpu.ts";
await gpu();
const cases: [string, (p: Tensor[]) => Optimizer][] = [
  ["optim_sgd", (p) => new SGD(p, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 })],
  ["optim_sgd_nesterov", (p) => new SGD(p, { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: true })],
  ["optim_adam", (p) => new Adam(p, { lr: 1e-3, weightDecay: 1e-4 })],
  ["optim_adamw", (p) => new AdamW(p, { lr: 1e-3, weightDecay: 1e-2 })],
];
for (const [file, make] of cases) {
  const fx = await loadSafetensors(new URL(`../fixtures/${file}.safetensors`, import.meta.url));
  const model = new nn.Sequential(new ResNetBase([2, 1], [6, 10], { firstKernelSize: 3 }), new nn.Linear(10, 5));
  const w = new Map<string, Tensor>();
  for (const [k, t] of fx) if (k.startsWith("model.")) w.set(k.slice(6), t);
  model.loadStateDict(w);
  model.train();
  const opt = make(model.parameters());
  const targets = Int32Array.from(await fx.get("target")!.toArray());
  const names = model.namedParameters().map(([n]) => n);
  for (let s = 1; s <= 2; s++) {
    const { loss, grads } = tidy(() => {
      const loss = crossEntropy(model.forward(fx.get("input")!), targets);
      loss.backward();
      const grads = model.parameters().map((p) => p.grad!.clone());
      opt.step();
      opt.zeroGrad();
      return { loss, grads };
    });
    console.log(file, "step", s, "loss", await loss.item(), (await fx.get(`loss.${s}`)!.toArray())[0]);
    for (let k = 0; k < names.length; k++) {
      const ours = await grads[k].toArray();
      const th = await fx.get(`grad.${s}.${names[k]}`)!.toArray();
      const mx = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      if (mx(th) < 1e-6) console.log(`  noise grad ${names[k]} ours ${mx(ours).toExponential(2)} torch ${mx(th).toExponential(2)}`);
    }
  }
  const { state } = opt.stateDict();
  for (const [k, [name, p]] of model.namedParameters().entries()) {
    const e = relativeL2(await p.toArray(), await fx.get(`after.${name}`)!.toArray());
    let line = `  ${name.padEnd(32)} p ${e.toExponential(2)}`;
    for (const sn of ["momentum_buffer", "exp_avg", "exp_avg_sq"]) {
      const t = state.get(`${k}.${sn}`);
      if (!t) continue;
      const a = await t.toArray(), b = await fx.get(`optim.${k}.${sn}`)!.toArray();
      let md = 0; for (let i = 0; i < a.length; i++) md = Math.max(md, Math.abs(a[i] - b[i]));
      line += ` ${sn} ${relativeL2(a, b).toExponential(2)} (maxabs ${md.toExponential(2)})`;
    }
    console.log(line);
  }
  for (const [name, b] of model.namedBuffers()) {
    const e = relativeL2(await b.toArray(), await fx.get(`after.${name}`)!.toArray());
    if (e > 1e-6) console.log(`  buffer ${name} ${e.toExponential(2)}`);
  }
}
