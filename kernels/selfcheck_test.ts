import assert from "node:assert/strict";
import { selfCheck } from "./selfcheck.ts";
import { testRuntime } from "./testing/mod.ts";

Deno.test("self-check: every row passes, and it checks the frozen products the variants record", async () => {
  for (const target of ["cpu-adapter", "gpu"] as const) {
    const results = await selfCheck(await testRuntime({ target }), 7);
    for (const r of results) assert.ok(r.ok, `${target} ${r.kernel}: ${r.relativeError}`);
    const names = results.map((r) => r.kernel).join(" ");
    if (target === "gpu") {
      assert.match(names, /nf4-gemv-/);
      assert.match(names, /nf4-tiled-/);
      assert.match(names, /nf4-bwd-tiled-/);
    } else assert.doesNotMatch(names, /tiled|gemv/);
  }
});
