/**
 * llama2.c checkpoints (the legacy `.bin` format): 7 little-endian int32 — dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size (negative: separate classifier), seq_len — then f32
 * tensors in a fixed order (llama2.c's legacy `export.py`), then the legacy RoPE tables, then
 * the classifier when it is not shared.
 *
 * The header and the exact file size are checked before any tensor is read: a truncated, padded
 * or foreign file is rejected with what was expected, never half-loaded.
 */
import type { LlamaConfig } from "./llama/config.ts";
import type { LlamaLayerWeights, LlamaWeights } from "./llama/weights.ts";

/** Dimensions from a llama2.c header: the fields of {@link LlamaConfig} the format stores. */
export type Llama2cConfig = Pick<
  LlamaConfig,
  "dim" | "hiddenDim" | "layers" | "heads" | "kvHeads" | "vocab" | "seqLen" | "sharedClassifier"
>;

/** One block's weights (llama2.c's names; see {@link LlamaLayerWeights}). */
export type Llama2cLayer = LlamaLayerWeights;

/** A loaded llama2.c checkpoint: its header and the weights. */
export interface Llama2cCheckpoint extends LlamaWeights {
  /** Header. */
  config: Llama2cConfig;
}

const HEADER_BYTES = 28;

/** Parse and validate a llama2.c header; `source` names the file in errors. */
export function parseLlama2cHeader(bytes: Uint8Array, source = "checkpoint"): Llama2cConfig {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new Error(`${source}: ${bytes.byteLength} bytes, too short for a llama2.c header`);
  }
  const h = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const [dim, hiddenDim, layers, heads, kvHeads, vocabSigned, seqLen] = Array.from(
    { length: 7 },
    (_, i) => h.getInt32(4 * i, true),
  );
  const fields = { dim, hiddenDim, layers, heads, kvHeads, vocab: Math.abs(vocabSigned), seqLen };
  for (const [k, v] of Object.entries(fields)) {
    if (!(v > 0 && v < 1 << 24)) {
      throw new Error(`${source}: header field ${k}=${v} is not a plausible size`);
    }
  }
  if (dim % heads !== 0 || heads % kvHeads !== 0 || (dim / heads) % 2 !== 0) {
    throw new Error(
      `${source}: header dim=${dim} heads=${heads} kvHeads=${kvHeads}: need dim % heads = 0, ` +
        `heads % kvHeads = 0 and an even head size`,
    );
  }
  return { ...fields, sharedClassifier: vocabSigned > 0 };
}

/** Number of f32 values after the header, in file order, for a config. */
export function llama2cLayout(c: Llama2cConfig): { name: string; count: number }[] {
  const kvDim = (c.dim / c.heads) * c.kvHeads;
  const headSize = c.dim / c.heads;
  const L = c.layers;
  return [
    { name: "tokenEmbedding", count: c.vocab * c.dim },
    { name: "attnNorm", count: L * c.dim },
    { name: "wq", count: L * c.dim * c.dim },
    { name: "wk", count: L * kvDim * c.dim },
    { name: "wv", count: L * kvDim * c.dim },
    { name: "wo", count: L * c.dim * c.dim },
    { name: "ffnNorm", count: L * c.dim },
    { name: "w1", count: L * c.hiddenDim * c.dim },
    { name: "w2", count: L * c.dim * c.hiddenDim },
    { name: "w3", count: L * c.hiddenDim * c.dim },
    { name: "finalNorm", count: c.dim },
    { name: "ropeTables", count: c.seqLen * headSize }, // cos and sin, seq × headSize/2 each
    { name: "classifier", count: c.sharedClassifier ? 0 : c.vocab * c.dim },
  ];
}

/** Parse a whole checkpoint from bytes (validated before any tensor is copied). */
export function parseLlama2c(bytes: Uint8Array, source = "checkpoint"): Llama2cCheckpoint {
  const config = parseLlama2cHeader(bytes, source);
  const layout = llama2cLayout(config);
  const expected = HEADER_BYTES + 4 * layout.reduce((n, t) => n + t.count, 0);
  if (bytes.byteLength !== expected) {
    throw new Error(
      `${source}: ${bytes.byteLength} bytes, but a llama2.c checkpoint with header ` +
        `${JSON.stringify(config)} has ${expected} (${
          bytes.byteLength < expected ? "truncated" : "trailing data"
        })`,
    );
  }
  const all = new Float32Array(bytes.slice(HEADER_BYTES).buffer); // aligned copy
  const tensors: Record<string, Float32Array> = {};
  let at = 0;
  for (const { name, count } of layout) {
    tensors[name] = all.subarray(at, at + count);
    at += count;
  }
  for (const [name, t] of Object.entries(tensors)) {
    for (let i = 0; i < t.length; i++) {
      if (!Number.isFinite(t[i])) {
        throw new Error(`${source}: ${name}[${i}] is ${t[i]} (corrupt weights)`);
      }
    }
  }
  const kvDim = (config.dim / config.heads) * config.kvHeads;
  const per = (name: string, size: number, l: number) =>
    tensors[name].subarray(l * size, (l + 1) * size);
  const { dim, hiddenDim } = config;
  const layers = Array.from({ length: config.layers }, (_, l): Llama2cLayer => ({
    attnNorm: per("attnNorm", dim, l),
    wq: per("wq", dim * dim, l),
    wk: per("wk", kvDim * dim, l),
    wv: per("wv", kvDim * dim, l),
    wo: per("wo", dim * dim, l),
    ffnNorm: per("ffnNorm", dim, l),
    w1: per("w1", hiddenDim * dim, l),
    w2: per("w2", dim * hiddenDim, l),
    w3: per("w3", hiddenDim * dim, l),
  }));
  return {
    config,
    tokenEmbedding: tensors.tokenEmbedding,
    layers,
    finalNorm: tensors.finalNorm,
    classifier: config.sharedClassifier ? tensors.tokenEmbedding : tensors.classifier,
  };
}

/** Read and parse a checkpoint file. */
export async function loadLlama2c(path: string): Promise<Llama2cCheckpoint> {
  return parseLlama2c(await Deno.readFile(path), path);
}
