// The float64 batch-norm reference of the tests: PyTorch's batch_norm with the residual addition
// and ReLU of batchNorm2d's options, forward and backward written out with plain loops (the
// backward is checked against finite differences in batch_norm_test.ts).

export interface RefOptions {
  weight?: Float64Array | null;
  bias?: Float64Array | null;
  runningMean?: Float64Array | null;
  runningVar?: Float64Array | null;
  training: boolean;
  momentum?: number;
  eps?: number;
  residual?: Float64Array | null;
  relu?: boolean;
}

export interface RefResult {
  y: Float64Array;
  /** Before the ReLU: the normalization plus the residual. */
  pre: Float64Array;
  mean: Float64Array;
  invstd: Float64Array;
  /** The running statistics after a training call (PyTorch's update), or as given. */
  runningMean: Float64Array | null;
  runningVar: Float64Array | null;
}

/** `relu(bn(x) + residual)` in float64, the residual and ReLU as `o` asks. */
export function bnForward(x: Float64Array, shape: number[], o: RefOptions): RefResult {
  const [N, C, H, W] = shape;
  const hw = H * W;
  const n = N * hw;
  const eps = o.eps ?? 1e-5;
  const momentum = o.momentum ?? 0.1;
  const mean = new Float64Array(C);
  const invstd = new Float64Array(C);
  const runningMean = o.runningMean ? Float64Array.from(o.runningMean) : null;
  const runningVar = o.runningVar ? Float64Array.from(o.runningVar) : null;
  for (let c = 0; c < C; c++) {
    if (o.training) {
      let s = 0;
      for (let b = 0; b < N; b++) for (let i = 0; i < hw; i++) s += x[(b * C + c) * hw + i];
      const m = s / n;
      let q = 0;
      for (let b = 0; b < N; b++) {
        for (let i = 0; i < hw; i++) q += (x[(b * C + c) * hw + i] - m) ** 2;
      }
      mean[c] = m;
      invstd[c] = 1 / Math.sqrt(q / n + eps); // biased variance normalizes
      if (runningMean && runningVar) {
        runningMean[c] = (1 - momentum) * runningMean[c] + momentum * m;
        runningVar[c] = (1 - momentum) * runningVar[c] + momentum * (q / (n - 1)); // unbiased
      }
    } else {
      mean[c] = o.runningMean![c];
      invstd[c] = 1 / Math.sqrt(o.runningVar![c] + eps);
    }
  }
  const pre = new Float64Array(x.length);
  const y = new Float64Array(x.length);
  for (let b = 0; b < N; b++) {
    for (let c = 0; c < C; c++) {
      const w = o.weight ? o.weight[c] : 1;
      const bias = o.bias ? o.bias[c] : 0;
      for (let i = 0; i < hw; i++) {
        const k = (b * C + c) * hw + i;
        pre[k] = (x[k] - mean[c]) * invstd[c] * w + bias + (o.residual ? o.residual[k] : 0);
        y[k] = o.relu ? Math.max(pre[k], 0) : pre[k];
      }
    }
  }
  return { y, pre, mean, invstd, runningMean, runningVar };
}

/**
 * The gradients of `sum(y * gy)` from the closed forms: of x, the weight, the bias and the
 * residual (the ReLU's mask applied to gy).
 */
export function bnBackward(
  x: Float64Array,
  gy: ArrayLike<number>,
  shape: number[],
  o: RefOptions,
): { gx: Float64Array; gw: Float64Array; gb: Float64Array; gr: Float64Array } {
  const [N, C, H, W] = shape;
  const hw = H * W;
  const n = N * hw;
  const { mean, invstd, pre } = bnForward(x, shape, o);
  const g = Float64Array.from(gy, (d, i) => (o.relu && !(pre[i] > 0) ? 0 : d));
  const gx = new Float64Array(x.length);
  const gw = new Float64Array(C);
  const gb = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let sumDy = 0;
    let sumDyXhat = 0;
    for (let b = 0; b < N; b++) {
      for (let i = 0; i < hw; i++) {
        const k = (b * C + c) * hw + i;
        sumDy += g[k];
        sumDyXhat += g[k] * (x[k] - mean[c]) * invstd[c];
      }
    }
    gw[c] = sumDyXhat;
    gb[c] = sumDy;
    const w = o.weight ? o.weight[c] : 1;
    for (let b = 0; b < N; b++) {
      for (let i = 0; i < hw; i++) {
        const k = (b * C + c) * hw + i;
        const xhat = (x[k] - mean[c]) * invstd[c];
        gx[k] = o.training
          ? (w * invstd[c] / n) * (n * g[k] - sumDy - xhat * sumDyXhat)
          : g[k] * w * invstd[c];
      }
    }
  }
  return { gx, gw, gb, gr: g };
}
