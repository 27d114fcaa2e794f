// The distinct layer shapes of a model, derived from its ResNet structure.
import { ResNetBase } from "@resnet/webgpu";
import { Conv2d, Linear, type Module } from "@resnet/webgpu/nn";

export interface ConvShape {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  k: [number, number];
  stride: [number, number];
  padding: [number, number];
  oh: number;
  ow: number;
  bias: boolean;
  /** Takes the model's input (the images), whose gradient no training step needs. */
  stem: boolean;
  /** Layers of the model with this shape. */
  layers: number;
}

/** `[N, C, H, W]` with the number of layers that see it. */
export interface PlaneShape {
  shape: [number, number, number, number];
  layers: number;
}

export interface LinearShape {
  n: number;
  in: number;
  out: number;
  layers: number;
}

export interface ModelShapes {
  convs: ConvShape[];
  norms: PlaneShape[];
  /** Inputs of the global average pool. */
  pools: PlaneShape[];
  linears: LinearShape[];
}

function tally<T>(map: Map<string, T & { layers: number }>, key: string, make: () => T): void {
  const seen = map.get(key);
  if (seen) seen.layers++;
  else map.set(key, { ...make(), layers: 1 });
}

/**
 * Distinct shapes of `model`'s layers at `batch` images of `image` = [C, H, W], derived from the
 * ResNet's structure (the blocks call fused conv + batch-norm ops, not the layers' forward, so
 * hooking forward would miss them): each convolution's input and output, the batch norm that
 * follows it, the global pool's input and the linear layers.
 */
export function traceShapes(model: Module, batch: number, image = [3, 32, 32]): ModelShapes {
  const convs = new Map<string, ConvShape>();
  const norms = new Map<string, PlaneShape>();
  const pools = new Map<string, PlaneShape>();
  const linears = new Map<string, LinearShape>();
  const size = (x: number, k: number, s: number, p: number) => Math.floor((x + 2 * p - k) / s) + 1;
  // Records conv `m` on an input [c, h, w] and the batch norm after it; returns its output.
  const conv = (m: Conv2d, [c, h, w]: number[], stem = false): number[] => {
    const o = m.outChannels;
    const oh = size(h, m.kernelSize[0], m.stride[0], m.padding[0]);
    const ow = size(w, m.kernelSize[1], m.stride[1], m.padding[1]);
    const key = [c, h, w, o, m.kernelSize, m.stride, m.padding, !!m.bias].join("|");
    tally(convs, key, () => ({
      n: batch,
      c,
      h,
      w,
      o,
      k: m.kernelSize,
      stride: m.stride,
      padding: m.padding,
      oh,
      ow,
      bias: !!m.bias,
      stem,
    }));
    tally(norms, [o, oh, ow].join("|"), () => ({
      shape: [batch, o, oh, ow] as [number, number, number, number],
    }));
    return [o, oh, ow];
  };
  for (const [, m] of model.namedModules()) {
    if (m instanceof ResNetBase) {
      let x = conv(m.conv, image, true);
      for (const block of m.blocks.children()) {
        const b = block as unknown as Record<string, Module>;
        const input = x;
        for (const name of ["conv1", "conv2", "conv3"]) {
          if (b[name] instanceof Conv2d) x = conv(b[name] as Conv2d, x);
        }
        const shortcut = b.shortcut as unknown as { conv?: Conv2d };
        if (shortcut.conv instanceof Conv2d) conv(shortcut.conv, input);
      }
      tally(pools, x.join("|"), () => ({
        shape: [batch, x[0], x[1], x[2]] as [number, number, number, number],
      }));
    } else if (m instanceof Linear) {
      const key = `${m.inFeatures}|${m.outFeatures}`;
      tally(linears, key, () => ({ n: batch, in: m.inFeatures, out: m.outFeatures }));
    }
  }
  return {
    convs: [...convs.values()],
    norms: [...norms.values()],
    pools: [...pools.values()],
    linears: [...linears.values()],
  };
}
