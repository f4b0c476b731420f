/**
 * LoKr as HF PEFT defines it for a Linear layer: ΔW = (α/r)·(w1 ⊗ w2) with
 * (out_l, out_k) = factorization(dOut), (in_m, in_n) = factorization(dIn), w1 [out_l, in_m],
 * w2 [out_k, in_n]; w2 is low-rank w2_a·w2_b when r < max(out_k, in_n)/2, and w1 likewise when
 * `decomposeBoth` and r < max(out_l, in_m)/2.
 */
import { z } from "../../../deps/zod.ts";
import type { Same, Schema } from "../../schema.ts";

const LokrConfigSchemaZod = z.object({
  kind: z.literal("lokr"),
  /** Rank of the low-rank factors (also the denominator of the scale). */
  r: z.number().int().positive(),
  /** α: the scale is α/r. */
  alpha: z.number().finite(),
  /** Also decompose w1 when r is small enough. */
  decomposeBoth: z.boolean().default(false),
  /** PEFT's decompose_factor: -1 = factors near √dim, else this factor when it divides. */
  decomposeFactor: z.number().int().default(-1),
}).strict();

/** Validated LoKr configuration. */
export interface LokrConfig {
  /** Tag. */
  kind: "lokr";
  /** Rank of the low-rank factors. */
  r: number;
  /** α (scale α/r). */
  alpha: number;
  /** Also decompose w1. */
  decomposeBoth: boolean;
  /** PEFT's decompose_factor. */
  decomposeFactor: number;
}

/** zod schema of {@link LokrConfig} (errors name the field). */
export const LokrConfigSchema: Schema<LokrConfig> = LokrConfigSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<LokrConfig, z.output<typeof LokrConfigSchemaZod>> = true;

/** The zod object itself, for unions. */
export const LokrConfigSchemaObject = LokrConfigSchemaZod;

/**
 * PEFT/LyCORIS `factorization(dimension, factor)`: two numbers m ≤ n with m·n = dimension, m as
 * close to √dimension as the divisors allow (or m = factor when it divides).
 */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  const limit = factor === -1 ? dimension : factor;
  let m = 1;
  let n = dimension;
  const length = m + n;
  while (m < n) {
    let next = m + 1;
    while (dimension % next !== 0) next++;
    const nextN = dimension / next;
    if (next + nextN > length || next > limit) break;
    m = next;
    n = nextN;
  }
  return m > n ? [n, m] : [m, n];
}

/** The layout of a LoKr layer: factor shapes and which are low-rank. */
export interface LokrLayout {
  /** w1 is [outL, inM]. */
  outL: number;
  /** Columns of w1. */
  inM: number;
  /** w2 is [outK, inN]. */
  outK: number;
  /** Columns of w2. */
  inN: number;
  /** w1 stored whole (else w1_a [outL, r] · w1_b [r, inM]). */
  useW1: boolean;
  /** w2 stored whole (else w2_a [outK, r] · w2_b [r, inN]). */
  useW2: boolean;
}

/** PEFT's choice of shapes for a dIn → dOut layer. */
export function lokrLayout(config: LokrConfig, dIn: number, dOut: number): LokrLayout {
  const [inM, inN] = factorization(dIn, config.decomposeFactor);
  const [outL, outK] = factorization(dOut, config.decomposeFactor);
  return {
    outL,
    inM,
    outK,
    inN,
    useW1: !(config.decomposeBoth && config.r < Math.max(outL, inM) / 2),
    useW2: !(config.r < Math.max(outK, inN) / 2),
  };
}

/** Trainable parameters of LoKr on one layer. */
export function lokrTrainableParams(config: LokrConfig, dIn: number, dOut: number): number {
  const l = lokrLayout(config, dIn, dOut);
  const r = config.r;
  return (l.useW1 ? l.outL * l.inM : r * (l.outL + l.inM)) +
    (l.useW2 ? l.outK * l.inN : r * (l.outK + l.inN));
}
