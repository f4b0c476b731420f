/**
 * DoRA (arXiv 2402.09353) as PEFT implements it for Linear layers: y = (m/‖W + s·B·A‖)·(W·x +
 * s·B·A·x), the norm per output feature (row of W [dOut, dIn]) and, by default, detached from the
 * graph as the paper's §4.3 and PEFT do. m starts at ‖W‖ so the layer is unchanged at step 0.
 */
import { z } from "../../../deps/zod.ts";
import type { Same, Schema } from "../../schema.ts";
import { LOW_RANK_FIELDS } from "../lora/config.ts";

const DoraConfigSchemaZod = z.object({
  kind: z.literal("dora"),
  ...LOW_RANK_FIELDS,
  /** Treat ‖W + ΔW‖ as a constant in the backward pass (PEFT's default). */
  detachNorm: z.boolean().default(true),
}).strict();

/** Validated DoRA configuration. */
export interface DoraConfig {
  /** Tag. */
  kind: "dora";
  /** Rank. */
  r: number;
  /** α (scale α/r, or α/√r with rslora). */
  alpha: number;
  /** Stop the gradient through the weight norm (PEFT default). */
  detachNorm: boolean;
  /** A's init. */
  init: "kaiming" | "gaussian";
  /**
   * Input dropout in training, as NVlabs/DoRA applies it: y = W·x + (c − 1)·W·drop(x) +
   * c·s·B·A·drop(x) with c = m/‖W + s·B·A‖ (the plain form when no dropout applies).
   */
  dropout: number;
  /** Rank-stabilised scale α/√r. */
  rslora: boolean;
}

/** zod schema of {@link DoraConfig} (errors name the field). */
export const DoraConfigSchema: Schema<DoraConfig> = DoraConfigSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<DoraConfig, z.output<typeof DoraConfigSchemaZod>> = true;

/** The zod object itself, for unions. */
export const DoraConfigSchemaObject = DoraConfigSchemaZod;

/** r·(dIn + dOut) + dOut (the magnitude vector). */
export function doraTrainableParams(config: { r: number }, dIn: number, dOut: number): number {
  return config.r * (dIn + dOut) + dOut;
}
