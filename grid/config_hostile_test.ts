import assert from "node:assert/strict";
import { parseGridConfig, profile } from "./config.ts";

Deno.test("grid config hostile: a negative rank names the file and the field once, in one line", () => {
  const base = profile("smoke") as Record<string, unknown>;
  const adapters = base.adapters as Record<string, unknown>;
  const name = Object.keys(adapters).find((k) => adapters[k] !== null)!;
  for (
    const [spec, field] of [
      [{ kind: "lora", r: -4, alpha: 8 }, `adapters.${name}.r`],
      [
        { kind: "lora", r: 4, alpha: 8, modules: { up: { r: -1 } } },
        `adapters.${name}.modules.up.r`,
      ],
      [{ kind: "lora", r: 4, alpha: 8, modules: { upp: {} } }, `adapters.${name}.modules.upp`],
    ] as const
  ) {
    try {
      parseGridConfig({ ...base, adapters: { ...adapters, [name]: spec } }, "grid.json");
      assert.fail("accepted");
    } catch (e) {
      const m = (e as Error).message;
      assert.match(m, new RegExp(`^grid\\.json: field ${field.replaceAll(".", "\\.")}: `), m);
      assert.ok(!m.includes("\n"), `one line: ${m}`);
      assert.equal(m.split("grid.json").length, 2, `prefix once: ${m}`);
      assert.ok(!m.includes("adapter config"), `no inner prefix: ${m}`);
    }
  }
  parseGridConfig(base, "grid.json"); // positive control
});
