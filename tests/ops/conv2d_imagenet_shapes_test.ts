// The convolutions of torchvision's ResNets that the CIFAR networks lack, against the float64
// reference: the 7x7 stride-2 stem (at 224x224 too), 1x1 stride-2 projections, 3x3 stride-2
// convolutions, and 512-2048 channels on 2x2 and 4x4 maps (where the vec4-row kernels do not
// fit and the general kernels run). Output, input gradient and weight gradient of each, through
// the public op, so the same cases cover whichever kernel family conv2d picks.
import { conv2d } from "../../src/ops/conv2d.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, f32, gpuTest, randomValues } from "../_gpu.ts";
import { convBackwardReference, convReference, geometry } from "./_conv_reference.ts";

interface Case {
  input: [number, number, number, number];
  weight: [number, number, number, number];
  stride: number;
  padding: number;
}

const cases: [string, Case][] = [
  ["stem: 3 -> 8 channels, 7x7, stride 2, padding 3, 32x32", {
    input: [2, 3, 32, 32],
    weight: [8, 3, 7, 7],
    stride: 2,
    padding: 3,
  }],
  ["stem at 224x224: 3 -> 4 channels, 7x7, stride 2, padding 3", {
    input: [1, 3, 224, 224],
    weight: [4, 3, 7, 7],
    stride: 2,
    padding: 3,
  }],
  ["projection: 64 -> 128 channels, 1x1, stride 2, 8x8", {
    input: [2, 64, 8, 8],
    weight: [128, 64, 1, 1],
    stride: 2,
    padding: 0,
  }],
  ["projection: 1024 -> 2048 channels, 1x1, stride 2, 4x4 (resnet50 layer4.0)", {
    input: [2, 1024, 4, 4],
    weight: [2048, 1024, 1, 1],
    stride: 2,
    padding: 0,
  }],
  ["3x3 stride 2: 128 -> 128 channels, padding 1, 8x8", {
    input: [2, 128, 8, 8],
    weight: [128, 128, 3, 3],
    stride: 2,
    padding: 1,
  }],
  ["3x3 stride 2: 512 -> 512 channels, padding 1, 4x4 (resnet50 layer4.0.conv2)", {
    input: [2, 512, 4, 4],
    weight: [512, 512, 3, 3],
    stride: 2,
    padding: 1,
  }],
  ["1x1: 1024 -> 512 channels, 4x4 (resnet50 layer4.0.conv1)", {
    input: [2, 1024, 4, 4],
    weight: [512, 1024, 1, 1],
    stride: 1,
    padding: 0,
  }],
  ["1x1: 2048 -> 512 channels, 2x2 (resnet50 layer4.1.conv1)", {
    input: [2, 2048, 2, 2],
    weight: [512, 2048, 1, 1],
    stride: 1,
    padding: 0,
  }],
  ["3x3: 512 -> 512 channels, padding 1, 2x2 (resnet18 layer4.1)", {
    input: [2, 512, 2, 2],
    weight: [512, 512, 3, 3],
    stride: 1,
    padding: 1,
  }],
];

for (const [name, c] of cases) {
  gpuTest(`conv2d ${name}: output and both gradients match the float64 reference`, async () => {
    const ch = c.input[1];
    const [, , kh, kw] = c.weight;
    const g = geometry(c.input, c.weight, c.stride, c.padding);
    const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const x = f32(randomValues(size(c.input), 1));
    const wv = f32(randomValues(size(c.weight), 2, 1 / Math.sqrt(ch * kh * kw)));
    const xt = Tensor.from(x, c.input, { requiresGrad: true });
    const wt = Tensor.from(wv, c.weight, { requiresGrad: true });
    const y = conv2d(xt, wt, null, { stride: c.stride, padding: c.padding });
    assertClose(await y.toArray(), convReference(x, wv, null, g), { what: "y" });
    const r = f32(randomValues(y.size, 3));
    const rt = Tensor.from(r, y.shape);
    y.backward(rt);
    const expected = convBackwardReference(x, wv, r, g);
    assertClose(await xt.grad!.toArray(), expected.gx, { what: "grad input" });
    assertClose(await wt.grad!.toArray(), expected.gw, { what: "grad weight", rtol: 2e-4 });
    for (const t of [xt, wt, y, rt, xt.grad, wt.grad]) t?.dispose();
  });
}
