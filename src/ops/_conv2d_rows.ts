// Transitional: conv2d's vec4-row launchers now live in conv2d.ts. fused.ts still imports these
// four from here; once it imports them from "./conv2d.ts", delete this file.
export { forwardRows, geometry, packWeight, rowsFit } from "./conv2d.ts";
