import { flush, initGPU, noGrad, Tensor, tidy } from "@resnet/webgpu";
import { buildModel } from "@resnet/webgpu/train";
await initGPU();
const model = buildModel("resnet20", 0);
model.eval();
const x = Tensor.randn([128, 3, 32, 32], { seed: 1 });
const probe = Tensor.zeros([1]);
const step = () => tidy(() => noGrad(() => model.forward(x)));
for (let i = 0; i < 3; i++) {
  step();
  flush();
  await probe.toArray();
}
const js = [], fl = [];
for (let i = 0; i < 30; i++) {
  await probe.toArray();
  const t0 = performance.now();
  step();
  const t1 = performance.now();
  flush();
  const t2 = performance.now();
  js.push(t1 - t0);
  fl.push(t2 - t1);
}
const med = (a) => a.sort((p, q) => p - q)[a.length >> 1].toFixed(2);
console.log("js ms", med(js), "flush ms", med(fl));
