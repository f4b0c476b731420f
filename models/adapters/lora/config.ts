/** LoRA (Hu et al.; PEFT defaults): ΔW = (α/r)·B·A, A [r, dIn] Kaiming-uniform, B [dOut, r] zero. */
import { z } from "../../../deps/zod.ts";
import type { Same, Schema } from "../../schema.ts";

/** Fields LoRA and DoRA share (zod shape). */
export const LOW_RANK_FIELDS = {
  /** Rank. */
  r: z.number().int().positive(),
  /** α: the scale is α/r. */
  alpha: z.number().finite(),
  /** A's init: PEFT's default Kaiming-uniform, or "gaussian" (std 1/r). */
  init: z.enum(["kaiming", "gaussian"]).default("kaiming"),
  /** Dropout on the adapter's input during training (PEFT's lora_dropout). */
  dropout: z.number().min(0).lt(1).default(0),
  /** Rank-stabilised scale α/√r instead of α/r (PEFT's use_rslora). */
  rslora: z.boolean().default(false),
};

/** The adapter's scale: α/r, or α/√r with rsLoRA. */
export function lowRankScale(c: { alpha: number; r: number; rslora: boolean }): number {
  return c.alpha / (c.rslora ? Math.sqrt(c.r) : c.r);
}

const LoraConfigSchemaZod = z.object({
  kind: z.literal("lora"),
  ...LOW_RANK_FIELDS,
}).strict();

/** Validated LoRA configuration. */
export interface LoraConfig {
  /** Tag. */
  kind: "lora";
  /** Rank. */
  r: number;
  /** α (scale α/r, or α/√r with rslora). */
  alpha: number;
  /** Input dropout probability in training. */
  dropout: number;
  /** A's init. */
  init: "kaiming" | "gaussian";
  /** Rank-stabilised scale α/√r. */
  rslora: boolean;
}

/** zod schema of {@link LoraConfig} (errors name the field). */
export const LoraConfigSchema: Schema<LoraConfig> = LoraConfigSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<LoraConfig, z.output<typeof LoraConfigSchemaZod>> = true;

/** The zod object itself, for unions. */
export const LoraConfigSchemaObject = LoraConfigSchemaZod;

/** r·(dIn + dOut). */
export function loraTrainableParams(config: { r: number }, dIn: number, dOut: number): number {
  return config.r * (dIn + dOut);
}
