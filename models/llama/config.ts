/** The LLaMA architecture's hyper-parameters, from a llama2.c header or a HF config.json. */
import type { Llama2cConfig } from "../llama2c.ts";
import type { TargetModule } from "../llama_shapes.ts";
import type { RopeLayout } from "./cpu/rope.ts";

/** Dimensions and constants of a LLaMA model. */
export interface LlamaConfig extends Llama2cConfig {
  /** RoPE base θ (10000 for LLaMA-2 and llama2.c, 500000 for LLaMA-3). */
  ropeTheta: number;
  /** RMSNorm ε. */
  normEps: number;
  /**
   * Which elements RoPE pairs, as the checkpoint's q/k rows are laid out: `interleaved`
   * (llama2.c, Meta) or `half` (Hugging Face's rotate_half). Default interleaved.
   */
  ropeLayout?: RopeLayout;
}

/** A llama2.c checkpoint's config with llama2.c's constants (θ = 10000, ε = 1e-5). */
export function fromLlama2c(c: Llama2cConfig): LlamaConfig {
  return { ...c, ropeTheta: 10000, normEps: 1e-5, ropeLayout: "interleaved" };
}

/** Size of one head. */
export function headSize(c: LlamaConfig): number {
  return c.dim / c.heads;
}

/** Width of the K and V projections. */
export function kvDim(c: LlamaConfig): number {
  return headSize(c) * c.kvHeads;
}

/** [dIn, dOut] of a block's linear layer. */
export function linearDims(c: LlamaConfig, m: TargetModule): [number, number] {
  switch (m) {
    case "q":
    case "o":
      return [c.dim, c.dim];
    case "k":
    case "v":
      return [c.dim, kvDim(c)];
    case "gate":
    case "up":
      return [c.dim, c.hiddenDim];
    case "down":
      return [c.hiddenDim, c.dim];
  }
}

/** The llama2.c field holding a module's weight. */
export const LLAMA2C_WEIGHT = {
  q: "wq",
  k: "wk",
  v: "wv",
  o: "wo",
  gate: "w1",
  up: "w3",
  down: "w2",
} as const satisfies Record<TargetModule, string>;
