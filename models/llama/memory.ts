/**
 * What a training step of the GPU model holds on the device, term by term, from the shapes alone:
 * the frozen weights in their storage formats, the adapter state (parameters, gradients, the
 * accumulated gradient and AdamW's two moments), the activations of the recorded step (with or
 * without activation checkpointing), and the logits chunk of the loss. `deno task scale` and
 * `deno task perf` print it beside the pool's measured peak. Likewise for inference batches: a
 * batch of generations (KV cache, prefill, decode step) and a scoring forward, which the
 * evaluations size their batches from.
 */
import { storageRowBytes } from "../../kernels/quant/qmatmul.ts";
import { TARGET_MODULES } from "../llama_shapes.ts";
import { kvDim, linearDims, type LlamaConfig } from "./config.ts";
import type { WeightFormat } from "./gpu/weights.ts";
import { KvCache } from "./gpu/model.ts";

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

/**
 * Bytes per token of an inference forward's activations (no tape): every tensor one block
 * allocates — h, n1, q, k, v, the attention output, n2, gate, up, the SwiGLU output, two 1/rms
 * and the log-sum-exp per head — and the final norm's output, as if the batch reused none of them
 * (an upper bound of what the pool holds per token at once).
 */
export function inferenceTokenBytes(c: LlamaConfig): number {
  return 4 * (6 * c.dim + 2 * kvDim(c) + 3 * c.hiddenDim + 2 + c.heads + c.dim);
}

/** The widest activation row of a forward in bytes: one storage binding holds rows × this. */
export function widestActivationRowBytes(c: LlamaConfig): number {
  return 4 * Math.max(c.hiddenDim, c.dim);
}

/** What a batch of generations or of scored prompts holds on the device, in bytes. */
export interface InferenceBatchMemory {
  /** Keys and values of every layer and the two slot tables (generation; 0 for scoring). */
  kvCache: number;
  /** The forward over the right-padded prompts and the logits it returns. */
  prefill: number;
  /** One decode step of every slot: activations, attention scores, logits (0 for scoring). */
  decode: number;
  /** The sum. */
  total: number;
  /** The largest single tensor: it must fit one storage binding. */
  largestBinding: number;
}

/**
 * The device memory of {@link searchManyOnGpu}-style generation: `prompts` prompts (the longest
 * `longest` tokens, every one right-padded to it), `beams` slots each, up to `maxNew` new tokens.
 */
export function estimateGenerationMemory(
  c: LlamaConfig,
  g: { prompts: number; longest: number; beams: number; maxNew: number },
): InferenceBatchMemory {
  const slots = g.prompts * g.beams;
  const maxSeq = Math.min(c.seqLen, g.longest + g.maxNew);
  const layer = KvCache.layerBytes(slots, maxSeq, kvDim(c));
  const kvCache = 2 * c.layers * layer + 2 * slots * maxSeq * 4;
  const rows = g.prompts * g.longest;
  const prefill = rows * inferenceTokenBytes(c) + g.prompts * c.vocab * 4;
  const scores = slots * c.heads * maxSeq * 4;
  const logits = slots * c.vocab * 4;
  const decode = slots * inferenceTokenBytes(c) + scores + logits;
  return {
    kvCache,
    prefill,
    decode,
    total: kvCache + prefill + decode,
    largestBinding: Math.max(layer, rows * widestActivationRowBytes(c), scores, logits),
  };
}

/**
 * The device memory of one scoring forward (`logitsAt`): `prompts` sequences right-padded to
 * `longest` tokens, the classifier on `logitRows` rows.
 */
export function estimateScoringMemory(
  c: LlamaConfig,
  s: { prompts: number; longest: number; logitRows: number },
): InferenceBatchMemory {
  const rows = s.prompts * s.longest;
  const logits = s.logitRows * c.vocab * 4;
  const prefill = rows * inferenceTokenBytes(c) + logits;
  return {
    kvCache: 0,
    prefill,
    decode: 0,
    total: prefill,
    largestBinding: Math.max(rows * widestActivationRowBytes(c), logits),
  };
}
