// The float64 reference convolution and its gradients, shared by the conv2d and fused-op tests.

/** A convolution's sizes: input [n, c, h, w], weight [o, c, kh, kw], output [n, o, oh, ow]. */
export interface Geo {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  oh: number;
  ow: number;
}

/**
 * The geometry of a square-strided, square-padded convolution of an `input` [n, c, h, w] with a
 * `weight` [o, c, kh, kw].
 */
export function geometry(
  input: readonly number[],
  weight: readonly number[],
  stride: number,
  padding: number,
): Geo {
  const [n, c, h, w] = input;
  const [o, , kh, kw] = weight;
  return {
    n,
    c,
    h,
    w,
    o,
    kh,
    kw,
    strideH: stride,
    strideW: stride,
    padH: padding,
    padW: padding,
    oh: Math.floor((h + 2 * padding - kh) / stride) + 1,
    ow: Math.floor((w + 2 * padding - kw) / stride) + 1,
  };
}

/**
 * y[n, o, oy, ox] = b[o] + sum x[n, c, oy * strideH - padH + ky, ox * strideW - padW + kx] *
 * w[o, c, ky, kx].
 */
export function convReference(
  x: ArrayLike<number>,
  wt: ArrayLike<number>,
  b: ArrayLike<number> | null,
  g: Geo,
): Float64Array {
  const y = new Float64Array(g.n * g.o * g.oh * g.ow);
  for (let n = 0; n < g.n; n++) {
    for (let o = 0; o < g.o; o++) {
      for (let oy = 0; oy < g.oh; oy++) {
        for (let ox = 0; ox < g.ow; ox++) {
          let s = b ? b[o] : 0;
          for (let c = 0; c < g.c; c++) {
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * g.strideH - g.padH + ky;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * g.strideW - g.padW + kx;
                if (ix < 0 || ix >= g.w) continue;
                s += x[((n * g.c + c) * g.h + iy) * g.w + ix] *
                  wt[((o * g.c + c) * g.kh + ky) * g.kw + kx];
              }
            }
          }
          y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = s;
        }
      }
    }
  }
  return y;
}

/** Gradients of sum(y * gy) with respect to x, w and b, by scattering each output's gradient. */
export function convBackwardReference(
  x: ArrayLike<number>,
  wt: ArrayLike<number>,
  gy: ArrayLike<number>,
  g: Geo,
) {
  const gx = new Float64Array(g.n * g.c * g.h * g.w);
  const gw = new Float64Array(g.o * g.c * g.kh * g.kw);
  const gb = new Float64Array(g.o);
  for (let n = 0; n < g.n; n++) {
    for (let o = 0; o < g.o; o++) {
      for (let oy = 0; oy < g.oh; oy++) {
        for (let ox = 0; ox < g.ow; ox++) {
          const d = gy[((n * g.o + o) * g.oh + oy) * g.ow + ox];
          gb[o] += d;
          for (let c = 0; c < g.c; c++) {
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * g.strideH - g.padH + ky;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * g.strideW - g.padW + kx;
                if (ix < 0 || ix >= g.w) continue;
                const xi = ((n * g.c + c) * g.h + iy) * g.w + ix;
                const wi = ((o * g.c + c) * g.kh + ky) * g.kw + kx;
                gx[xi] += d * wt[wi];
                gw[wi] += d * x[xi];
              }
            }
          }
        }
      }
    }
  }
  return { gx, gw, gb };
}
