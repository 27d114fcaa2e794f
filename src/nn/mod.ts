/**
 * Layers that mirror `torch.nn`: the same class names, constructor arguments (optional ones in an
 * options object) and state-dict keys.
 *
 * @module
 */
export {
  type ForwardHook,
  type LoadStateDictOptions,
  type LoadStateDictResult,
  Module,
  type RemovableHandle,
} from "./module.ts";
export { Conv2d, type Conv2dLayerOptions } from "./conv2d.ts";
export {
  BatchNorm2d,
  type BatchNorm2dForwardOptions,
  type BatchNorm2dLayerOptions,
} from "./batch_norm2d.ts";
export { ConvBn2d } from "./conv_bn2d.ts";
export { Linear, type LinearOptions } from "./linear.ts";
export { Flatten, Identity, ReLU } from "./activation.ts";
export {
  AdaptiveAvgPool2d,
  AvgPool2d,
  type AvgPoolOptions,
  MaxPool2d,
  type PoolOptions,
} from "./pool.ts";
export { Sequential } from "./sequential.ts";
export { type InitOptions } from "./init.ts";
