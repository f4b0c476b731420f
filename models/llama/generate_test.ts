import assert from "node:assert/strict";
import { testRuntime } from "../../kernels/testing/mod.ts";
import { loadLlama2c } from "../llama2c.ts";
import { defaultModelPath } from "../paths.ts";
import { Llama2cTokenizer } from "../tokenizer/llama2c.ts";
import { fromLlama2c } from "./config.ts";
import { CpuLlama } from "./cpu/model.ts";
import { cpuScorer, generate, gpuScorer, nextTokenLogits } from "./generate.ts";
import { GpuLlama } from "./gpu/model.ts";
import { loadModelReference } from "./reference.ts";

Deno.test("generate: KV-cached greedy from BOS equals reference.json; 4-beam search equals the CPU model's", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const config = fromLlama2c(ckpt.config);
  const model = await GpuLlama.create(rt, config, ckpt);
  const greedy = await generate(gpuScorer(rt, model), [ref.bos], config.vocab, {
    maxNew: ref.greedyIds.length,
    eos: -1,
  });
  assert.deepEqual(greedy, ref.greedyIds);

  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const prompt = tok.encode("Once upon a time, a little dog", { bos: true });
  const cpu = new CpuLlama(config, ckpt);
  const opts = { maxNew: 24, beams: 4 };
  const onGpu = await generate(gpuScorer(rt, model), prompt, config.vocab, opts);
  const onCpu = await generate(cpuScorer(cpu), prompt, config.vocab, opts);
  assert.deepEqual(onGpu, onCpu);
  assert.ok(onGpu.length > 0);
  // Beam search finds a sequence at least as likely (per token) as greedy's.
  const greedyHere = await generate(cpuScorer(cpu), prompt, config.vocab, { maxNew: 24 });
  const logp = (ids: number[]) => {
    const { logits } = cpu.forward([...prompt, ...ids]);
    let s = 0;
    ids.forEach((id, i) => {
      const row = logits.subarray((prompt.length - 1 + i) * 512, (prompt.length + i) * 512);
      const mx = Math.max(...row);
      s += row[id] - mx - Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
    });
    return s / ids.length;
  };
  assert.ok(
    logp(onGpu) >= logp(greedyHere) - 1e-9,
    `beam ${logp(onGpu)} vs greedy ${logp(greedyHere)}`,
  );
  model.release();
});

Deno.test("generate: batched next-token logits of prompts of different lengths equal the CPU model's", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const model = await GpuLlama.create(rt, config, ckpt);
  const cpu = new CpuLlama(config, ckpt);
  const prompts = [[1, 403, 407], [1, 300], [1, 403, 407, 261, 378, 432]];
  const got = await nextTokenLogits(rt, model, prompts);
  prompts.forEach((p, i) => {
    const ref = cpu.forward(p).logits.subarray((p.length - 1) * 512);
    let d = 0;
    got[i].forEach((v, j) => d = Math.max(d, Math.abs(v - ref[j])));
    assert.ok(d < 1e-3, `prompt ${i}: max |Δ| ${d}`);
  });
  model.release();
});
