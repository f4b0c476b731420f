import assert from "node:assert/strict";
import { relativeError } from "../../../kernels/testing/mod.ts";
import { createAdapter } from "../../adapters/registry.ts";
import { randomizeParams } from "../../adapters/testing.ts";
import { TARGET_MODULES } from "../../llama_shapes.ts";
import { fromLlama2c, linearDims } from "../config.ts";
import { randomCheckpoint, TINY_CONFIG } from "../testing.ts";
import { adapterKey, type CpuAdapters, CpuLlama } from "./model.ts";
import type { RopeLayout } from "../../../kernels/llama/cpu/rope.ts";

function checkGradients(layout: RopeLayout, keys: string[]) {
  const config = { ...fromLlama2c(TINY_CONFIG), ropeLayout: layout };
  const model = new CpuLlama(config, randomCheckpoint(TINY_CONFIG, 3));
  const adapters: CpuAdapters = new Map();
  const kinds = [
    { kind: "moka", components: [[2, 4], [4, 2]] },
    { kind: "lora", r: 2, alpha: 4 },
    { kind: "dora", r: 2, alpha: 2, detachNorm: false },
  ];
  let i = 0;
  for (let l = 0; l < config.layers; l++) {
    for (const m of TARGET_MODULES) {
      const [dIn, dOut] = linearDims(config, m);
      const a = createAdapter(
        kinds[i % 3],
        dIn,
        dOut,
        i,
        Float32Array.from(model.weight(l, m)),
      );
      randomizeParams(a, 100 + i++);
      adapters.set(adapterKey(l, m), { adapter: a, params: a.paramsF64() });
    }
  }
  const ids = [1, 5, 9, 2, 33, 7];
  const targets = [-1, -1, 9, 2, 33, 7]; // prompt masked
  const { grads } = model.lossAndGrads(ids, targets, adapters);
  const eps = 1e-6;
  for (const key of keys) {
    const entry = adapters.get(key)!;
    for (const [name, g] of Object.entries(grads.get(key)!)) {
      const fd = new Float64Array(g.length);
      for (let j = 0; j < g.length; j++) {
        const p = entry.params[name];
        const keep = p[j];
        p[j] = keep + eps;
        const up = model.lossAndGrads(ids, targets, adapters).loss;
        p[j] = keep - eps;
        const down = model.lossAndGrads(ids, targets, adapters).loss;
        p[j] = keep;
        fd[j] = (up - down) / (2 * eps);
      }
      const err = relativeError(g, fd);
      assert.ok(err < 1e-6, `${key}.${name}: relative error ${err}`);
    }
  }
}

Deno.test("cpu llama: whole-model adapter gradients equal finite differences (float64)", () => {
  checkGradients("interleaved", ["0.q", "1.down", "0.k", "1.v", "0.gate"]);
});

Deno.test("cpu llama: with rotate_half RoPE, q and k adapter gradients equal finite differences", () => {
  checkGradients("half", ["1.q", "0.k"]);
});
