import assert from "node:assert/strict";
import { relativeError, testRuntime } from "../kernels/testing/mod.ts";
import { createAdapter } from "../models/adapters/registry.ts";
import { randomizeParams } from "../models/adapters/testing.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { fromLlama2c, linearDims, LLAMA2C_WEIGHT } from "../models/llama/config.ts";
import { adapterKey, type CpuAdapters, CpuLlama } from "../models/llama/cpu/model.ts";
import { cpuLogitsAt, logitsAt } from "../models/llama/generate.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { loadLlama2cTokenizer } from "../models/tokenizer/llama2c.ts";
import { ByteFallbackTokenizer } from "../models/tokenizer/llama2c.ts";
import { PROTOCOL, trainingExample } from "../tasks/alpaca.ts";
import { COMMONSENSE_ORDER, loadCommonsense } from "../tasks/commonsense/data.ts";
import { choiceQuestion, scoreChoices } from "./choice.ts";
import { cpuHeldOutLoss, heldOutLoss } from "./heldout.ts";
import { beyondSeedNoise, majorityBaseline, meanSd, wilsonInterval } from "./stats.ts";

Deno.test("stats: Wilson intervals match published values; baselines and seed-noise rule", () => {
  // Newcombe (1998), Table I: 5/10 → 0.2366–0.7634; 0/3 → 0–0.5615; 90/100 → 0.8256–0.9448.
  const near = (a: number[], b: number[]) =>
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 5e-5));
  near(wilsonInterval(5, 10), [0.2366, 0.7634]);
  near(wilsonInterval(0, 3), [0, 0.5615]);
  near(wilsonInterval(90, 100), [0.8256, 0.9448]);
  assert.deepEqual(wilsonInterval(0, 0), [0, 1]);
  assert.equal(majorityBaseline(["true", "false", "true", "true"]), 0.75);
  const { mean, sd } = meanSd([1, 2, 3, 4]);
  assert.equal(mean, 2.5);
  assert.ok(Math.abs(sd - Math.sqrt(5 / 3)) < 1e-15);
  assert.equal(beyondSeedNoise([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]).verdict, "beyond");
  assert.equal(beyondSeedNoise([1.0, 1.5, 0.5], [1.2, 0.7, 1.7]).verdict, "within");
  assert.equal(beyondSeedNoise([1.0], [2.0, 2.1]).verdict, "unknown");
});

Deno.test("choice: acc and acc_norm on a hand-computed example; every shipped record parses", async () => {
  // Uniform logits: each token costs log V, and the byte tokenizer makes one token per byte, so
  // " ab" scores −3·log V and " abcd" −5·log V: acc picks "ab" (shorter), acc_norm per byte of the
  // option (−1.5 vs −1.25 log V) picks "abcd".
  const tok = new ByteFallbackTokenizer(300);
  const uniform = (_seqs: number[][], positions: number[][]) =>
    Promise.resolve(positions.map((ps) => ps.map(() => new Float64Array(300))));
  const record = {
    instruction: "Please choose the correct solution to the question: Q?\n\nSolution1: ab\n\n" +
      "Solution2: abcd\n\nAnswer format: solution1/solution2",
    answer: "solution2",
  };
  const s = await scoreChoices(uniform, tok, "piqa", [record]);
  assert.deepEqual([s.acc, s.accNorm, s.chance, s.total], [0, 1, 0.5, 1]);

  const data = dataDir();
  const wino = (await loadCommonsense(data, "winogrande", "test", 1))[0];
  assert.deepEqual(choiceQuestion("winogrande", wino), {
    contexts: [
      "Sarah was a much better surgeon than Maria so Sarah",
      "Sarah was a much better surgeon than Maria so Maria",
    ],
    continuations: [" always got the easier cases.", " always got the easier cases."],
    gold: 1,
  });
  const boolq = (await loadCommonsense(data, "boolq", "test", 1))[0];
  assert.deepEqual(choiceQuestion("boolq", boolq), {
    contexts: [0, 1].map(() =>
      "Question: does ethanol take more energy make that produces?\nAnswer:"
    ),
    continuations: [" no", " yes"],
    gold: 0,
  });
  for (const task of COMMONSENSE_ORDER) {
    let records;
    try {
      records = await loadCommonsense(data, task, "test");
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // hellaswag is not shipped
      throw e;
    }
    records.forEach((r, i) => {
      const q = choiceQuestion(task, r, i);
      const declared = /Answer format: ([\w/]+)/.exec(r.instruction)![1].split("/").length;
      assert.equal(q.contexts.length, declared, `${task} ${i}: options vs answer format`);
      assert.ok(q.continuations.every((c) => c.length > 1 && c.startsWith(" ")), `${task} ${i}`);
    });
  }
  assert.throws(
    () => choiceQuestion("piqa", { instruction: "What?", answer: "solution1" }, 7),
    /piqa record 7: .*not the LLM-Adapters form/,
  );
});

