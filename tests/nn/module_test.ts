import assert from "node:assert/strict";
import * as nn from "../../src/nn/mod.ts";
import { BottleneckResidualBlock, fuseConvBn, resnet, ResNetBase } from "../../src/nn/resnet.ts";
import { mulScalar } from "../../src/ops/elementwise.ts";
import { noGrad } from "../../src/autograd.ts";
import { gpuCounters } from "../../src/gpu/dispatch.ts";
import { inUseBytesSince, poolMark, sizeClass } from "../../src/gpu/buffer_pool.ts";
import { sum } from "../../src/ops/reduce.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, gpuTest } from "../_gpu.ts";

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

gpuTest("getSubmodule()/setSubmodule() walk dotted paths; errors name the path", () => {
  const model = basicModel();
  assert.ok(model.getSubmodule("0.blocks.1.act1") instanceof nn.ReLU);
  assert.equal(model.getSubmodule(""), model);
  assert.throws(
    () => model.getSubmodule("0.blocks.9.act1"),
    (e: Error) =>
      e instanceof RangeError && /getSubmodule\("0\.blocks\.9\.act1"\)/.test(e.message) &&
      /has no child "9"/.test(e.message),
  );
  assert.throws(
    () => model.setSubmodule("0.blocks.1.act9", new nn.Identity()),
    (e: Error) => e instanceof RangeError && /setSubmodule\("0\.blocks\.1\.act9"\)/.test(e.message),
  );
  assert.throws(() => model.setSubmodule("0.blocks.1.act1", {} as never), TypeError);
  // The state-dict keys follow the new child, in the old one's place.
  const bn = new nn.BatchNorm2d(6, { affine: false });
  model.setSubmodule("0.blocks.0.bn1", bn);
  assert.equal(model.getSubmodule("0.blocks.0.bn1"), bn);
  const keys = [...model.stateDict().keys()];
  assert.ok(!keys.includes("0.blocks.0.bn1.weight"));
  assert.equal(
    keys.indexOf("0.blocks.0.bn1.running_mean"),
    keys.indexOf("0.blocks.0.conv1.bias") + 1,
  );
  model.dispose();
});

gpuTest("forward hooks run on call(), see their layer's own output, may replace it", async () => {
  const model = basicModel();
  model.train();
  const x = Tensor.randn([2, 3, 9, 9], { seed: 5 });
  const seen: [nn.Module, Tensor, Tensor][] = [];
  const bn = model.getSubmodule("0.blocks.0.bn2");
  const handle = bn.registerForwardHook((m, input, output) => {
    seen.push([m, input, output]);
  });
  model.forward(x);
  assert.equal(seen.length, 1);
  assert.equal(seen[0][0], bn);
  // The hook saw the batch norm alone: no residual, no ReLU (values below zero remain).
  const out = await seen[0][2].toArray();
  assert.ok(out.some((v) => v < 0));
  const mean = out.reduce((a, b) => a + b, 0) / out.length;
  assert.ok(Math.abs(mean) < 1e-4, `batch-normalized output has mean ${mean}`);
  handle.remove();
  handle.remove();
  model.forward(x);
  assert.equal(seen.length, 1);

  // A hook returning a tensor replaces the output.
  const act = model.getSubmodule("0.blocks.2.act2");
  const h = act.registerForwardHook(() => Tensor.zeros([2, 10, 3, 3]));
  model.eval();
  const logits = await model.forward(x).toArray();
  const bias = await model.getSubmodule("1").stateDict().get("bias")!.toArray();
  assert.deepEqual(logits, Float32Array.from([...bias, ...bias]));
  h.remove();
  model.dispose();
});

gpuTest("blocks run replaced and subclassed children as written", async () => {
  const x = Tensor.randn([2, 3, 9, 9], { seed: 6 });
  const a = basicModel(3).eval();
  const b = basicModel(3).eval();
  // A ReLU subclass that counts its calls, and a batch norm subclass that doubles its output.
  let calls = 0;
  class CountingReLU extends nn.ReLU {
    override forward(input: Tensor): Tensor {
      calls++;
      return super.forward(input);
    }
  }
  class DoubledBatchNorm extends nn.BatchNorm2d {
    override forward(input: Tensor): Tensor {
      return mulScalar(super.forward(input), 2);
    }
  }
  b.setSubmodule("0.blocks.1.act1", new CountingReLU());
  const doubled = new DoubledBatchNorm(6);
  doubled.loadStateDict(b.getSubmodule("0.blocks.1.bn2").stateDict());
  b.setSubmodule("0.blocks.1.bn2", doubled.eval());
  const yb = await b.forward(x).toArray();
  assert.equal(calls, 1);
  // The same network written with the separate ops.
  a.getSubmodule("0.blocks.1.bn2").registerForwardHook((_m, _i, out) => mulScalar(out, 2));
  const ya = await a.forward(x).toArray();
  assertClose(yb, ya, { what: "subclassed vs hooked" });
  a.dispose();
  b.dispose();
});

