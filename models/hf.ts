/**
 * Hugging Face LLaMA checkpoints: a folder with `config.json` and `model.safetensors`, or shards
 * listed by `model.safetensors.index.json` (F32, F16 or BF16 tensors, widened to f32).
 *
 * HF stores wq/wk with the rows of each head permuted for its `rotate_half` RoPE (pairs (i, i+hs/2));
 * this kit rotates adjacent pairs (2i, 2i+1) as Meta's and llama2.c's code do, so the loader undoes
 * the permutation: Meta row 2i + a of a head is HF row a·hs/2 + i.
 * Every tensor's presence, dtype and shape is checked against config.json before any is decoded.
 */
import { z } from "zod";
import type { Llama2cCheckpoint, Llama2cLayer } from "./llama2c.ts";
import type { LlamaConfig } from "./llama/config.ts";
import { parseSafetensors, type SafetensorsFile } from "./safetensors.ts";

const HfConfigSchema = z.object({
  model_type: z.literal("llama").optional(),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().optional(),
  vocab_size: z.number().int().positive(),
  max_position_embeddings: z.number().int().positive().default(2048),
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

/**
 * HF (rotate_half) → interleaved row order for a q or k weight [heads·hs, cols]; `inverse` goes
 * the other way (to write HF-layout files).
 */
export function permuteRope(
  w: Float32Array,
  heads: number,
  hs: number,
  cols: number,
  inverse = false,
): Float32Array {
  const out = new Float32Array(w.length);
  const half = hs / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let a = 0; a < 2; a++) {
        const meta = h * hs + 2 * i + a;
        const hf = h * hs + a * half + i;
        const [from, to] = inverse ? [meta, hf] : [hf, meta];
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** Load a HF LLaMA folder (single file or shards), fully validated before decoding. */
export async function loadHfLlama(
  dir: string,
): Promise<{ config: LlamaConfig; weights: Llama2cCheckpoint }> {
  const config = parseHfConfig(await Deno.readTextFile(`${dir}/config.json`), `${dir}/config.json`);
  const shapes = hfTensorShapes(config);
  // name → parsed shard
  const files = new Map<string, SafetensorsFile>();
  const owner = new Map<string, SafetensorsFile>();
  let indexText: string | null = null;
  try {
    indexText = await Deno.readTextFile(`${dir}/model.safetensors.index.json`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (indexText !== null) {
    const index = z.object({ weight_map: z.record(z.string(), z.string()) }).loose().safeParse(
      JSON.parse(indexText),
    );
    if (!index.success) throw new Error(`${dir}/model.safetensors.index.json: no valid weight_map`);
    for (const [name, file] of Object.entries(index.data.weight_map)) {
      if (file.includes("/") || file.includes("..")) {
        throw new Error(`${dir}: shard name "${file}" escapes the folder`);
      }
      if (!files.has(file)) {
        files.set(file, parseSafetensors(await Deno.readFile(`${dir}/${file}`), `${dir}/${file}`));
      }
      owner.set(name, files.get(file)!);
    }
  } else {
    const f = parseSafetensors(
      await Deno.readFile(`${dir}/model.safetensors`),
      `${dir}/model.safetensors`,
    );
    for (const name of f.entries.keys()) owner.set(name, f);
  }
  for (const [name, shape] of shapes) {
    const f = owner.get(name);
    const entry = f?.entries.get(name);
    if (!f || !entry) throw new Error(`${dir}: missing tensor ${name}`);
    if (entry.shape.join(",") !== shape.join(",")) {
      throw new Error(`${dir}: ${name} has shape [${entry.shape}], config.json implies [${shape}]`);
    }
  }
  const get = (name: string) => {
    const t = owner.get(name)!.tensor(name);
    for (let i = 0; i < t.length; i++) {
      if (!Number.isFinite(t[i])) {
        throw new Error(`${dir}: ${name}[${i}] is ${t[i]} (corrupt weights)`);
      }
    }
    return t;
  };
  const hs = config.dim / config.heads;
  const layers: Llama2cLayer[] = Array.from({ length: config.layers }, (_, l) => {
    const p = `model.layers.${l}`;
    return {
      attnNorm: get(`${p}.input_layernorm.weight`),
      wq: permuteRope(get(`${p}.self_attn.q_proj.weight`), config.heads, hs, config.dim),
      wk: permuteRope(get(`${p}.self_attn.k_proj.weight`), config.kvHeads, hs, config.dim),
      wv: get(`${p}.self_attn.v_proj.weight`),
      wo: get(`${p}.self_attn.o_proj.weight`),
      ffnNorm: get(`${p}.post_attention_layernorm.weight`),
      w1: get(`${p}.mlp.gate_proj.weight`),
      w2: get(`${p}.mlp.down_proj.weight`),
      w3: get(`${p}.mlp.up_proj.weight`),
    };
  });
  const tokenEmbedding = get("model.embed_tokens.weight");
  return {
    config,
    weights: {
      config,
      tokenEmbedding,
      layers,
      finalNorm: get("model.norm.weight"),
      classifier: config.sharedClassifier ? tokenEmbedding : get("lm_head.weight"),
    },
  };
}
