import assert from "node:assert/strict";
import { scoreMmlu } from "../evals/mmlu.ts";
import { testRuntime } from "../kernels/testing/mod.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { fromLlama2c } from "../models/llama/config.ts";
import { CpuLlama } from "../models/llama/cpu/model.ts";
import { cpuLogitsAt, logitsAt } from "../models/llama/generate.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { Llama2cTokenizer } from "../models/tokenizer/llama2c.ts";
import { loadMmlu } from "../tasks/mmlu/data.ts";
import { runCommonsense, runInstructionTuning } from "./pipeline.ts";

async function stories() {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  return { rt, ckpt, config, tok };
}

Deno.test("pipeline: MMLU scoring on the GPU equals the float64 CPU model's, 0- and 1-shot", async () => {
  const { rt, ckpt, config, tok } = await stories();
  const model = await GpuLlama.create(rt, config, ckpt);
  const cpu = new CpuLlama(config, ckpt);
  const data: Record<
    string,
    { dev: Awaited<ReturnType<typeof loadMmlu>>; test: Awaited<ReturnType<typeof loadMmlu>> }
  > = {};
  for (const s of ["astronomy", "sociology"]) {
    data[s] = {
      dev: await loadMmlu(dataDir(), s, "dev"),
      test: await loadMmlu(dataDir(), s, "test", 2),
    };
  }
  for (const shots of [0, 1]) {
    const gpu = await scoreMmlu((s, at) => logitsAt(rt, model, s, at), tok, data, {
      shots,
      maxLen: 512,
      batch: 4,
    });
    const ref = await scoreMmlu(cpuLogitsAt(cpu), tok, data, { shots, maxLen: 512 });
    assert.deepEqual(gpu, ref);
    assert.equal(gpu.subjects.astronomy.total, 2);
    assert.ok(gpu.categories.STEM !== undefined && gpu.categories["social sciences"] !== undefined);
  }
  model.release();
});

Deno.test("pipeline: train → evaluate on stories260K (boolq subset) end to end, and the base model alone", async () => {
  const started = performance.now();
  const { rt, ckpt, config, tok } = await stories();
  const model = await GpuLlama.create(rt, config, ckpt, { base: "nf4" });
  const base = await runCommonsense(rt, model, tok, {
    dataDir: dataDir(),
    tasks: ["boolq"],
    testLimit: 3,
    maxLen: 256,
    eval: { beams: 1, maxNew: 6 },
  });
  assert.equal(base.history.length, 0);
  assert.equal(base.eval.tasks.boolq!.total, 3);
  const adapters = await adaptersForModel(
    config,
    { kind: "moka", components: [[4, 4], [2, 2]] },
    1,
  );
  await model.attach(adapters);
  const tuned = await runCommonsense(rt, model, tok, {
    dataDir: dataDir(),
    tasks: ["boolq"],
    trainLimit: 8,
    testLimit: 3,
    maxLen: 256,
    train: { steps: 6, lr: 1e-2, batchSize: 2, seed: 3 },
    eval: { beams: 2, maxNew: 6 },
  });
  assert.equal(tuned.history.length, 6);
  assert.ok(tuned.history.at(-1)!.loss < tuned.history[0].loss, "training lowers the loss");
  const s = tuned.eval.tasks.boolq!;
  assert.ok(s.accuracy >= 0 && s.accuracy <= 1 && s.correct + s.unparseable <= s.total);
  assert.equal(tuned.eval.generations.boolq.length, 3);
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds < 60, `end to end took ${seconds.toFixed(0)} s`);
  model.release();
});

Deno.test("pipeline: instruction tuning on an Alpaca file (with and without input), then MMLU", async () => {
  const { rt, ckpt, config, tok } = await stories();
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/alpaca.json`,
    JSON.stringify([
      { instruction: "Name a color.", input: "", output: "Blue." },
      { instruction: "Add the numbers.", input: "2 and 3", output: "5" },
      { instruction: "Say hello.", output: "Hello!" },
    ]),
  );
  const model = await GpuLlama.create(rt, config, ckpt, { base: "nf4" });
  await model.attach(
    await adaptersForModel(config, { kind: "lora", r: 2, alpha: 4 }, 2, { targets: ["q", "v"] }),
  );
  const r = await runInstructionTuning(rt, model, tok, {
    trainFile: `${dir}/alpaca.json`,
    maxLen: 128,
    train: { steps: 4, lr: 1e-2, batchSize: 3, seed: 1 },
    mmlu: { dataDir: dataDir(), subjects: ["marketing"], limit: 2, shots: 1 },
  });
  assert.equal(r.history.length, 4);
  assert.ok(r.history.at(-1)!.loss < r.history[0].loss);
  assert.equal(r.mmlu.subjects.marketing.total, 2);
  model.release();
  await Deno.remove(dir, { recursive: true });
});
