/**
 * Hugging Face LLaMA checkpoints: a folder with `config.json` and `model.safetensors`, or shards
 * listed by `model.safetensors.index.json` (F32, F16 or BF16 tensors), read at tensor offsets.
 *
 * HF stores wq/wk with the rows of each head in its `rotate_half` RoPE order (pairs (i, i+hs/2)).
 * The kit computes in that layout (`ropeLayout: "half"`) rather than permuting rows back to Meta's
 * interleaved order, so q/k rows, and adapters trained on them, keep the file's basis: a PEFT
 * adapter or a merged export lines up with `q_proj`/`k_proj` row for row.
 * Every tensor's presence, dtype and shape is checked against config.json before any is read.
 */
import { z } from "../deps/zod.ts";
import type { LlamaWeights } from "./llama/weights.ts";
import type { LlamaConfig } from "./llama/config.ts";
import { type LlamaSource, type LlamaTensorName, readAllWeights } from "./llama/source.ts";
import { missingSays, SafetensorsReader } from "./safetensors.ts";

// Maxima well above any released LLaMA, so a typo or a hostile value (num_hidden_layers: 1e8)
// is refused by name before anything is sized from it.
const HfConfigSchema = z.object({
  model_type: z.literal("llama").optional(),
  hidden_size: z.number().int().positive().max(65536),
  intermediate_size: z.number().int().positive().max(2 ** 20),
  num_hidden_layers: z.number().int().positive().max(1024),
  num_attention_heads: z.number().int().positive().max(1024),
  num_key_value_heads: z.number().int().positive().max(1024).optional(),
  vocab_size: z.number().int().positive().max(2 ** 22),
  max_position_embeddings: z.number().int().positive().max(2 ** 22).default(2048),
  rope_theta: z.number().positive().default(10000),
  rms_norm_eps: z.number().positive().default(1e-6),
  tie_word_embeddings: z.boolean().default(false),
  hidden_act: z.literal("silu").default("silu"),
  rope_scaling: z.null().optional(),
}).loose();

/** Parse and validate `config.json` text into the kit's config; `source` names the file. */
export function parseHfConfig(text: string, source = "config.json"): LlamaConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not JSON (${(e as Error).message})`);
  }
  const r = HfConfigSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Error(`${source}: field ${i.path.join(".")}: ${i.message}`);
  }
  const c = r.data;
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  if (c.hidden_size % heads || heads % kvHeads || (c.hidden_size / heads) % 2) {
    throw new Error(
      `${source}: hidden_size ${c.hidden_size}, ${heads} heads, ${kvHeads} KV heads do not fit`,
    );
  }
  return {
    dim: c.hidden_size,
    hiddenDim: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads,
    vocab: c.vocab_size,
    seqLen: c.max_position_embeddings,
    sharedClassifier: c.tie_word_embeddings,
    ropeTheta: c.rope_theta,
    normEps: c.rms_norm_eps,
    ropeLayout: "half",
  };
}

/**
 * A config.json for `c` with the fields Hugging Face's LLaMA config has; `specials` places
 * <s>/</s> (`llama2`: ids 1 and 2; `llama3`: the first two of the last 256 ids).
 */
export function hfConfigJson(
  c: LlamaConfig,
  specials: "llama2" | "llama3",
  dtype: string,
): Record<string, unknown> {
  const [bos, eos] = specials === "llama2" ? [1, 2] : [c.vocab - 256, c.vocab - 255];
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    vocab_size: c.vocab,
    max_position_embeddings: c.seqLen,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.normEps,
    tie_word_embeddings: c.sharedClassifier,
    hidden_act: "silu",
    bos_token_id: bos,
    eos_token_id: eos,
    torch_dtype: dtype === "BF16" ? "bfloat16" : dtype === "F16" ? "float16" : "float32",
  };
}

/** The HF tensor names and [rows, cols] shapes a config implies. */
export function hfTensorShapes(c: LlamaConfig): Map<string, number[]> {
  const kv = (c.dim / c.heads) * c.kvHeads;
  const m = new Map<string, number[]>([["model.embed_tokens.weight", [c.vocab, c.dim]], [
    "model.norm.weight",
    [c.dim],
  ]]);
  if (!c.sharedClassifier) m.set("lm_head.weight", [c.vocab, c.dim]);
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    m.set(`${p}.input_layernorm.weight`, [c.dim]);
    m.set(`${p}.post_attention_layernorm.weight`, [c.dim]);
    m.set(`${p}.self_attn.q_proj.weight`, [c.dim, c.dim]);
    m.set(`${p}.self_attn.k_proj.weight`, [kv, c.dim]);
    m.set(`${p}.self_attn.v_proj.weight`, [kv, c.dim]);
    m.set(`${p}.self_attn.o_proj.weight`, [c.dim, c.dim]);
    m.set(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim]);
    m.set(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim]);
    m.set(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]);
  }
  return m;
}

/** How many tensors {@link hfTensorShapes} lists for `c`, without listing them. */
export function hfTensorCount(c: LlamaConfig): number {
  return 2 + (c.sharedClassifier ? 0 : 1) + 9 * c.layers;
}

/**
 * For each interleaved-order row of `heads` heads of size `hs`, the HF (rotate_half) row it comes
 * from: interleaved row 2i + a of a head is HF row a·hs/2 + i.
 */
function ropeRowSource(heads: number, hs: number): Int32Array {
  const from = new Int32Array(heads * hs);
  const half = hs / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let a = 0; a < 2; a++) from[h * hs + 2 * i + a] = h * hs + a * half + i;
    }
  }
  return from;
}

/**
 * HF (rotate_half) → interleaved row order for a q or k weight [heads·hs, cols]; `inverse` goes
 * the other way. Converting a Meta/llama2.c checkpoint to HF files (or back) permutes q and k
 * this way; the model is the same function once its `ropeLayout` follows.
 */
export function permuteRope(
  w: Float32Array,
  heads: number,
  hs: number,
  cols: number,
  inverse = false,
): Float32Array {
  const out = new Float32Array(w.length);
  ropeRowSource(heads, hs).forEach((hf, meta) => {
    const [from, to] = inverse ? [meta, hf] : [hf, meta];
    out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
  });
  return out;
}

/** The Hugging Face name of one of the model's tensors. */
export function hfTensorName(name: LlamaTensorName, c: LlamaConfig): string {
  if (name === "embed") return "model.embed_tokens.weight";
  if (name === "classifier") {
    return c.sharedClassifier ? "model.embed_tokens.weight" : "lm_head.weight";
  }
  if (name === "final_norm") return "model.norm.weight";
  const [l, part] = name.split(".");
  const p = `model.layers.${l}`;
  switch (part) {
    case "attn_norm":
      return `${p}.input_layernorm.weight`;
    case "ffn_norm":
      return `${p}.post_attention_layernorm.weight`;
    case "q":
    case "k":
    case "v":
    case "o":
      return `${p}.self_attn.${part}_proj.weight`;
    default:
      return `${p}.mlp.${part}_proj.weight`;
  }
}

const IndexSchema = z.object({
  metadata: z.object({ total_size: z.number().int().nonnegative().optional() }).loose()
    .optional(),
  weight_map: z.record(z.string(), z.string().min(1)),
}).loose();

async function readJson(path: string): Promise<unknown> {
  const text = await Deno.readTextFile(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not JSON (${(e as Error).message})`);
  }
}

