/**
 * Where a model's weights come from, independent of the file format: the config and, per tensor,
 * rows read on demand as stored (F32, F16 or BF16 bytes). The GPU model loads through it one
 * block of rows at a time, so a checkpoint never has to fit in host memory: a Hugging Face folder
 * is read at tensor offsets (`openHfSource`), a llama2.c file (small) from memory
 * ({@link hostSource}).
 *
 * Tensor names are the model's own: `embed`, `classifier`, `final_norm`, and per layer
 * `${l}.attn_norm`, `${l}.ffn_norm`, `${l}.${module}` for the seven linear modules. Linear
 * weights are [dOut, dIn] like `nn.Linear`; q and k rows are in the checkpoint's own RoPE layout
 * (`config.ropeLayout`).
 */
import { decodeToF32, type RawTensorBytes, type SafetensorsDType } from "../safetensors.ts";
import type { LlamaWeights } from "./weights.ts";
import { TARGET_MODULES, type TargetModule } from "../llama_shapes.ts";
import { linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "./config.ts";

/** Name of one tensor of a LLaMA model. */
export type LlamaTensorName =
  | "embed"
  | "classifier"
  | "final_norm"
  | `${number}.attn_norm`
  | `${number}.ffn_norm`
  | `${number}.${TargetModule}`;

/** Readable weights of a LLaMA model. */
export interface LlamaSource {
  /** Architecture. */
  readonly config: LlamaConfig;
  /** Where the weights come from (a path), for messages. */
  readonly description: string;
  /** How a tensor is stored. */
  dtype(name: LlamaTensorName): SafetensorsDType;
  /** Where a tensor lives (file and stored name), for error messages. */
  origin(name: LlamaTensorName): string;
  /** Rows [start, start + count) of a tensor, as stored (a fresh 4-byte-aligned buffer). */
  readRows(name: LlamaTensorName, start: number, count: number): Promise<RawTensorBytes>;
  /** Release open files. */
  close(): void;
}

/** [rows, cols] of a tensor (norms are [1, dim]). */
export function tensorShape(c: LlamaConfig, name: LlamaTensorName): [number, number] {
  if (name === "embed" || name === "classifier") return [c.vocab, c.dim];
  if (name === "final_norm" || name.endsWith("_norm")) return [1, c.dim];
  const [dIn, dOut] = linearDims(c, name.split(".")[1] as TargetModule);
  return [dOut, dIn];
}

/** Every tensor a config implies, in load order (the classifier absent when shared). */
export function tensorNames(c: LlamaConfig): LlamaTensorName[] {
  const names: LlamaTensorName[] = ["embed"];
  for (let l = 0; l < c.layers; l++) {
    names.push(`${l}.attn_norm`, `${l}.ffn_norm`);
    for (const m of TARGET_MODULES) names.push(`${l}.${m}`);
  }
  names.push("final_norm");
  if (!c.sharedClassifier) names.push("classifier");
  return names;
}

/** The f32 array of a tensor in an in-memory llama2.c-layout checkpoint. */
export function hostTensor(w: LlamaWeights, name: LlamaTensorName): Float32Array {
  if (name === "embed") return w.tokenEmbedding;
  if (name === "classifier") return w.classifier;
  if (name === "final_norm") return w.finalNorm;
  const [l, part] = name.split(".");
  const layer = w.layers[Number(l)];
  if (part === "attn_norm") return layer.attnNorm;
  if (part === "ffn_norm") return layer.ffnNorm;
  return layer[LLAMA2C_WEIGHT[part as TargetModule]];
}

/** Weights already in memory (a llama2.c checkpoint, a test model) as a source of F32 rows. */
export function hostSource(
  config: LlamaConfig,
  weights: LlamaWeights,
  description = "weights in memory",
): LlamaSource {
  return {
    config,
    description,
    dtype: () => "F32",
    origin: (name) => `${description}: ${name}`,
    readRows(name, start, count) {
      const [rows, cols] = tensorShape(config, name);
      if (start < 0 || count < 0 || start + count > rows) {
        throw new RangeError(`${description}: rows [${start}, ${start + count}) of ${name}`);
      }
      const values = hostTensor(weights, name).slice(start * cols, (start + count) * cols);
      return Promise.resolve({ dtype: "F32", bytes: new Uint8Array(values.buffer) });
    },
    close() {},
  };
}

/**
 * Every tensor of a source widened to f32 in host memory (the float64 reference and tests; the GPU
 * model never does this). Non-finite values are refused with the tensor's origin.
 */
export async function readAllWeights(source: LlamaSource): Promise<LlamaWeights> {
  const c = source.config;
  const get = async (name: LlamaTensorName) => {
    const [rows] = tensorShape(c, name);
    const raw = await source.readRows(name, 0, rows);
    const t = decodeToF32(raw.bytes, raw.dtype);
    for (let i = 0; i < t.length; i++) {
      if (!Number.isFinite(t[i])) {
        throw new Error(`${source.origin(name)}[${i}] is ${t[i]} (corrupt weights)`);
      }
    }
    return t;
  };
  const layers = [];
  for (let l = 0; l < c.layers; l++) {
    layers.push({
      attnNorm: await get(`${l}.attn_norm`),
      wq: await get(`${l}.q`),
      wk: await get(`${l}.k`),
      wv: await get(`${l}.v`),
      wo: await get(`${l}.o`),
      ffnNorm: await get(`${l}.ffn_norm`),
      w1: await get(`${l}.gate`),
      w2: await get(`${l}.down`),
      w3: await get(`${l}.up`),
    });
  }
  const tokenEmbedding = await get("embed");
  return {
    tokenEmbedding,
    layers,
    finalNorm: await get("final_norm"),
    classifier: c.sharedClassifier ? tokenEmbedding : await get("classifier"),
  };
}
