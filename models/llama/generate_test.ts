import assert from "node:assert/strict";
import { testRuntime } from "../../kernels/testing/mod.ts";
import { loadLlama2c } from "../llama2c.ts";
import { defaultModelPath } from "../../testing/paths.ts";
import { Llama2cTokenizer } from "../tokenizer/llama2c.ts";
import { fromLlama2c } from "./config.ts";
import { CpuLlama } from "./cpu/model.ts";
import {
  cpuScorer,
  generate,
  generateOnGpu,
  gpuScorer,
  nextTokenLogits,
  search,
  searchManyOnGpu,
  searchOnGpu,
} from "./generate.ts";
import { GpuLlama } from "./gpu/model.ts";
import { loadModelReference } from "./reference.ts";
import { randomCheckpoint, TINY_CONFIG } from "./testing.ts";

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

Deno.test("generate on the GPU: greedy and beam selection equal the host's (ids, scores), EOS inside a multi-step submit", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const config = fromLlama2c(ckpt.config);
  const model = await GpuLlama.create(rt, config, ckpt);
  const maxNew = ref.greedyIds.length;
  for (const stepsPerSubmit of [1, 8]) {
    const ids = await generateOnGpu(rt, model, [ref.bos], { maxNew, eos: -1, stepsPerSubmit });
    assert.deepEqual(ids, ref.greedyIds, `greedy, ${stepsPerSubmit} steps per submit`);
  }
  // EOS at the 6th token: in the middle of the second 4-step submit; the rows stop there.
  const eos = ref.greedyIds[5];
  const cut = ref.greedyIds.slice(0, ref.greedyIds.indexOf(eos));
  const ended = await generateOnGpu(rt, model, [ref.bos], { maxNew, eos, stepsPerSubmit: 4 });
  assert.deepEqual(ended, cut);
  assert.ok(cut.length < maxNew, "the negative control: EOS did end the generation early");

  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const prompt = tok.encode("Once upon a time, a little dog", { bos: true });
  const plain = await search(gpuScorer(rt, model), prompt, config.vocab, { maxNew: 24, beams: 4 });
  // EOS ids that end hypotheses at different steps: tokens the plain search emits.
  let early = 0;
  // lengthPenalty 0 ranks by the raw sum: short finished hypotheses win.
  for (
    const [eos, lengthPenalty] of [[2, 1], [plain.ids[1], 1], [plain.ids[4], 0], [plain.ids[9], 0]]
  ) {
    const opts = { maxNew: 24, beams: 4, eos, lengthPenalty };
    const host = await search(gpuScorer(rt, model), prompt, config.vocab, opts);
    const gpu = await searchOnGpu(rt, model, prompt, { ...opts, stepsPerSubmit: 5 });
    assert.deepEqual(gpu.ids, host.ids, `4 beams, eos ${eos}`);
    assert.ok(Math.abs(gpu.score - host.score) < 1e-4 * Math.abs(host.score), `score, eos ${eos}`);
    if (host.ids.length < 24) early++;
  }
  assert.ok(early >= 2, `hypotheses finished early in ${early} searches`);
  model.release();
});

Deno.test("generate on the GPU: a random GQA model, 2–4 beams, the position limit", async () => {
  const rt = await testRuntime();
  const ckpt = randomCheckpoint(TINY_CONFIG, 7);
  const config = fromLlama2c(TINY_CONFIG);
  const model = await GpuLlama.create(rt, config, ckpt);
  const prompt = [1, 5, 9, 13, 17];
  for (const beams of [1, 2, 3, 4]) {
    for (const eos of [2, 11, 30]) {
      const opts = { maxNew: 20, beams, eos };
      const host = await search(gpuScorer(rt, model), prompt, config.vocab, opts);
      const gpu = await searchOnGpu(rt, model, prompt, { ...opts, stepsPerSubmit: 3 });
      assert.deepEqual(gpu.ids, host.ids, `${beams} beams, eos ${eos}`);
      if (beams > 1) assert.ok(Math.abs(gpu.score - host.score) < 1e-4 * Math.abs(host.score));
    }
  }
  // 30 prompt tokens + 10 new of a 32-position model: both run out of positions.
  const long = Array.from({ length: 30 }, (_, i) => 1 + i);
  const opts = { maxNew: 10, beams: 2, eos: -1 };
  await assert.rejects(
    () => generate(gpuScorer(rt, model), long, config.vocab, opts),
    /reached the model's 32 positions/,
  );
  await assert.rejects(() => generateOnGpu(rt, model, long, opts), /reached the model's 32/);
  model.release();
});

Deno.test("generate on the GPU: prompts of different lengths in one batch equal each prompt's own search (greedy, 4 beams, EOS at different steps)", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const model = await GpuLlama.create(rt, config, ckpt);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const prompts = [
    "Once upon a time, a little dog",
    "Tom",
    "The big red ball rolled down the hill and the girl",
  ].map((t) => tok.encode(t, { bos: true }));
  assert.equal(new Set(prompts.map((p) => p.length)).size, 3, "three different lengths");
  // EOS ids the plain searches emit early for some prompts and late or never for others.
  const plain = await search(gpuScorer(rt, model), prompts[0], config.vocab, { maxNew: 20 });
  let mixed = 0;
  for (const beams of [1, 4]) {
    for (const eos of [2, plain.ids[3], plain.ids[8]]) {
      const opts = { maxNew: 20, beams, eos };
      const many = await searchManyOnGpu(rt, model, prompts, { ...opts, stepsPerSubmit: 6 });
      const lengths = new Set<number>();
      for (const [q, prompt] of prompts.entries()) {
        const host = await search(gpuScorer(rt, model), prompt, config.vocab, opts);
        assert.deepEqual(many[q].ids, host.ids, `${beams} beams, eos ${eos}, prompt ${q}`);
        if (beams > 1) {
          assert.ok(Math.abs(many[q].score - host.score) < 1e-4 * Math.abs(host.score));
        }
        lengths.add(host.ids.length);
      }
      if (lengths.size > 1) mixed++;
    }
  }
  assert.ok(mixed >= 2, `prompts ended at different steps in ${mixed} batches`);
  model.release();
});

