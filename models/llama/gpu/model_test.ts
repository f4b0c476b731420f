import assert from "node:assert/strict";
import { relativeError, testRuntime } from "../../../kernels/testing/mod.ts";
import { type Adapter, createAdapter } from "../../adapters/mod.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import { randomizeParams } from "../../adapters/testing.ts";
import { loadLlama2c } from "../../llama2c.ts";
import { TARGET_MODULES } from "../../llama_shapes.ts";
import { defaultModelPath } from "../../paths.ts";
import { dequantizeInt4, quantizeInt4 } from "../../quant/int4.ts";
import { dequantizeNf4, quantizeNf4 } from "../../quant/nf4.ts";
import { fromLlama2c, linearDims, LLAMA2C_WEIGHT } from "../config.ts";
import { adapterKey, type CpuAdapters, CpuLlama } from "../cpu/model.ts";
import { loadModelReference } from "../reference.ts";
import { randomCheckpoint, TINY_CONFIG } from "../testing.ts";
import { GpuLlama } from "./model.ts";

Deno.test("gpu llama: stories260K logits equal reference.json (f32); 4-bit bases equal the CPU model on dequantized weights", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const config = fromLlama2c(ckpt.config);
  for (const base of ["f32", "nf4", "int4"] as const) {
    const model = GpuLlama.create(rt, config, ckpt, { base });
    const ids = rt.upload(Uint32Array.from(ref.teacherIds), [ref.teacherIds.length]);
    const b = rt.batch();
    const logits = await model.forward(b, ids, ref.teacherIds.length);
    await b.submit();
    const got = await rt.read(logits) as Float32Array;
    let worst = 0;
    ref.teacherLogits.forEach((row, t) =>
      row.forEach((v, j) => worst = Math.max(worst, Math.abs(v - got[t * 512 + j])))
    );
    if (base === "f32") assert.ok(worst < 1e-3, `f32: max |Δlogit| = ${worst}`);
    else {
      // The oracle of a 4-bit base: the float64 model on the dequantized weights.
      const deq = { ...ckpt, layers: ckpt.layers.map((l) => ({ ...l })) };
      for (const [l, layer] of deq.layers.entries()) {
        for (const m of TARGET_MODULES) {
          const field = LLAMA2C_WEIGHT[m];
          const [dIn, dOut] = linearDims(config, m);
          const w = ckpt.layers[l][field];
          layer[field] = base === "nf4"
            ? dequantizeNf4(quantizeNf4(w, dOut, dIn))
            : dequantizeInt4(quantizeInt4(w, dOut, dIn, 32));
        }
      }
      const cpuLogits = new CpuLlama(config, deq).forward(ref.teacherIds).logits;
      let diff = 0;
      got.forEach((v, j) => diff = Math.max(diff, Math.abs(v - cpuLogits[j])));
      assert.ok(diff < 1e-3, `${base}: max |Δlogit| vs dequantized CPU model = ${diff}`);
      assert.ok(worst > 1e-2, `${base} must differ from the f32 reference (max |Δ| ${worst})`);
    }
    model.release();
    for (const t of [ids, logits]) t.release();
  }
});

Deno.test("gpu llama: loss and adapter gradients equal the float64 model (tiny GQA model, 2 sequences)", async () => {
  const rt = await testRuntime();
  const config = fromLlama2c(TINY_CONFIG);
  const ckpt = randomCheckpoint(TINY_CONFIG, 5);
  const cpu = new CpuLlama(config, ckpt);
  const kinds = [
    { kind: "moka", components: [[2, 4], [4, 2]] },
    { kind: "lora", r: 2, alpha: 4 },
    { kind: "dora", r: 2, alpha: 2 },
    { kind: "lokr", r: 1, alpha: 1 },
  ];
  const adapters = new Map<string, Adapter<AdapterConfig>>();
  let i = 0;
  for (let l = 0; l < config.layers; l++) {
    for (const m of TARGET_MODULES) {
      const [dIn, dOut] = linearDims(config, m);
      const a = createAdapter(
        kinds[i % kinds.length],
        dIn,
        dOut,
        i,
        ckpt
          .layers[l][
            ({ q: "wq", k: "wk", v: "wv", o: "wo", gate: "w1", up: "w3", down: "w2" } as const)[m]
          ],
      );
      randomizeParams(a, 50 + i++);
      adapters.set(adapterKey(l, m), a);
    }
  }
  const seqs = [[1, 5, 9, 2, 33, 7, 8, 3], [1, 12, 30, 4, 4, 19, 2, 11]];
  const targets = [[-1, -1, 2, 33, 7, 8, 3, 6], [-1, 30, 4, 4, 19, 2, 11, 0]];
  // CPU: mean over all unmasked rows of both sequences = Σ per-sequence sums / total count.
  const count = targets.flat().filter((t) => t >= 0).length;
  let cpuLoss = 0;
  const cpuGrads = new Map<string, Record<string, Float64Array>>();
  const cpuAdapters: CpuAdapters = new Map(
    [...adapters].map(([k, a]) => [k, { adapter: a, params: a.paramsF64() }]),
  );
  seqs.forEach((ids, s) => {
    const n = targets[s].filter((t) => t >= 0).length;
    const r = cpu.lossAndGrads(ids, targets[s], cpuAdapters);
    cpuLoss += (r.loss * n) / count;
    for (const [k, g] of r.grads) {
      const acc = cpuGrads.get(k) ?? {};
      for (const [name, v] of Object.entries(g)) {
        acc[name] ??= new Float64Array(v.length);
        for (let j = 0; j < v.length; j++) acc[name][j] += (v[j] * n) / count;
      }
      cpuGrads.set(k, acc);
    }
  });
  const model = GpuLlama.create(rt, config, ckpt);
  await model.attach(adapters);
  const ids = rt.upload(Uint32Array.from(seqs.flat()), [16]);
  const tg = rt.upload(Uint32Array.from(targets.flat().map((t) => t >>> 0)), [16]);
  const b = rt.batch();
  const logits = await model.forward(b, ids, 8, true);
  const loss = await model.lossAndBackward(b, logits, tg, count);
  await b.submit();
  const gpuLoss = (await rt.read(loss) as Float32Array).reduce((x, y) => x + y, 0) / count;
  assert.ok(Math.abs(gpuLoss - cpuLoss) / cpuLoss < 1e-5, `loss ${gpuLoss} vs ${cpuLoss}`);
  for (const [key, layer] of model.adapters) {
    for (const [name, g] of Object.entries(layer.grads)) {
      const err = relativeError(await rt.read(g), cpuGrads.get(key)![name]);
      assert.ok(err < 1e-4, `${key}.${name}: relative error ${err}`);
    }
  }
  model.release();
});
