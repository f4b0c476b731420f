/** `reference.json` of the embedded model: expected greedy ids and teacher-forced logits. */
import { z } from "../../deps/zod.ts";

const ReferenceZod = z.object({
  greedy_from_bos: z.object({ ids: z.array(z.number().int().nonnegative()) }).loose(),
  teacher_forced: z.object({
    ids: z.array(z.number().int().nonnegative()),
    logits: z.array(z.array(z.number())),
  }).loose(),
  config: z.object({ bos: z.number().int() }).loose(),
}).loose();

/** What the tests compare with. */
export interface ModelReference {
  /** Ids generated greedily from BOS. */
  greedyIds: number[];
  /** Teacher-forced input ids. */
  teacherIds: number[];
  /** Their logits, one row per position. */
  teacherLogits: number[][];
  /** The BOS id. */
  bos: number;
}

/** Read and validate a reference.json (the error names the file and field). */
export async function loadModelReference(path: string): Promise<ModelReference> {
  const r = ReferenceZod.safeParse(JSON.parse(await Deno.readTextFile(path)));
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Error(`${path}: field ${i.path.join(".")}: ${i.message}`);
  }
  return {
    greedyIds: r.data.greedy_from_bos.ids,
    teacherIds: r.data.teacher_forced.ids,
    teacherLogits: r.data.teacher_forced.logits,
    bos: r.data.config.bos,
  };
}