Deno.test("generate on the GPU: a batch near the context end (GQA), fitContext caps each prompt, otherwise the prompt that runs out is named", async () => {
  const rt = await testRuntime();
  const ckpt = randomCheckpoint(TINY_CONFIG, 7);
  const config = fromLlama2c(TINY_CONFIG);
  const model = await GpuLlama.create(rt, config, ckpt);
  const prompts = [5, 26, 30].map((n) => Array.from({ length: n }, (_, i) => 1 + ((7 * i) % 38)));
  for (const beams of [1, 3]) {
    const opts = { maxNew: 10, beams, eos: -1 };
    const many = await searchManyOnGpu(rt, model, prompts, { ...opts, fitContext: true });
    for (const [q, prompt] of prompts.entries()) {
      const room = Math.min(10, config.seqLen - prompt.length);
      const one = await searchOnGpu(rt, model, prompt, { ...opts, maxNew: room });
      assert.deepEqual(many[q].ids, one.ids, `${beams} beams, prompt ${q}`);
      assert.equal(many[q].ids.length, room, "eos -1: every allowed token");
    }
    await assert.rejects(
      () => searchManyOnGpu(rt, model, prompts, opts),
      /reached the model's 32 positions \(prompt 1\)/,
    );
  }
  model.release();
});

Deno.test("generate with the GPU kernel variants forced: ids and scores equal the CPU-adapter variants' (stories260K f32 and NF4, a random GQA model)", async () => {
  const cpuRt = await testRuntime();
  const gpuRt = await testRuntime({ target: "gpu" });
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const config = fromLlama2c(ckpt.config);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const prompt = tok.encode("Once upon a time, a little dog", { bos: true });
  const cases = [
    { config, ckpt, base: "f32" as const, prompt },
    { config, ckpt, base: "nf4" as const, prompt },
    {
      config: fromLlama2c(TINY_CONFIG),
      ckpt: randomCheckpoint(TINY_CONFIG, 7),
      base: "nf4" as const,
      prompt: [1, 5, 9, 13, 17],
    },
  ];
  for (const c of cases) {
    const cpuModel = await GpuLlama.create(cpuRt, c.config, c.ckpt, { base: c.base });
    const gpuModel = await GpuLlama.create(gpuRt, c.config, c.ckpt, { base: c.base });
    const what = `${c.config.dim}-wide ${c.base}`;
    const maxNew = Math.min(ref.greedyIds.length, c.config.seqLen - c.prompt.length - 1);
    const greedy = { maxNew, eos: -1, stepsPerSubmit: 4 };
    const gpuGreedy = await generateOnGpu(gpuRt, gpuModel, c.prompt, greedy);
    assert.deepEqual(gpuGreedy, await generateOnGpu(cpuRt, cpuModel, c.prompt, greedy), what);
    if (c.ckpt === ckpt && c.base === "f32") {
      const fromBos = await generateOnGpu(gpuRt, gpuModel, [ref.bos], { ...greedy, maxNew: 16 });
      assert.deepEqual(fromBos, ref.greedyIds.slice(0, 16), `${what}: reference.json`);
    }
    const beams = { maxNew: Math.min(16, maxNew), beams: 4, eos: 2, stepsPerSubmit: 5 };
    const onGpu = await searchOnGpu(gpuRt, gpuModel, c.prompt, beams);
    const onCpu = await searchOnGpu(cpuRt, cpuModel, c.prompt, beams);
    assert.deepEqual(onGpu.ids, onCpu.ids, `${what}: 4 beams`);
    assert.ok(Math.abs(onGpu.score - onCpu.score) < 1e-4 * Math.abs(onCpu.score), `${what} score`);
    cpuModel.release();
    gpuModel.release();
  }
});
