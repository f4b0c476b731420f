import assert from "node:assert/strict";
import { importsOf, layerOf, violations } from "./layers.ts";

Deno.test("layers: an upward import is found, downward and same-layer ones are not", () => {
  const files = new Map([
    ["kernels/quant/qmatmul.ts", `import { nf4 } from "../../models/quant/nf4.ts";`],
    ["models/llama/train.ts", `import type { Batch } from "../../kernels/runtime/batch.ts";`],
    ["evals/mmlu.ts", `export { loadMmlu } from "../tasks/mmlu/data.ts";`],
    ["tasks/pipeline.ts", `const m = await import("../evals/mmlu.ts");`],
    ["models/hf.ts", `import { z } from "../deps/zod.ts";\nimport "../testing/paths.ts";`],
    ["models/hf_test.ts", `import { dataDir } from "../testing/paths.ts";`],
    ["reports/schema.ts", `import { z } from "zod";\nimport { z as z2 } from "npm:zod@4";`],
    ["deps/zod.ts", `export { z } from "npm:zod@4.6.7";`],
    ["bench/peer.ts", `import * as tf from "@tensorflow/tfjs-core";`],
    ["kernels/x_test.ts", `import assert from "node:assert/strict";`],
  ]);
  const found = violations(files).map((v) => `${v.file} → ${v.target} (${v.from} → ${v.to})`);
  assert.deepEqual(found, [
    "kernels/quant/qmatmul.ts → models/quant/nf4.ts (kernels → models)",
    "tasks/pipeline.ts → evals/mmlu.ts (tasks → evals)",
    "models/hf.ts → testing/paths.ts (models → tools)",
    "reports/schema.ts → zod (reports → a package outside deps/)",
    "reports/schema.ts → npm:zod@4 (reports → a package outside deps/)",
  ]);
});

Deno.test("layers: import forms and layer lookup", () => {
  const src = `import a from "./a.ts";\nimport type { B } from "../b.ts";\nexport * from "./c.ts";
import "./d.ts";\nconst e = import("./e.ts");\nimport {\n  f,\n  g,\n} from "./f.ts";`;
  assert.deepEqual(importsOf(src).sort(), [
    "../b.ts",
    "./a.ts",
    "./c.ts",
    "./d.ts",
    "./e.ts",
    "./f.ts",
  ]);
  assert.equal(layerOf("kernels/runtime/batch.ts"), 1);
  assert.equal(layerOf("kernels/matmul/matmul.ts"), 2);
  assert.equal(layerOf("README.md"), -1);
});
