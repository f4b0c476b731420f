/**
 * A model whose embedding and classifier outgrow a 128 MiB binding in f32 (vocabulary 40,000 ×
 * dim 1,024 = 164 MB each): stored in row blocks, it runs forward, backward, beam generation and
 * MMLU scoring, and its loss, gradients and next-token logits equal the float64 reference.
 */
import assert from "node:assert/strict";
import { relativeError, testRuntime } from "../kernels/testing/mod.ts";
import type { Adapter } from "../models/adapters/adapter.ts";
import type { AdapterConfig } from "../models/adapters/registry.ts";
import { randomizeParams } from "../models/adapters/testing.ts";
import { ByteFallbackTokenizer } from "../models/tokenizer/llama2c.ts";
import { scoreMmlu } from "./mmlu.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import { fromLlama2c } from "../models/llama/config.ts";
import { type CpuAdapters, CpuLlama } from "../models/llama/cpu/model.ts";
import {
  cpuLogitsAt,
  cpuScorer,
  generate,
  gpuScorer,
  logitsAt,
  nextTokenLogits,
} from "../models/llama/generate.ts";
import { cpuBatchLossAndGrads, randomCheckpoint } from "../models/llama/testing.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";

const BIG = {
  dim: 1024,
  hiddenDim: 256,
  layers: 2,
  heads: 8,
  kvHeads: 4,
  vocab: 40000,
  seqLen: 64,
  sharedClassifier: false,
};

Deno.test("big vocabulary: 164 MB tables in row blocks; loss, gradients, logits, beams and MMLU equal the float64 model", async () => {
  const rt = await testRuntime();
  const limit = rt.device.limits.maxStorageBufferBindingSize;
  const config = fromLlama2c(BIG);
  const ckpt = randomCheckpoint(BIG, 21);
  // Scaled down so that logits stay in a softmax's useful range.
  for (const t of [ckpt.tokenEmbedding, ckpt.classifier]) t.forEach((v, i) => t[i] = v * 0.05);
  for (const l of ckpt.layers) {
    for (const k of ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const) {
      l[k].forEach((v, i) => l[k][i] = v * 0.03);
    }
  }
  const model = await GpuLlama.create(rt, config, ckpt);
  const { embed, classifier } = model.frozen;
  if (BIG.vocab * BIG.dim * 4 > limit) {
    assert.ok(embed.blocks.length >= 2 && classifier.blocks.length >= 2, "stored in row blocks");
  }
  const adapters = await adaptersForModel(config, { kind: "lora", r: 4, alpha: 8 }, 3, {
    targets: ["q", "v", "down"],
  });
  for (const [i, a] of [...adapters.values()].entries()) randomizeParams(a, 90 + i);
  await model.attach(adapters as Map<string, Adapter<AdapterConfig>>);
  const cpu = new CpuLlama(config, ckpt);
  const cpuAdapters: CpuAdapters = new Map(
    [...adapters].map(([k, a]) => [k, { adapter: a, params: a.paramsF64() }]),
  );

  // Loss and every adapter gradient over 2 sequences of 8 tokens.
  const seqs = [[1, 500, 39999, 7, 12000, 3, 25000, 8], [1, 9, 31000, 4, 4, 190, 20000, 11]];
  const targets = [[-1, 39999, 7, 12000, 3, 25000, 8, 6], [-1, -1, 4, 4, 190, 20000, 11, 0]];
  const { loss: cpuLoss, count, grads: cpuGrads } = cpuBatchLossAndGrads(
    cpu,
    seqs,
    targets,
    cpuAdapters,
  );
  const ids = rt.upload(Uint32Array.from(seqs.flat()), [16]);
  const tg = rt.upload(Uint32Array.from(targets.flat().map((t) => t >>> 0)), [16]);
  const b = rt.batch();
  await model.forward(b, ids, 8, { keep: true, logits: "none" });
  const loss = await model.lossAndBackward(b, tg, count);
  await b.submit();
  const gpuLoss = (await rt.read(loss) as Float32Array).reduce((x, y) => x + y, 0) / count;
  assert.ok(Math.abs(gpuLoss - cpuLoss) / cpuLoss < 1e-5, `loss ${gpuLoss} vs ${cpuLoss}`);
  for (const [key, layer] of model.adapters) {
    for (const [name, g] of Object.entries(layer.grads)) {
      const err = relativeError(await rt.read(g), cpuGrads.get(key)![name]);
      assert.ok(err < 1e-4, `${key}.${name}: relative error ${err}`);
    }
  }
  for (const t of [ids, tg, loss]) t.release();

  // Next-token logits of prompts of different lengths.
  const prompts = [[1, 17, 30001, 5], [1, 39000, 2, 2, 777, 12, 35000]];
  const gpuNext = await nextTokenLogits(rt, model, prompts);
  prompts.forEach((p, i) => {
    const ref = cpu.forward(p, cpuAdapters).logits.subarray((p.length - 1) * BIG.vocab);
    const err = relativeError(gpuNext[i], ref);
    assert.ok(err < 1e-5, `prompt ${i}: logits relative error ${err}`);
  });

  // Beam search over the KV cache equals the float64 model's search.
  const beamOpts = { maxNew: 3, beams: 2, eos: 2 };
  const gpuBeams = await generate(gpuScorer(rt, model), prompts[0], BIG.vocab, beamOpts);
  const cpuBeams = await generate(cpuScorer(cpu, cpuAdapters), prompts[0], BIG.vocab, beamOpts);
  assert.deepEqual(gpuBeams, cpuBeams);

  // MMLU scoring through the batched last-position logits.
  const tok = new ByteFallbackTokenizer(BIG.vocab);
  const q = {
    question: "2+2?",
    choices: ["3", "4", "5", "6"] as [string, string, string, string],
    answer: 1,
  };
  const data = { abstract_algebra: { dev: [q], test: [q, { ...q, answer: 2 }] } };
  const options = { shots: 1, maxLen: 64 };
  const gpuScores = await scoreMmlu((s, at) => logitsAt(rt, model, s, at), tok, data, options);
  const cpuScores = await scoreMmlu(cpuLogitsAt(cpu, cpuAdapters), tok, data, options);
  assert.deepEqual(gpuScores, cpuScores);
  model.release();
});
