/**
 * Product epilogues: a small computation over the same input that rides in a product's dispatch
 * instead of a dispatch of its own. The product kernel stores
 *   y[t, o] = α·(x·Wᵀ)[t, o] + epilogue(t, o) + β·y[t, o]
 * Where a step is many small dispatches (decoding one token: every adapter's ΔW·x beside its base
 * product), each one saved is a launch and a barrier saved, on a CPU rasteriser and a GPU alike.
 */
import type { Batch, Binding } from "./batch.ts";

/** What a product kernel needs to add an epilogue's terms to its outputs. */
export interface ProductEpilogue {
  /** Short name for the dispatch's label (`qmatmul/nf4/...+kron`). */
  name: string;
  /**
   * WGSL with its bindings numbered from `first` in group 0 and
   * `fn epilogue(t: u32, o: u32) -> f32`, the term added to output column o of token t. It reads
   * the product's input through `inputAt(t: u32, k: u32) -> f32`, which the product kernel
   * defines, and with `vectorInput` also through `inputVec4(t: u32, k4: u32) -> vec4<f32>`
   * (elements 4·k4 … 4·k4 + 3 of row t). Every name it declares starts with `e_` (the product
   * owns the others), and it uses every binding it declares (pipelines take their layout from
   * the shader).
   */
  wgsl(first: number, vectorInput: boolean): string;
  /** The resources of those bindings, in order, for one dispatch recorded into `batch`. */
  bindings(batch: Batch): Binding[];
}

/**
 * WGSL expression for element `m` (0–3) of the vec4 `v`, both expressions: nested selects rather
 * than `v[m]`, whose dynamic index llvmpipe lowers to a spill to memory.
 */
export function vec4ElementWgsl(v: string, m: string): string {
  return `select(select(${v}.x, ${v}.y, ${m} == 1u), select(${v}.z, ${v}.w, ${m} == 3u), ${m} >= 2u)`;
}
