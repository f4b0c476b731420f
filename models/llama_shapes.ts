/**
 * Shapes of LLaMA-family models, enough to size adapters without loading weights. Values are
 * those of the published `config.json` files (LLaMA-2-7B: meta-llama/Llama-2-7b-hf; LLaMA-3-8B:
 * meta-llama/Meta-Llama-3-8B) and of llama2.c's stories260K header.
 */
import { z } from "../deps/zod.ts";
import type { Same, Schema } from "./schema.ts";

const LlamaShapeSchemaZod = z.object({
  name: z.string(),
  /** hidden_size (dim). */
  hidden: z.number().int().positive(),
  /** intermediate_size of the SwiGLU MLP. */
  intermediate: z.number().int().positive(),
  /** num_hidden_layers. */
  layers: z.number().int().positive(),
  /** num_attention_heads. */
  heads: z.number().int().positive(),
  /** num_key_value_heads (grouped-query attention when < heads). */
  kvHeads: z.number().int().positive(),
  /** vocab_size. */
  vocab: z.number().int().positive(),
}).strict().refine((s) => s.hidden % s.heads === 0 && s.heads % s.kvHeads === 0, {
  message: "hidden must divide by heads and heads by kvHeads",
});

/** A LLaMA model's dimensions. */
export interface LlamaShape {
  /** Name. */
  name: string;
  /** hidden_size. */
  hidden: number;
  /** intermediate_size. */
  intermediate: number;
  /** num_hidden_layers. */
  layers: number;
  /** num_attention_heads. */
  heads: number;
  /** num_key_value_heads. */
  kvHeads: number;
  /** vocab_size. */
  vocab: number;
}

/** zod schema of {@link LlamaShape} (errors name the field). */
export const LlamaShapeSchema: Schema<LlamaShape> = LlamaShapeSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<LlamaShape, z.output<typeof LlamaShapeSchemaZod>> = true;

/** The zod object itself, for unions. */
export const LlamaShapeSchemaObject = LlamaShapeSchemaZod;

/** LLaMA-2-7B. */
export const LLAMA2_7B: LlamaShape = {
  name: "llama2-7b",
  hidden: 4096,
  intermediate: 11008,
  layers: 32,
  heads: 32,
  kvHeads: 32,
  vocab: 32000,
};

/** LLaMA-3-8B. */
export const LLAMA3_8B: LlamaShape = {
  name: "llama3-8b",
  hidden: 4096,
  intermediate: 14336,
  layers: 32,
  heads: 32,
  kvHeads: 8,
  vocab: 128256,
};

/** TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T). */
export const TINYLLAMA_1B: LlamaShape = {
  name: "tinyllama-1.1b",
  hidden: 2048,
  intermediate: 5632,
  layers: 22,
  heads: 32,
  kvHeads: 4,
  vocab: 32000,
};

/** A 0.2B model of LLaMA-2's layout: the smallest shape whose buffers outgrow 128 MiB. */
export const MID_0_2B: LlamaShape = {
  name: "mid-0.2b",
  hidden: 1024,
  intermediate: 2816,
  layers: 8,
  heads: 16,
  kvHeads: 16,
  vocab: 32000,
};

/** llama2.c's TinyStories stories260K (the embedded default model). */
export const STORIES_260K: LlamaShape = {
  name: "stories260K",
  hidden: 64,
  intermediate: 172,
  layers: 5,
  heads: 8,
  kvHeads: 4,
  vocab: 512,
};

/** Built-in shapes by name. */
export const LLAMA_SHAPES: Record<string, LlamaShape> = {
  [LLAMA2_7B.name]: LLAMA2_7B,
  [LLAMA3_8B.name]: LLAMA3_8B,
  [TINYLLAMA_1B.name]: TINYLLAMA_1B,
  [MID_0_2B.name]: MID_0_2B,
  [STORIES_260K.name]: STORIES_260K,
};

/** The linear layers of a LLaMA block adapters can target (PEFT's q_proj, ... without `_proj`). */
export const TARGET_MODULES = ["q", "k", "v", "o", "gate", "up", "down"] as const;

/** One of {@link TARGET_MODULES}. */
export type TargetModule = typeof TARGET_MODULES[number];

/** Accept `q`, `q_proj`, `wq` alike; throw naming the valid names otherwise. */
export function parseTargetModule(name: string): TargetModule {
  const bare = name.replace(/_proj$/, "").replace(/^w(?=[qkvo]$)/, "")
    .replace(/^w1$/, "gate").replace(/^w3$/, "up").replace(/^w2$/, "down");
  if ((TARGET_MODULES as readonly string[]).includes(bare)) return bare as TargetModule;
  throw new RangeError(`unknown target module "${name}"; use ${TARGET_MODULES.join(", ")}`);
}

/** The widths a block's linear layers follow (a LLaMA config has them). */
export interface BlockWidths {
  /** Model width. */
  dim: number;
  /** SwiGLU hidden width. */
  hiddenDim: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
}

/** The block widths of a named shape. */
export function shapeWidths(shape: LlamaShape): BlockWidths {
  return {
    dim: shape.hidden,
    hiddenDim: shape.intermediate,
    heads: shape.heads,
    kvHeads: shape.kvHeads,
  };
}

/** [dIn, dOut] of a block's linear layer (the one place these widths are written down). */
export function linearDims(c: BlockWidths, m: TargetModule): [number, number] {
  const kv = (c.dim / c.heads) * c.kvHeads;
  switch (m) {
    case "q":
    case "o":
      return [c.dim, c.dim];
    case "k":
    case "v":
      return [c.dim, kv];
    case "gate":
    case "up":
      return [c.dim, c.hiddenDim];
    case "down":
      return [c.hiddenDim, c.dim];
  }
}
