import assert from "node:assert/strict";
import { LLAMA2_7B, LLAMA3_8B, STORIES_260K } from "../llama_shapes.ts";
import { countTrainableParams } from "./count.ts";
import { createAdapter } from "./registry.ts";

const QKVUD = ["q", "k", "v", "up", "down"];

Deno.test("count: LoRA r=32 on q,k,v,up,down of LLaMA3-8B is 56,623,104 (PAPER.md check)", () => {
  assert.equal(
    countTrainableParams(LLAMA3_8B, QKVUD, { kind: "lora", r: 32, alpha: 64 }).total,
    56_623_104,
  );
  // PEFT-style names count the same.
  assert.equal(
    countTrainableParams(LLAMA3_8B, ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], {
      kind: "lora",
      r: 32,
      alpha: 64,
    }).total,
    56_623_104,
  );
  // LLaMA2-7B (no GQA): 32 layers × 32 × (3·8192 + 2·15104).
  assert.equal(
    countTrainableParams(LLAMA2_7B, QKVUD, { kind: "lora", r: 32, alpha: 64 }).total,
    32 * 32 * (3 * 8192 + 2 * 15104),
  );
  // DoRA adds the magnitude vector: dOut per module.
  const dora = countTrainableParams(LLAMA3_8B, QKVUD, { kind: "dora", r: 32, alpha: 64 });
  assert.equal(dora.total, 56_623_104 + 32 * (4096 + 1024 + 1024 + 14336 + 4096));
});

Deno.test("count: the calculator agrees with instantiated adapters", () => {
  const configs = [
    { kind: "moka", components: [[4, 4], [2, 4], [4, 2]] },
    { kind: "moka", components: [[4, 4], [2, 2]], identityA: true, zeroInit: "B" },
    { kind: "moka", components: [[4, 4]], gate: "frozen" },
    { kind: "krona", a: [4, 4] },
    { kind: "lokr", r: 4, alpha: 4, decomposeBoth: true },
    { kind: "lora", r: 4, alpha: 8 },
    { kind: "dora", r: 4, alpha: 8 },
  ];
  for (const config of configs) {
    const count = countTrainableParams(
      STORIES_260K,
      ["q", "k", "v", "o", "gate", "up", "down"],
      config,
    );
    let manual = 0;
    for (
      const [dIn, dOut] of [[64, 64], [64, 32], [64, 32], [64, 64], [64, 172], [64, 172], [172, 64]]
    ) {
      manual += createAdapter(config, dIn, dOut, 1, new Float32Array(dIn * dOut).fill(1))
        .trainableParams();
    }
    assert.equal(count.total, manual * 5, JSON.stringify(config));
  }
  assert.throws(
    () => countTrainableParams(LLAMA3_8B, ["qq"], { kind: "lora", r: 1, alpha: 1 }),
    /unknown target module "qq"/,
  );
  assert.throws(
    () => countTrainableParams(LLAMA3_8B, ["up"], { kind: "moka", components: [[3, 3]] }),
    /llama3-8b up \(14336×4096\)/,
  );
});
