/**
 * A LLaMA model's weights in memory, whatever file they came from (llama2.c, Hugging Face
 * safetensors, a synthetic checkpoint): row-major [out, in] matrices like `nn.Linear`, f32. The
 * block's fields keep llama2.c's short names (w1 gate, w2 down, w3 up).
 *
 * @module
 */

/** One block's weights, row-major [out, in] like `nn.Linear`. */
export interface LlamaLayerWeights {
  /** Attention RMSNorm weight [dim]. */
  attnNorm: Float32Array;
  /** [dim, dim]. */
  wq: Float32Array;
  /** [kvDim, dim]. */
  wk: Float32Array;
  /** [kvDim, dim]. */
  wv: Float32Array;
  /** [dim, dim]. */
  wo: Float32Array;
  /** FFN RMSNorm weight [dim]. */
  ffnNorm: Float32Array;
  /** Gate projection [hidden, dim]. */
  w1: Float32Array;
  /** Down projection [dim, hidden]. */
  w2: Float32Array;
  /** Up projection [hidden, dim]. */
  w3: Float32Array;
}

/** All weights of a model. */
export interface LlamaWeights {
  /** [vocab, dim]. */
  tokenEmbedding: Float32Array;
  /** Blocks in order. */
  layers: LlamaLayerWeights[];
  /** Final RMSNorm weight [dim]. */
  finalNorm: Float32Array;
  /** [vocab, dim] (the token embedding itself when shared). */
  classifier: Float32Array;
}