/** `model.safetensors.index.json`'s parsed JSON validated; errors name `path` and the field. */
function parseIndex(json: unknown, path: string): Record<string, string> {
  const r = IndexSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Error(`${path}: field ${i.path.join(".") || "(root)"}: ${i.message}`);
  }
  for (const file of Object.values(r.data.weight_map)) {
    if (file.includes("/") || file.includes("\\") || file.startsWith(".")) {
      throw new Error(`${path}: shard name "${file}" escapes the folder`);
    }
  }
  return r.data.weight_map;
}

/**
 * Open a HF LLaMA folder (`config.json` and `model.safetensors`, or shards listed by
 * `model.safetensors.index.json`) for streaming: only headers are read, and every tensor the
 * config implies is checked for presence and shape before anything else. Rows are read as
 * stored; the config says `ropeLayout: "half"`.
 */
export async function openHfSource(dir: string): Promise<LlamaSource> {
  const config = parseHfConfig(
    await missingSays(
      Deno.readTextFile(`${dir}/config.json`),
      `${dir}/config.json`,
      "every Hugging Face model folder has one",
    ),
    `${dir}/config.json`,
  );
  const readers = new Map<string, SafetensorsReader>();
  const owner = new Map<string, SafetensorsReader>();
  const close = () => {
    for (const r of readers.values()) r.close();
  };
  try {
    let indexJson: unknown = null;
    try {
      indexJson = await readJson(`${dir}/model.safetensors.index.json`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (indexJson !== null) {
      const indexPath = `${dir}/model.safetensors.index.json`;
      for (const [name, file] of Object.entries(parseIndex(indexJson, indexPath))) {
        if (!readers.has(file)) {
          const path = `${dir}/${file}`;
          readers.set(
            file,
            await missingSays(
              SafetensorsReader.open(path),
              path,
              "named by model.safetensors.index.json",
            ),
          );
        }
        const reader = readers.get(file)!;
        if (!reader.entries.has(name)) {
          throw new Error(`${reader.path}: the index lists "${name}" here but the shard lacks it`);
        }
        owner.set(name, reader);
      }
    } else {
      const reader = await missingSays(
        SafetensorsReader.open(`${dir}/model.safetensors`),
        `${dir}/model.safetensors`,
        "no model.safetensors.index.json either",
      );
      readers.set("model.safetensors", reader);
      for (const name of reader.entries.keys()) owner.set(name, reader);
    }
    for (const [name, shape] of hfTensorShapes(config)) {
      const entry = owner.get(name)?.entries.get(name);
      if (!entry) {
        throw new Error(
          `${dir}: missing tensor ${name} (config.json implies ${hfTensorCount(config)} ` +
            `tensors, the safetensors files hold ${owner.size})`,
        );
      }
      if (entry.shape.join(",") !== shape.join(",")) {
        throw new Error(
          `${
            owner.get(name)!.path
          }: ${name} has shape [${entry.shape}], config.json implies [${shape}]`,
        );
      }
    }
  } catch (e) {
    close();
    throw e;
  }
  const reader = (name: LlamaTensorName) => owner.get(hfTensorName(name, config))!;
  return {
    config,
    description: dir,
    dtype: (name) => reader(name).entry(hfTensorName(name, config)).dtype,
    origin: (name) => `${reader(name).path}: ${hfTensorName(name, config)}`,
    async readRows(name, start, count) {
      const hfName = hfTensorName(name, config);
      const r = reader(name);
      if (name.endsWith("norm")) return await r.readRows(hfName); // 1-D: one row of [1, dim]
      return await r.readRows(hfName, start, count);
    },
    close,
  };
}

/**
 * Load a HF LLaMA folder into host memory, widened to f32 (the float64 reference model and tests
 * use this; the GPU model streams from {@link openHfSource} instead).
 */
export async function loadHfLlama(
  dir: string,
): Promise<{ config: LlamaConfig; weights: LlamaWeights }> {
  const source = await openHfSource(dir);
  try {
    return { config: source.config, weights: await readAllWeights(source) };
  } finally {
    source.close();
  }
}
