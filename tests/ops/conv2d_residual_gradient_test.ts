// When a convolution's input already holds a gradient from another consumer (a ResNet block's
// shortcut), the convolution's input-gradient kernel adds it as it writes (see PendingGradients in
// src/autograd.ts): no add_inplace, and the same gradient as adding the two separately. Checked
// against float64 references on odd sizes, for whichever kernel family runs (RESNET_WEBGPU_KERNELS).
import assert from "node:assert/strict";
import { conv2d } from "../../src/ops/conv2d.ts";
import { batchNorm2d } from "../../src/ops/batch_norm.ts";
import { add, mul } from "../../src/ops/elementwise.ts";
import { sum } from "../../src/ops/reduce.ts";
import { profileKernels } from "../../src/gpu/dispatch.ts";
import { inUseBytesSince, poolMark } from "../../src/gpu/buffer_pool.ts";
import { tidy } from "../../src/scope.ts";
import { Tensor } from "../../src/tensor.ts";
import { assertClose, f32, gpuTest, randomValues } from "../_gpu.ts";
import { convBackwardReference, type Geo, geometry } from "./_conv_reference.ts";

interface Conv {
  weight: number[];
  stride: number;
  padding: number;
}

function geoOf(input: number[], c: Conv): Geo {
  return geometry(input, c.weight, c.stride, c.padding);
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** Calls of add_inplace among the kernels `fn` dispatched. */
async function addInplaceCalls(fn: () => void): Promise<number> {
  const { kernels } = await profileKernels(fn);
  return kernels.find((k) => k.kernel === "add_inplace")?.calls ?? 0;
}

// y = conv(x) + x: the add's backward hands x the output gradient r, then the convolution adds
// it in its input-gradient kernel. Shapes: the vec4-row kernel (W % 4 == 0) and the general one.
for (
  const [name, input, c] of [
    ["3x3, padding 1, 7x8 (vec4 rows)", [2, 5, 7, 8], {
      weight: [5, 5, 3, 3],
      stride: 1,
      padding: 1,
    }],
    ["3x3, padding 1, 9x7 (general kernel)", [3, 6, 9, 7], {
      weight: [6, 6, 3, 3],
      stride: 1,
      padding: 1,
    }],
    ["1x1, 5x11", [2, 7, 5, 11], { weight: [7, 7, 1, 1], stride: 1, padding: 0 }],
  ] as [string, number[], Conv][]
) {
  gpuTest(`conv(x) + x: the fused input gradient matches float64 (${name})`, async () => {
    const g = geoOf(input, c);
    const x = f32(randomValues(size(input), 11));
    const w = f32(randomValues(size(c.weight), 12, 0.4));
    const r = f32(randomValues(size(input), 13));
    const xt = Tensor.from(x, input, { requiresGrad: true });
    const wt = Tensor.from(w, c.weight, { requiresGrad: true });
    const rt = Tensor.from(r, input);
    // A first backward packs the filters (the vec4-row kernels cache them with the weight).
    tidy(() => add(conv2d(xt, wt, null, c), xt).backward(rt));
    for (const t of [xt, wt]) {
      t.grad!.dispose();
      t.grad = null;
    }
    const mark = poolMark();
    const adds = await addInplaceCalls(() =>
      tidy(() => add(conv2d(xt, wt, null, c), xt).backward(rt))
    );
    assert.equal(adds, 0, "add_inplace dispatches");
    // Only the two leaf gradients are left: autograd released the gradient the kernel added.
    assert.equal(inUseBytesSince(mark), xt.grad!.buffer.size + wt.grad!.buffer.size);
    const expected = convBackwardReference(x, w, r, g);
    const gx = expected.gx.map((v, i) => v + r[i]);
    assertClose(await xt.grad!.toArray(), gx, { what: "grad input" });
    assertClose(await wt.grad!.toArray(), expected.gw, { what: "grad weight" });
    for (const t of [xt, wt, rt, xt.grad, wt.grad]) t?.dispose();
  });
}

// y = conv1(x) + conv2(x): the convolution whose backward runs second adds the first one's input
// gradient. Stride 2 takes conv2d_backward_input in the software family.
for (
  const [name, input, c1, c2] of [
    [
      "stride 1, 3x3 and 1x1, 7x12",
      [2, 3, 7, 12],
      { weight: [5, 3, 3, 3], stride: 1, padding: 1 },
      {
        weight: [5, 3, 1, 1],
        stride: 1,
        padding: 0,
      },
    ],
    ["stride 1, 3x3 twice, 5x9", [3, 5, 5, 9], { weight: [4, 5, 3, 3], stride: 1, padding: 1 }, {
      weight: [4, 5, 3, 3],
      stride: 1,
      padding: 1,
    }],
    ["stride 2, 3x3 and 1x1, 9x8", [2, 3, 9, 8], { weight: [6, 3, 3, 3], stride: 2, padding: 1 }, {
      weight: [6, 3, 1, 1],
      stride: 2,
      padding: 0,
    }],
    ["stride 2, 3x3 and 1x1, 11x7", [2, 5, 11, 7], {
      weight: [3, 5, 3, 3],
      stride: 2,
      padding: 1,
    }, { weight: [3, 5, 1, 1], stride: 2, padding: 0 }],
  ] as [string, number[], Conv, Conv][]
) {
  gpuTest(`conv1(x) + conv2(x): the fused input gradient matches float64 (${name})`, async () => {
    const g1 = geoOf(input, c1);
    const g2 = geoOf(input, c2);
    assert.deepEqual([g1.oh, g1.ow], [g2.oh, g2.ow]);
    const x = f32(randomValues(size(input), 21));
    const w1 = f32(randomValues(size(c1.weight), 22, 0.4));
    const w2 = f32(randomValues(size(c2.weight), 23, 0.4));
    const outShape = [g1.n, g1.o, g1.oh, g1.ow];
    const r = f32(randomValues(size(outShape), 24));
    const xt = Tensor.from(x, input, { requiresGrad: true });
    const w1t = Tensor.from(w1, c1.weight, { requiresGrad: true });
    const w2t = Tensor.from(w2, c2.weight, { requiresGrad: true });
    const rt = Tensor.from(r, outShape);
    const adds = await addInplaceCalls(() =>
      tidy(() => add(conv2d(xt, w1t, null, c1), conv2d(xt, w2t, null, c2)).backward(rt))
    );
    assert.equal(adds, 0, "add_inplace dispatches");
    const e1 = convBackwardReference(x, w1, r, g1);
    const e2 = convBackwardReference(x, w2, r, g2);
    const fused = await xt.grad!.toArray();
    assertClose(fused, e1.gx.map((v, i) => v + e2.gx[i]), { what: "grad input" });
    assertClose(await w1t.grad!.toArray(), e1.gw, { what: "grad weight 1" });
    assertClose(await w2t.grad!.toArray(), e2.gw, { what: "grad weight 2" });

    // Unfused: each path's backward alone, the two added by the leaf's accumulation.
    const xu = Tensor.from(x, input, { requiresGrad: true });
    tidy(() => conv2d(xu, w1t, null, c1).backward(rt));
    tidy(() => conv2d(xu, w2t, null, c2).backward(rt));
    assertClose(fused, await xu.grad!.toArray(), { what: "fused vs unfused" });
    for (const t of [xt, xu, w1t, w2t, rt, xt.grad, xu.grad, w1t.grad, w2t.grad]) t?.dispose();
  });
}

gpuTest(
  "a fused sum with a training batch norm's gradient is not marked as summing to 0 per channel",
  async () => {
    // z = conv0(x) + b0 feeds a training batch norm (whose input gradient sums to 0 per channel)
    // and a convolution, whose backward runs second and adds the batch norm's gradient. b0's
    // gradient is the per-channel sum of z's: the convolution's part alone, not 0.
    const input = [3, 4, 6, 8];
    const x = Tensor.from(f32(randomValues(size(input), 31)), input);
    const w0 = Tensor.from(f32(randomValues(5 * 4 * 9, 32, 0.3)), [5, 4, 3, 3]);
    const b0 = Tensor.from(f32(randomValues(5, 33)), [5], { requiresGrad: true });
    const c1: Conv = { weight: [5, 5, 3, 3], stride: 1, padding: 1 };
    const w1 = f32(randomValues(5 * 5 * 9, 34, 0.3));
    const w1t = Tensor.from(w1, c1.weight);
    const r = f32(randomValues(3 * 5 * 6 * 8, 35));
    const rt = Tensor.from(r, [3, 5, 6, 8]);
    const bn = { runningMean: Tensor.zeros([5]), runningVar: Tensor.ones([5]), training: true };
    const z = conv2d(x, w0, b0, { padding: 1 });
    const zValues = await z.toArray();
    const adds = await addInplaceCalls(() =>
      tidy(() => sum(mul(add(conv2d(z, w1t, null, c1), batchNorm2d(z, bn)), rt)).backward())
    );
    assert.equal(adds, 0, "add_inplace dispatches");
    const gz = convBackwardReference(zValues, w1, r, geoOf([3, 5, 6, 8], c1)).gx;
    const expected = new Float64Array(5);
    for (let i = 0; i < gz.length; i++) expected[Math.floor(i / 48) % 5] += gz[i];
    assertClose(await b0.grad!.toArray(), expected, { rtol: 1e-4, atol: 1e-4, what: "bias grad" });
  },
);
