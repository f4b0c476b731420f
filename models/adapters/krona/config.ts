/** KronA (arXiv 2212.10650): one Kronecker product parallel to W, ΔW = s·(A ⊗ B). */
import { z } from "../../../deps/zod.ts";
import type { Same, Schema } from "../../schema.ts";
import { checkKronShape, type KronShape } from "../../../kernels/adapters/kron_cpu.ts";

const size = z.number().int().positive();

const KronaConfigSchemaZod = z.object({
  kind: z.literal("krona"),
  /** A's shape [ma, na]; B is (dOut/ma) × (dIn/na). */
  a: z.tuple([size, size]),
  /** Scale s. */
  scale: z.number().finite().default(1),
  /** The factor that starts at zero (ΔW = 0 at step 0). */
  zeroInit: z.enum(["A", "B"]).default("A"),
}).strict();

/** Validated KronA configuration. */
export interface KronaConfig {
  /** Tag. */
  kind: "krona";
  /** A's shape [ma, na]. */
  a: [number, number];
  /** Scale s. */
  scale: number;
  /** The factor initialised to zero. */
  zeroInit: "A" | "B";
}

/** zod schema of {@link KronaConfig} (errors name the field). */
export const KronaConfigSchema: Schema<KronaConfig> = KronaConfigSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<KronaConfig, z.output<typeof KronaConfigSchemaZod>> = true;

/** The zod object itself, for unions. */
export const KronaConfigSchemaObject = KronaConfigSchemaZod;

/** The factor shapes on a dIn → dOut layer. */
export function kronaShape(config: KronaConfig, dIn: number, dOut: number): KronShape {
  const [ma, na] = config.a;
  if (dOut % ma !== 0 || dIn % na !== 0) {
    throw new RangeError(`krona: A ${ma}×${na} does not divide the ${dOut}×${dIn} layer`);
  }
  const s = { ma, na, mb: dOut / ma, nb: dIn / na };
  checkKronShape(s, dIn, dOut, "krona");
  return s;
}

/** Trainable parameters of KronA on one layer. */
export function kronaTrainableParams(config: KronaConfig, dIn: number, dOut: number): number {
  const s = kronaShape(config, dIn, dOut);
  return s.ma * s.na + s.mb * s.nb;
}
