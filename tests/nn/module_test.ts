import assert from "node:assert/strict";
import * as nn from "../../src/nn/mod.ts";
import { BottleneckResidualBlock, resnet, ResNetBase } from "../../src/nn/resnet.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

// PyTorch's state_dict() of nn.Sequential(ResNetBase([2, 1], [6, 10], first_kernel_size=3),
// nn.Linear(10, 5)) from the seed's code: block 0 strides (projection), block 1 is an identity
// block, block 2 changes channels (projection).
function expectedBasicKeys(): [string, number[]][] {
  const bn = (p: string, c: number): [string, number[]][] => [
    [`${p}.weight`, [c]],
    [`${p}.bias`, [c]],
    [`${p}.running_mean`, [c]],
    [`${p}.running_var`, [c]],
    [`${p}.num_batches_tracked`, []],
  ];
  const block = (i: number, cin: number, cout: number, projection: boolean) =>
    [
      [`0.blocks.${i}.conv1.weight`, [cout, cin, 3, 3]],
      [`0.blocks.${i}.conv1.bias`, [cout]],
      ...bn(`0.blocks.${i}.bn1`, cout),
      [`0.blocks.${i}.conv2.weight`, [cout, cout, 3, 3]],
      [`0.blocks.${i}.conv2.bias`, [cout]],
      ...bn(`0.blocks.${i}.bn2`, cout),
      ...(projection
        ? [
          [`0.blocks.${i}.shortcut.conv.weight`, [cout, cin, 1, 1]],
          [`0.blocks.${i}.shortcut.conv.bias`, [cout]],
          ...bn(`0.blocks.${i}.shortcut.bn`, cout),
        ]
        : []),
    ] as [string, number[]][];
  return [
    ["0.conv.weight", [6, 3, 3, 3]],
    ["0.conv.bias", [6]],
    ...bn("0.bn", 6),
    ...block(0, 6, 6, true),
    ...block(1, 6, 6, false),
    ...block(2, 6, 10, true),
    ["1.weight", [5, 10]],
    ["1.bias", [5]],
  ];
}

function basicModel(seed = 0) {
  return new nn.Sequential(
    new ResNetBase([2, 1], [6, 10], { firstKernelSize: 3, seed }),
    new nn.Linear(10, 5, { seed }),
  );
}

gpuTest("stateDict() keys and shapes equal PyTorch's for the seed's basic ResNet", () => {
  const model = basicModel();
  const actual = [...model.stateDict()].map(([k, t]) => [k, [...t.shape]]);
  assert.deepEqual(actual, expectedBasicKeys());
  const params = model.namedParameters().map(([k]) => k);
  assert.deepEqual(
    params,
    expectedBasicKeys().map(([k]) => k).filter((k) => !/running_|num_b/.test(k)),
  );
  assert.ok(model.parameters().every((p) => p.requiresGrad));
  assert.equal(model.namedBuffers().length, 9 * 3);
  model.dispose();
});

gpuTest("toString() matches PyTorch's repr of the same model", async () => {
  const expected = await Deno.readTextFile(new URL("./basic_repr.txt", import.meta.url));
  const model = basicModel();
  assert.equal(model.toString(), expected.trimEnd());
  model.dispose();
});

gpuTest("bottleneck blocks register conv1..conv3, bn1..bn3, shortcut in the seed's order", () => {
  const block = new BottleneckResidualBlock(6, 4, 10, 2, { seed: 1 });
  assert.deepEqual(block.namedChildren().map(([k]) => k), [
    "conv1",
    "bn1",
    "act1",
    "conv2",
    "bn2",
    "act2",
    "conv3",
    "bn3",
    "shortcut",
    "act3",
  ]);
  assert.deepEqual((block.conv2 as nn.Conv2d).weight.shape, [4, 4, 3, 3]);
  assert.deepEqual((block.conv2 as nn.Conv2d).stride, [2, 2]);
  assert.deepEqual((block.conv1 as nn.Conv2d).stride, [1, 1]);
  block.dispose();
});

