/** A tiny random LLaMA (llama2.c layout) for tests that need a whole model, and batch helpers. */
import { gaussianArray } from "../../kernels/cpu/random.ts";
import type { Llama2cCheckpoint, Llama2cConfig } from "../llama2c.ts";
import type { CpuAdapters, CpuLlama } from "./cpu/model.ts";

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

/**
 * The float64 model's mean loss over the unmasked targets of several sequences, and every adapter
 * gradient of it: what one GPU step over the same sequences computes.
 */
export function cpuBatchLossAndGrads(
  cpu: CpuLlama,
  seqs: number[][],
  targets: number[][],
  adapters: CpuAdapters,
): { loss: number; count: number; grads: Map<string, Record<string, Float64Array>> } {
  const count = targets.flat().filter((t) => t >= 0).length;
  let loss = 0;
  const grads = new Map<string, Record<string, Float64Array>>();
  seqs.forEach((ids, s) => {
    const n = targets[s].filter((t) => t >= 0).length;
    const r = cpu.lossAndGrads(ids, targets[s], adapters);
    loss += (r.loss * n) / count;
    for (const [k, g] of r.grads) {
      const acc = grads.get(k) ?? {};
      for (const [name, v] of Object.entries(g)) {
        acc[name] ??= new Float64Array(v.length);
        for (let j = 0; j < v.length; j++) acc[name][j] += (v[j] * n) / count;
      }
      grads.set(k, acc);
    }
  });
  return { loss, count, grads };
}
