import assert from "node:assert/strict";
import { testRuntime } from "../kernels/testing/mod.ts";
import { gaussianArray } from "../kernels/cpu/random.ts";
import { kronMaterializeCpu } from "../kernels/adapters/kron_cpu.ts";
import { adaptersForBudget, fitTarget } from "./expressiveness.ts";

Deno.test("expressiveness: budgets are respected and every family is sized", () => {
  for (const budget of [256, 1024]) {
    const list = adaptersForBudget(32, budget);
    assert.ok(
      list.every((a) => a.params <= budget),
      JSON.stringify(list.map((a) => [a.family, a.params])),
    );
    const families = new Set(list.map((a) => a.family));
    for (const f of ["LoRA", "DoRA", "MoKA", "MoKA_s", "KronA", "LoKr"]) {
      assert.ok(families.has(f), `${f} missing at budget ${budget}`);
    }
  }
});

Deno.test("expressiveness: GPU fits drive the error down; a Kronecker target suits KronA", async () => {
  const rt = await testRuntime();
  const d = 16;
  const w0 = gaussianArray(d * d, 1, 0.25);
  // Target: exactly one (4×4)⊗(4×4) product, full rank 16.
  const t64 = new Float64Array(d * d);
  kronMaterializeCpu(
    Float64Array.from(gaussianArray(16, 2)),
    Float64Array.from(gaussianArray(16, 3)),
    { ma: 4, na: 4, mb: 4, nb: 4 },
    0.25,
    t64,
  );
  const target = Float32Array.from(t64);
  const list = adaptersForBudget(d, 64);
  const krona = list.find((a) => a.family === "KronA")!;
  const lora = list.find((a) => a.family === "LoRA")!;
  assert.deepEqual(krona.config, { kind: "krona", a: [4, 4], scale: 1, zeroInit: "A" });
  const options = { steps: 150, lr: 0.05, seed: 1 };
  const k = await fitTarget(rt, krona, w0, target, d, options);
  const l = await fitTarget(rt, lora, w0, target, d, options);
  assert.ok(k.curve[0][1] > 0.99, "ΔW = 0 at step 0: error starts at 1");
  assert.ok(k.relError < 0.05, `KronA fits a Kronecker target: ${k.relError}`);
  // LoRA r=2 cannot: a rank-16 target keeps most of its energy out of reach.
  assert.ok(l.relError > 0.5 && l.relError < 1, `LoRA r=2 on a rank-16 target: ${l.relError}`);
});