gpuTest("ResNetBase strides: the seed's rule by default, stageStrides when given", () => {
  const seed = new ResNetBase([2, 2, 1], [4, 6, 8], { firstKernelSize: 3 });
  const strides = (m: ResNetBase) =>
    m.blocks.children().map((b) => (b as unknown as { conv1: nn.Conv2d }).conv1.stride[0]);
  assert.deepEqual(strides(seed), [2, 1, 1, 1, 1]);
  assert.deepEqual((seed.conv as nn.Conv2d).stride, [2, 2]);
  const paper = new ResNetBase([2, 2, 1], [4, 6, 8], {
    firstKernelSize: 3,
    firstStride: 1,
    stageStrides: [1, 2, 2],
  });
  assert.deepEqual(strides(paper), [1, 1, 2, 1, 2]);
  assert.deepEqual((paper.conv as nn.Conv2d).stride, [1, 1]);
  // Stride 1 and equal channels: the paper's first block needs no projection.
  assert.equal(
    paper.getSubmodule("blocks.0").namedChildren().find(([k]) => k === "shortcut")![1].constructor
      .name,
    "Identity",
  );
  assert.equal(
    seed.getSubmodule("blocks.0").namedChildren().find(([k]) => k === "shortcut")![1].constructor
      .name,
    "ShortcutProjection",
  );
  seed.dispose();
  paper.dispose();
});

gpuTest("resnet(20) has the paper's layout: 19 convs + fc, 2 projection shortcuts", () => {
  const model = resnet(20, { seed: 0 });
  const keys = [...model.stateDict().keys()];
  const convs = keys.filter((k) => /conv\d?\.weight$/.test(k) && !k.includes("shortcut"));
  assert.equal(convs.length, 19);
  assert.equal(keys.filter((k) => k.endsWith("shortcut.conv.weight")).length, 2);
  assert.equal(keys.at(-2), "1.weight");
  assert.deepEqual(model.stateDict().get("1.weight")!.shape, [10, 64]);
  assert.throws(() => resnet(21), RangeError);
  assert.throws(() => resnet(2), RangeError);
  model.dispose();
});

gpuTest("loadStateDict() copies values and refuses bad dicts listing every problem", async () => {
  const a = basicModel(1);
  const b = basicModel(2);
  b.loadStateDict(a.stateDict());
  assert.deepEqual(
    await b.stateDict().get("0.blocks.2.conv1.weight")!.toArray(),
    await a.stateDict().get("0.blocks.2.conv1.weight")!.toArray(),
  );
  const dict = new Map(a.stateDict());
  dict.delete("1.bias");
  dict.set("extra.weight", Tensor.ones([1]));
  dict.set("0.conv.weight", Tensor.ones([6, 3, 5, 5]));
  assert.throws(
    () => b.loadStateDict(dict),
    (e: Error) =>
      /missing keys: 1\.bias/.test(e.message) && /unexpected keys: extra\.weight/.test(e.message) &&
      /0\.conv\.weight: expected shape \[6, 3, 3, 3\], got \[6, 3, 5, 5\]/.test(e.message),
  );
  dict.set("0.conv.weight", a.stateDict().get("0.conv.weight")!);
  const result = b.loadStateDict(dict, { strict: false });
  assert.deepEqual(result, { missingKeys: ["1.bias"], unexpectedKeys: ["extra.weight"] });
  a.dispose();
  b.dispose();
});

gpuTest("train()/eval() set the mode recursively; zeroGrad() clears gradients", () => {
  const model = basicModel();
  model.eval();
  assert.ok(model.namedModules().every(([, m]) => !m.training));
  model.train();
  assert.ok(model.namedModules().every(([, m]) => m.training));
  const p = model.parameters()[0];
  p.grad = Tensor.ones(p.shape);
  model.zeroGrad();
  assert.equal(p.grad, null);
  model.dispose();
});

gpuTest("layers refuse bad constructor arguments with RangeError", () => {
  assert.throws(() => new nn.Conv2d(0, 4, 3), RangeError);
  assert.throws(() => new nn.Conv2d(3, 4, 3, { stride: 0 }), RangeError);
  assert.throws(() => new nn.Linear(3, 2.5), RangeError);
  assert.throws(() => new nn.BatchNorm2d(4, { eps: 0 }), RangeError);
  assert.throws(() => new ResNetBase([1, 1], [4]), RangeError);
  assert.throws(() => new ResNetBase([1], [4], { bottlenecks: [2, 2] }), RangeError);
  assert.throws(() => new nn.Sequential().at(0), RangeError);
});