Deno.test("held-out loss and multiple-choice scores on the GPU equal the float64 model's (stories260K + adapters)", async () => {
  const rt = await testRuntime();
  const path = defaultModelPath("stories260K.bin");
  const ckpt = await loadLlama2c(path);
  const config = fromLlama2c(ckpt.config);
  const tok = await loadLlama2cTokenizer(defaultModelPath("tok512.bin"), config.vocab);
  const gpu = await GpuLlama.create(rt, config, ckpt, { base: "f32" });
  const cpu = new CpuLlama(config, ckpt);
  const adapters = new Map();
  const cpuAdapters: CpuAdapters = new Map();
  for (const m of ["q", "v", "down"] as const) {
    const [dIn, dOut] = linearDims(config, m);
    const a = createAdapter(
      { kind: "lora", r: 2, alpha: 4 },
      dIn,
      dOut,
      1,
      ckpt.layers[1][LLAMA2C_WEIGHT[m]],
    );
    randomizeParams(a, 9);
    adapters.set(adapterKey(1, m), a);
    cpuAdapters.set(adapterKey(1, m), { adapter: a, params: a.paramsF64() });
  }
  await gpu.attach(adapters);
  const data = dataDir();
  const records = await loadCommonsense(data, "boolq", "test", 3);
  const masked = { ...PROTOCOL["llm-adapters"], trainOnInputs: false };
  const examples = records.map((r) => trainingExample(tok, r, config.seqLen, masked)!);
  const got = await heldOutLoss(rt, gpu, examples, 2);
  const want = cpuHeldOutLoss(cpu, examples, cpuAdapters);
  assert.equal(got.tokens, want.tokens);
  assert.ok(got.tokens > 3 && got.tokens < examples.reduce((n, e) => n + e.ids.length, 0));
  assert.ok(Math.abs(got.loss - want.loss) / want.loss < 1e-5, `${got.loss} vs ${want.loss}`);
  // The adapters change it (a control that the loss is not read from the base alone).
  assert.ok(Math.abs(cpuHeldOutLoss(cpu, examples).loss - want.loss) > 1e-4);

  for (const task of ["boolq", "piqa", "winogrande"] as const) {
    const rs = await loadCommonsense(data, task, "test", 2);
    const g = await scoreChoices((s, p) => logitsAt(rt, gpu, s, p), tok, task, rs, { batch: 3 });
    const c = await scoreChoices(cpuLogitsAt(cpu, cpuAdapters), tok, task, rs);
    assert.deepEqual(g.predictions, c.predictions, task);
    const err = relativeError(g.logLikelihoods.flat(), c.logLikelihoods.flat());
    assert.ok(err < 1e-5, `${task}: log-likelihoods relative error ${err}`);
    assert.deepEqual([g.correct, g.correctNorm], [c.correct, c.correctNorm], task);
  }
  gpu.release();
});
