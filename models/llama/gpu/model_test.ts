import assert from "node:assert/strict";
import { relativeError, testRuntime } from "../../../kernels/testing/mod.ts";
import { type Adapter, createAdapter } from "../../adapters/mod.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import { randomizeParams } from "../../adapters/testing.ts";
import { loadLlama2c } from "../../llama2c.ts";
import { TARGET_MODULES } from "../../llama_shapes.ts";
import { defaultModelPath } from "../../../testing/paths.ts";
import { fromLlama2c, linearDims, LLAMA2C_WEIGHT } from "../config.ts";
import { adapterKey, type CpuAdapters, CpuLlama } from "../cpu/model.ts";
import { loadModelReference } from "../reference.ts";
import { cpuBatchLossAndGrads, randomCheckpoint, TINY_CONFIG } from "../testing.ts";
import { GpuLlama } from "./model.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";

Deno.test("gpu llama: stories260K logits equal reference.json (f32); 4-bit and 16-bit bases equal the CPU model on their stored weights", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const config = fromLlama2c(ckpt.config);
  for (const base of ["f32", "bf16", "nf4", "int4"] as const) {
    const model = await GpuLlama.create(rt, config, ckpt, { base });
    const ids = rt.upload(Uint32Array.from(ref.teacherIds), [ref.teacherIds.length]);
    const b = rt.batch();
    const logits = (await model.forward(b, ids, ref.teacherIds.length))!;
    await b.submit();
    const got = await rt.read(logits) as Float32Array;
    let worst = 0;
    ref.teacherLogits.forEach((row, t) =>
      row.forEach((v, j) => worst = Math.max(worst, Math.abs(v - got[t * 512 + j])))
    );
    if (base === "f32") assert.ok(worst < 1e-3, `f32: max |Δlogit| = ${worst}`);
    else {
      // The oracle of a compressed base: the float64 model on the weights the GPU stores,
      // dequantized (they were quantized on the GPU from the checkpoint's bytes).
      const stored = { ...ckpt, layers: ckpt.layers.map((l) => ({ ...l })) };
      for (const [l, layer] of stored.layers.entries()) {
        for (const m of TARGET_MODULES) {
          layer[LLAMA2C_WEIGHT[m]] = await model.baseWeight(adapterKey(l, m));
        }
      }
      const cpuLogits = new CpuLlama(config, stored).forward(ref.teacherIds).logits;
      let diff = 0;
      got.forEach((v, j) => diff = Math.max(diff, Math.abs(v - cpuLogits[j])));
      assert.ok(diff < 1e-3, `${base}: max |Δlogit| vs the CPU model on stored weights = ${diff}`);
      if (base !== "bf16") {
        assert.ok(worst > 1e-2, `${base} must differ from the f32 reference (max |Δ| ${worst})`);
      }
    }
    model.release();
    for (const t of [ids, logits]) t.release();
  }
});

