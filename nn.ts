/**
 * nn
 * @module
 */
export * from "./src/nn/mod.ts";
