/**
 * MoKA configuration: ΔW = s·Σᵢ softmax(g)ᵢ·(Aᵢ ⊗ Bᵢ) (arXiv 2508.03527). Items the paper
 * leaves open (static gate, which factor starts at zero, MoKA_s's identity factor) are options.
 */
import { z } from "../../../deps/zod.ts";
import type { Same, Schema } from "../../schema.ts";
import { checkKronShape, type KronShape } from "../../../kernels/adapters/kron_cpu.ts";

const size = z.number().int().positive();

const MokaConfigSchemaZod = z.object({
  kind: z.literal("moka"),
  /**
   * Shape [ma, na] of each component's A factor; B is then (dOut/ma) × (dIn/na). Different
   * shapes per component are MoKA's "rank flexibility".
   */
  components: z.array(z.tuple([size, size])).min(1).max(64),
  /** Global scale s. */
  scale: z.number().finite().default(1),
  /** "learned": gate logits g are trained (init 0 = uniform); "frozen": fixed uniform mixture. */
  gate: z.enum(["learned", "frozen"]).default("learned"),
  /** MoKA_s: every Aᵢ is the identity (ma = na), a block-diagonal update Σ αᵢ (I ⊗ Bᵢ). */
  identityA: z.boolean().default(false),
  /** Which factor starts at zero so ΔW = 0 at step 0 (the other is Kaiming-uniform). */
  zeroInit: z.enum(["A", "B"]).default("A"),
}).strict().superRefine((c, ctx) => {
  if (c.identityA) {
    c.components.forEach(([ma, na], i) => {
      if (ma !== na) {
        ctx.addIssue({
          code: "custom",
          path: ["components", i],
          message: `MoKA_s needs square identity factors, got ${ma}×${na}`,
        });
      }
    });
    if (c.zeroInit !== "B") {
      ctx.addIssue({
        code: "custom",
        path: ["zeroInit"],
        message: 'MoKA_s fixes A = I, so the zero-initialised factor must be "B"',
      });
    }
  }
});

/** Validated MoKA configuration (defaults filled in). */
export interface MokaConfig {
  /** Tag. */
  kind: "moka";
  /** A's shape [ma, na] per component. */
  components: [number, number][];
  /** Global scale s. */
  scale: number;
  /** Learned or frozen gate logits. */
  gate: "learned" | "frozen";
  /** MoKA_s: every A is the identity. */
  identityA: boolean;
  /** The factor initialised to zero. */
  zeroInit: "A" | "B";
}

/** zod schema of {@link MokaConfig} (errors name the field). */
export const MokaConfigSchema: Schema<MokaConfig> = MokaConfigSchemaZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<MokaConfig, z.output<typeof MokaConfigSchemaZod>> = true;

/** The zod object itself, for unions. */
export const MokaConfigSchemaObject = MokaConfigSchemaZod;

/** The factor shapes of every component on a dIn → dOut layer (errors name the component). */
export function mokaShapes(config: MokaConfig, dIn: number, dOut: number): KronShape[] {
  return config.components.map(([ma, na], i) => {
    if (dOut % ma !== 0 || dIn % na !== 0) {
      throw new RangeError(
        `moka component ${i}: A ${ma}×${na} does not divide the ${dOut}×${dIn} layer`,
      );
    }
    const s = { ma, na, mb: dOut / ma, nb: dIn / na };
    checkKronShape(s, dIn, dOut, `moka component ${i}`);
    return s;
  });
}

/** Trainable parameters of MoKA on one dIn → dOut layer. */
export function mokaTrainableParams(config: MokaConfig, dIn: number, dOut: number): number {
  const factors = mokaShapes(config, dIn, dOut).reduce(
    (n, s) => n + (config.identityA ? 0 : s.ma * s.na) + s.mb * s.nb,
    0,
  );
  return factors + (config.gate === "learned" ? config.components.length : 0);
}