/** A training step's loss, every adapter gradient and chosen logits against the float64 model. */
async function checkStepAgainstFloat64(rt: GpuRuntime): Promise<void> {
  const interleaved = fromLlama2c(TINY_CONFIG);
  const ckpt = randomCheckpoint(TINY_CONFIG, 5);
  const kinds = [
    { kind: "moka", components: [[2, 4], [4, 2]] },
    { kind: "lora", r: 2, alpha: 4 },
    { kind: "dora", r: 2, alpha: 2 },
    { kind: "lokr", r: 1, alpha: 1 },
  ];
  const adapters = new Map<string, Adapter<AdapterConfig>>();
  let i = 0;
  for (let l = 0; l < interleaved.layers; l++) {
    for (const m of TARGET_MODULES) {
      const [dIn, dOut] = linearDims(interleaved, m);
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
  const cpuAdapters: CpuAdapters = new Map(
    [...adapters].map(([k, a]) => [k, { adapter: a, params: a.paramsF64() }]),
  );
  // One block and one logits chunk; then every matrix in 7-row blocks (a 40-entry vocabulary in
  // 6 blocks, 16×16 layers in 3) with the logits recomputed per row chunk of 4, or kept; and
  // RoPE in Hugging Face's rotate_half layout.
  const settings = [
    {},
    { maxBlockBytes: 7 * 16 * 4, logitsChunkBytes: 7 * 4 * 4 },
    { maxBlockBytes: 7 * 16 * 4, logitsChunkBytes: 16 * 40 * 4 },
    { ropeLayout: "half" as const },
  ];
  for (const { ropeLayout, ...options } of settings) {
    const config = { ...interleaved, ropeLayout: ropeLayout ?? interleaved.ropeLayout };
    const cpu = new CpuLlama(config, ckpt);
    const { loss: cpuLoss, count, grads: cpuGrads } = cpuBatchLossAndGrads(
      cpu,
      seqs,
      targets,
      cpuAdapters,
    );
    const model = await GpuLlama.create(rt, config, ckpt, options);
    if (options.maxBlockBytes) assert.equal(model.frozen.classifier.blocks.length, 6);
    await model.attach(adapters);
    const ids = rt.upload(Uint32Array.from(seqs.flat()), [16]);
    const tg = rt.upload(Uint32Array.from(targets.flat().map((t) => t >>> 0)), [16]);
    const b = rt.batch();
    assert.equal(await model.forward(b, ids, 8, { keep: true, logits: "none" }), null);
    const loss = await model.lossAndBackward(b, tg, count);
    await b.submit();
    const gpuLoss = (await rt.read(loss) as Float32Array).reduce((x, y) => x + y, 0) / count;
    const what = JSON.stringify({ ropeLayout, ...options });
    assert.ok(
      Math.abs(gpuLoss - cpuLoss) / cpuLoss < 1e-5,
      `${what}: loss ${gpuLoss} vs ${cpuLoss}`,
    );
    for (const [key, layer] of model.adapters) {
      for (const [name, g] of Object.entries(layer.grads)) {
        const err = relativeError(await rt.read(g), cpuGrads.get(key)![name]);
        assert.ok(err < 1e-4, `${what} ${key}.${name}: relative error ${err}`);
      }
    }
    // Logits of chosen rows equal the reference's rows.
    const b2 = rt.batch();
    const picked = (await model.forward(b2, ids, 8, { logits: [7, 8, 15] }))!;
    await b2.submit();
    const got = await rt.read(picked) as Float32Array;
    const refLogits = seqs.map((s) => cpu.forward(s, cpuAdapters).logits);
    [[0, 7], [1, 0], [1, 7]].forEach(([s, t], i) => {
      const err = relativeError(
        got.subarray(i * 40, (i + 1) * 40),
        refLogits[s].subarray(t * 40, (t + 1) * 40),
      );
      assert.ok(err < 1e-5, `${what}: logits of sequence ${s} position ${t}: ${err}`);
    });
    for (const t of [ids, tg, loss, picked]) t.release();
    model.release();
  }
}

Deno.test("gpu llama: loss and adapter gradients equal the float64 model (tiny GQA model, 2 sequences)", async () => {
  await checkStepAgainstFloat64(await testRuntime());
});

Deno.test("gpu llama: the same training step with the GPU kernel variants forced", async () => {
  await checkStepAgainstFloat64(await testRuntime({ target: "gpu" }));
});

/** A step with and without checkpointing: bit-identical results, a lower pool peak. */
async function checkCheckpointing(rt: GpuRuntime): Promise<void> {
  const shape = { ...TINY_CONFIG, dim: 32, hiddenDim: 64, layers: 6, seqLen: 64 };
  const config = fromLlama2c(shape);
  const ckpt = randomCheckpoint(shape, 8);
  const kinds = [
    { kind: "lora", r: 2, alpha: 4, dropout: 0.2 },
    { kind: "dora", r: 2, alpha: 2, detachNorm: false },
    { kind: "moka", components: [[2, 4], [4, 2]] },
  ];
  const [sequences, seq] = [4, 32];
  const ids = Array.from({ length: sequences * seq }, (_, i) => (i * 7 + 3) % shape.vocab);
  const targets = ids.map((_, i) => (i % seq < 4 ? -1 : (i * 5 + 1) % shape.vocab));
  const count = targets.filter((t) => t >= 0).length;
  const results = [];
  for (const checkpointing of [false, true]) {
    const model = await GpuLlama.create(rt, config, ckpt, { checkpointing });
    const adapters = new Map<string, Adapter<AdapterConfig>>();
    let i = 0;
    for (let l = 0; l < config.layers; l++) {
      for (const m of TARGET_MODULES) {
        const [dIn, dOut] = linearDims(config, m);
        const a = createAdapter(kinds[i % 3], dIn, dOut, i, ckpt.layers[l][LLAMA2C_WEIGHT[m]]);
        randomizeParams(a, 70 + i++);
        adapters.set(adapterKey(l, m), a);
      }
    }
    await model.attach(adapters);
    assert.equal(model.checkpoints(sequences * seq, seq), checkpointing);
    const gIds = rt.upload(Uint32Array.from(ids), [ids.length]);
    const gTargets = rt.upload(Uint32Array.from(targets.map((t) => t >>> 0)), [ids.length]);
    const before = rt.pool.stats.inUseBytes;
    rt.pool.resetPeak();
    const b = rt.batch();
    await model.forward(b, gIds, seq, { keep: true, logits: "none", dropoutSeed: 1234 });
    const loss = await model.lossAndBackward(b, gTargets, count);
    await b.submit();
    const peak = rt.pool.stats.peakInUseBytes - before;
    const grads: Record<string, Float32Array> = {};
    for (const [key, layer] of model.adapters) {
      for (const [name, g] of Object.entries(layer.grads)) {
        grads[`${key}.${name}`] = await rt.read(g) as Float32Array;
      }
    }
    results.push({ loss: await rt.read(loss) as Float32Array, grads, peak });
    for (const t of [gIds, gTargets, loss]) t.release();
    model.release();
  }
  const [plain, checkpointed] = results;
  assert.deepEqual(checkpointed.loss, plain.loss);
  for (const [name, g] of Object.entries(plain.grads)) {
    assert.deepEqual(checkpointed.grads[name], g, name);
  }
  assert.ok(
    checkpointed.peak < plain.peak,
    `peak ${checkpointed.peak} with checkpointing, ${plain.peak} without`,
  );
}

Deno.test("gpu llama: activation checkpointing gives the same loss and gradients bit for bit, with a lower pool peak", async () => {
  await checkCheckpointing(await testRuntime());
});

Deno.test("gpu llama: checkpointing is bit for bit with the GPU kernel variants too", async () => {
  await checkCheckpointing(await testRuntime({ target: "gpu" }));
});
