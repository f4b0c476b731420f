import assert from "node:assert/strict";
import { loadLlama2c } from "../../llama2c.ts";
import { defaultModelPath } from "../../../testing/paths.ts";
import { fromLlama2c } from "../config.ts";
import { loadModelReference } from "../reference.ts";
import { CpuLlama } from "./model.ts";

Deno.test("cpu llama: stories260K teacher-forced logits and greedy ids equal reference.json", async () => {
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const model = new CpuLlama(fromLlama2c(ckpt.config), ckpt);
  const { logits } = model.forward(ref.teacherIds);
  let worst = 0;
  ref.teacherLogits.forEach((row, t) =>
    row.forEach((v, j) => worst = Math.max(worst, Math.abs(v - logits[t * 512 + j])))
  );
  assert.ok(worst < 1e-3, `max |Δlogit| = ${worst}`);
  assert.deepEqual(model.greedy([ref.bos], ref.greedyIds.length), ref.greedyIds);
});
