/**
 * What a training step of the GPU model holds on the device, term by term, from the shapes alone:
 * the frozen weights in their storage formats, the adapter state (parameters, gradients, the
 * accumulated gradient and AdamW's two moments), the activations of the recorded step (with or
 * without activation checkpointing), and the logits chunk of the loss. `deno task scale` and
 * `deno task perf` print it beside the pool's measured peak.
 */
import { storageRowBytes } from "../../kernels/quant/qmatmul.ts";
import { TARGET_MODULES } from "../llama_shapes.ts";
import { kvDim, linearDims, type LlamaConfig } from "./config.ts";
import type { WeightFormat } from "./gpu/weights.ts";

/** Settings of a step to estimate. */
export interface StepMemorySettings {
  /** Storage of the linear layers. */
  base: WeightFormat;
  /** Storage of the embedding and the classifier. */
  embedding: WeightFormat;
  /** Sequences per micro-batch. */
  batch: number;
  /** Tokens per sequence. */
  seq: number;
  /** Activation checkpointing on. */
  checkpointing: boolean;
  /** Trainable adapter parameters (all modules). */
  adapterParams: number;
  /** Budget of the loss's logits chunk in bytes (the model's `logitsChunkBytes`). */
  logitsChunkBytes: number;
  /** NF4 block / int4 group size (default 64 / 32). */
  blockSize?: number;
}

/** The estimate, in bytes. */
export interface StepMemory {
  /** Frozen weights: linear layers, embedding, classifier, norms. */
  weights: number;
  /** Adapter parameters, gradients, accumulated gradients, AdamW's m and v. */
  adapterState: number;
  /** What the step's forward keeps and one block's backward adds. */
  activations: number;
  /** The loss's logits chunk. */
  logits: number;
  /** The sum. */
  total: number;
}

/** The estimate of {@link StepMemory} for `config` under `s`. */
export function estimateStepMemory(c: LlamaConfig, s: StepMemorySettings): StepMemory {
  const block = s.blockSize ?? (s.base === "int4" ? 32 : 64);
  let weights = 0;
  for (const m of TARGET_MODULES) {
    const [dIn, dOut] = linearDims(c, m);
    weights += c.layers * dOut * storageRowBytes(s.base, dIn, block);
  }
  const table = c.vocab * storageRowBytes(s.embedding, c.dim, 64);
  weights += table * (c.sharedClassifier ? 1 : 2) + (2 * c.layers + 1) * c.dim * 4;
  const rows = s.batch * s.seq;
  const kv = kvDim(c);
  // Floats per token: a block's tape (input, n1, q, k, v, attention output, h1, n2, g, u, act,
  // 1/rms ×2, and the log-sum-exp per head) and one block's backward temporaries (dact, dg, du,
  // dn2, dattOut, dq, dk, dv, dn1, D per head, an accumulation buffer of the widest input).
  const tape = 6 * c.dim + 2 * kv + 3 * c.hiddenDim + 2 + c.heads;
  const backward = 3 * c.hiddenDim + 4 * c.dim + 2 * kv + c.heads + c.hiddenDim;
  const head = 5 * c.dim; // final h, nf, dnf, dh, 1/rms
  const kept = s.checkpointing ? c.layers * c.dim + tape : c.layers * tape;
  const activations = rows * 4 * (kept + backward + head);
  // Rows × vocabulary-block logits, within the chunk budget (all blocks kept when they fit).
  const logits = Math.min(s.logitsChunkBytes, rows * c.vocab * 4);
  const adapterState = s.adapterParams * 4 * 5;
  return {
    weights,
    adapterState,
    activations,
    logits,
    total: weights + adapterState + activations + logits,
  };
}

/** {@link StepMemory} as "weights 3.9 GiB + adapters ... = total" for logs. */
export function describeStepMemory(m: StepMemory): string {
  const g = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  return `weights ${g(m.weights)} + adapter state ${g(m.adapterState)} + activations ` +
    `${g(m.activations)} + logits ${g(m.logits)} = ${g(m.total)}`;
}