gpuTest("fuseConvBn() makes conv+bn pairs one layer; inference equals the unfused", async () => {
  const model = resnet(8, { seed: 4 });
  // Running statistics away from (0, 1), so that the folding matters.
  model.train();
  tidy(() => model.forward(Tensor.randn([4, 3, 16, 16], { seed: 7 })));
  model.eval();
  const x = Tensor.randn([2, 3, 16, 16], { seed: 8 });
  // Recording gradients, the layers run as separate ops: the unfused reference.
  const before = await tidy(() => model.forward(x).detach()).toArray();
  const separateDispatches = countDispatches(() => model.forward(x));
  // Without gradients, eval mode already folds each unmodified conv+bn pair; from the second
  // pass on, the packed filters and folded batch norms come from their caches.
  const firstEvalDispatches = countDispatches(() => noGrad(() => model.forward(x)));
  const evalDispatches = countDispatches(() => noGrad(() => model.forward(x)));
  assert.ok(evalDispatches < firstEvalDispatches, `${evalDispatches} vs ${firstEvalDispatches}`);
  assert.ok(evalDispatches < separateDispatches, `${evalDispatches} vs ${separateDispatches}`);
  assertClose(await noGrad(() => model.forward(x)).toArray(), before, { what: "eval vs separate" });
  fuseConvBn(model);
  const fused = model.namedModules().filter(([, m]) => m instanceof nn.ConvBn2d);
  assert.equal(fused.length, 1 + 3 * 2 + 2); // stem, two per block, two projections
  assert.ok(model.getSubmodule("0.blocks.0.bn1") instanceof nn.Identity);
  assert.ok(model.stateDict().has("0.blocks.0.conv1.1.running_var"));
  const after = await noGrad(() => model.forward(x)).toArray();
  assertClose(after, before, { what: "fused vs unfused" });
  assert.equal(countDispatches(() => noGrad(() => model.forward(x))), evalDispatches);
  model.dispose();
});

function countDispatches(fn: () => unknown): number {
  const start = gpuCounters().dispatches;
  tidy(() => void fn());
  return gpuCounters().dispatches - start;
}

gpuTest(
  "call() frees a forward's intermediates: at once without gradients, at backward with",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 21 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 22 });
    const outputBytes = sizeClass(2 * 4 * 4);
    // A first pass with a backward fills the caches that live with the weights (packed filters).
    sum(model.call(x)).backward();
    model.zeroGrad();
    // Without gradients, only the output is left.
    let mark = poolMark();
    const y = noGrad(() => model.call(x));
    assert.equal(inUseBytesSince(mark), outputBytes);
    y.dispose();
    // With gradients, the activations wait for the backward, which frees them.
    mark = poolMark();
    const out = model.call(x);
    const held = inUseBytesSince(mark);
    assert.ok(held > 10 * outputBytes, `${held} bytes before backward`);
    const loss = sum(out);
    loss.backward(undefined, { retainGraph: true });
    // retainGraph keeps them for another backward, which gives the same gradients again.
    const first = await model.parameters()[0].grad!.toArray();
    model.zeroGrad();
    loss.backward();
    assert.deepEqual(await model.parameters()[0].grad!.toArray(), first);
    model.zeroGrad();
    assert.equal(inUseBytesSince(mark), outputBytes + sizeClass(4), "output and loss only");
    loss.dispose();
    out.dispose();
    model.dispose();
    x.dispose();
  },
);

gpuTest("call() leaves what a forward hook was given to the hook, after backward too", async () => {
  const model = resnet(8, { numClasses: 4, seed: 23 });
  const seen: Tensor[] = [];
  model.getSubmodule("0.blocks.0").registerForwardHook((_m, _x, y) => {
    seen.push(y);
  });
  const x = Tensor.randn([2, 3, 8, 8], { seed: 24 });
  sum(model.call(x)).backward();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].disposed, false);
  assert.equal((await seen[0].toArray()).length, seen[0].size);
  model.dispose();
});

gpuTest(
  "eval after training steps uses the new weights and running statistics, not stale caches",
  async () => {
    const model = resnet(8, { numClasses: 4, seed: 25 });
    const x = Tensor.randn([2, 3, 8, 8], { seed: 26 });
    const evalOutput = async () => {
      model.eval();
      const y = await noGrad(() => model.call(x)).toArray();
      // Recording gradients, the layers run unfolded and unpacked from the current tensors.
      const reference = await tidy(() => model.call(x).detach()).toArray();
      model.train();
      return { y, reference };
    };
    const first = await evalOutput(); // fills the packed-filter and folded-batch-norm caches
    assertClose(first.y, first.reference, { what: "first eval" });
    // A training forward moves only the running statistics.
    tidy(() => void model.call(Tensor.randn([4, 3, 8, 8], { seed: 27 })));
    const second = await evalOutput();
    assertClose(second.y, second.reference, { what: "eval after a training forward" });
    assert.ok(second.y.some((v, i) => Math.abs(v - first.y[i]) > 1e-4), "it did not move");
    // An in-place update moves only the weights.
    for (const p of model.parameters()) p.accumulate(mulScalar(p, 0.05));
    const third = await evalOutput();
    assertClose(third.y, third.reference, { what: "eval after a weight update" });
    assert.ok(third.y.some((v, i) => Math.abs(v - second.y[i]) > 1e-4), "it did not move");
    model.dispose();
  },
);
