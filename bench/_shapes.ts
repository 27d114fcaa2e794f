// The distinct layer shapes of a model, found by running it once on one image with every
// Conv2d/BatchNorm2d/Linear forward wrapped to record its input's shape.
import {
  BatchNorm2d,
  Conv2d,
  Linear,
  type Module,
  noGrad,
  ResNetBase,
  Tensor,
  tidy,
} from "@resnet/webgpu";

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

/** Distinct shapes of `model`'s layers at `batch` images of `image` = [C, H, W]. */
export function traceShapes(model: Module, batch: number, image = [3, 32, 32]): ModelShapes {
  const convs = new Map<string, ConvShape>();
  const norms = new Map<string, PlaneShape>();
  const pools = new Map<string, PlaneShape>();
  const linears = new Map<string, LinearShape>();
  const patched: Module[] = [];
  const wrap = (m: Module, seen: (x: Tensor, y: Tensor) => void) => {
    const forward = m.forward.bind(m);
    m.forward = (x: Tensor) => {
      const y = forward(x);
      seen(x, y);
      return y;
    };
    patched.push(m);
  };
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d) {
      wrap(m, (x, y) => {
        const [, c, h, w] = x.shape;
        const [, o, oh, ow] = y.shape;
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
          stem: convs.size === 0,
        }));
      });
    } else if (m instanceof BatchNorm2d) {
      wrap(m, (x) => plane(norms, batch, x));
    } else if (m instanceof ResNetBase) {
      wrap(m.blocks, (_x, y) => plane(pools, batch, y));
    } else if (m instanceof Linear) {
      wrap(m, (x, y) => {
        const key = `${x.shape[1]}|${y.shape[1]}`;
        tally(linears, key, () => ({ n: batch, in: x.shape[1], out: y.shape[1] }));
      });
    }
  }
  const wasTraining = model.training;
  model.eval();
  try {
    tidy(() => noGrad(() => model.forward(Tensor.zeros([1, ...image])))).dispose();
  } finally {
    // Back to the prototype's forward.
    for (const m of patched) Reflect.deleteProperty(m, "forward");
    model.train(wasTraining);
  }
  return {
    convs: [...convs.values()],
    norms: [...norms.values()],
    pools: [...pools.values()],
    linears: [...linears.values()],
  };
}

function plane(map: Map<string, PlaneShape>, batch: number, x: Tensor): void {
  const [, c, h, w] = x.shape;
  tally(
    map,
    `${c}|${h}|${w}`,
    () => ({ shape: [batch, c, h, w] as [number, number, number, number] }),
  );
}
