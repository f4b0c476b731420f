/** A tiny random LLaMA (llama2.c layout) for tests that need a whole model. */
import { gaussianArray } from "../random.ts";
import type { Llama2cCheckpoint, Llama2cConfig } from "../llama2c.ts";

/** Random weights (std 0.3, norms near 1) for `config`, seeded. */
export function randomCheckpoint(config: Llama2cConfig, seed: number): Llama2cCheckpoint {
  const { dim, hiddenDim, layers, heads, kvHeads, vocab } = config;
  const kv = (dim / heads) * kvHeads;
  let k = 0;
  const g = (n: number, std = 0.3) => gaussianArray(n, seed * 1000 + k++, std);
  const norm = (n: number) => g(n, 0.1).map((v) => 1 + v);
  const emb = g(vocab * dim, 0.5);
  return {
    config,
    tokenEmbedding: emb,
    layers: Array.from({ length: layers }, () => ({
      attnNorm: norm(dim),
      wq: g(dim * dim),
      wk: g(kv * dim),
      wv: g(kv * dim),
      wo: g(dim * dim),
      ffnNorm: norm(dim),
      w1: g(hiddenDim * dim),
      w2: g(dim * hiddenDim),
      w3: g(hiddenDim * dim),
    })),
    finalNorm: norm(dim),
    classifier: config.sharedClassifier ? emb : g(vocab * dim, 0.5),
  };
}

/** The tiny shape used across model tests: GQA, unshared classifier, odd hidden size. */
export const TINY_CONFIG: Llama2cConfig = {
  dim: 16,
  hiddenDim: 24,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  vocab: 40,
  seqLen: 32,
  sharedClassifier: false,
};
