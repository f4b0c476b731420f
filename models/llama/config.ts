/**
 * The LLaMA architecture's hyper-parameters, one type whatever file they come from (a llama2.c
 * header through {@link fromLlama2c}, a Hugging Face config.json through the HF reader).
 */
import type { Llama2cConfig } from "../llama2c.ts";
import { linearDims, type TargetModule } from "../llama_shapes.ts";
import type { RopeLayout } from "../../kernels/llama/cpu/rope.ts";

export { linearDims };

/** Dimensions and constants of a LLaMA model. */
export interface LlamaConfig {
  /** Model width (hidden_size). */
  dim: number;
  /** SwiGLU hidden width (intermediate_size). */
  hiddenDim: number;
  /** Transformer blocks. */
  layers: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads (GQA when < heads). */
  kvHeads: number;
  /** Vocabulary size. */
  vocab: number;
  /** Positions (max_position_embeddings, or the context a run uses). */
  seqLen: number;
  /** The classifier is the token embedding (tie_word_embeddings). */
  sharedClassifier: boolean;
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
