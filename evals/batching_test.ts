/**
 * Batch sizes chosen from the device: 8 on a CPU adapter; on the GPU kernel family as many as a
 * stated budget holds, up to the caps, never past the binding limit; and the evaluations give the
 * same predictions and scores whatever the batch size.
 */
import assert from "node:assert/strict";
import { testRuntime } from "../kernels/testing/mod.ts";
import { fromLlama2c } from "../models/llama/config.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { SYNTHETIC_SHAPES } from "../models/synthetic.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { Llama2cTokenizer } from "../models/tokenizer/llama2c.ts";
import { loadMmlu } from "../tasks/mmlu/data.ts";
import {
  CPU_ADAPTER_BATCH,
  GPU_PROMPTS_CAP,
  GPU_QUESTIONS_CAP,
  promptsPerForward,
  questionsPerBatch,
} from "./batching.ts";
import { evaluateCommonsense } from "./commonsense.ts";
import { evaluateMmlu } from "./mmlu.ts";

const GiB = 2 ** 30;

async function stories() {
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  return { ckpt, config, tok };
}

Deno.test("batching: 8 on a CPU adapter, more on the GPU family with a large budget, within the binding limit", async () => {
  const cpu = await testRuntime();
  const gpu = await testRuntime({ target: "gpu" });
  assert.equal(cpu.variants.target, "cpu-adapter", "the test adapter is a CPU adapter");
  const { config } = await stories();
  const lengths = Array.from({ length: 100 }, (_, i) => 40 + (i % 7));
  const gen = { beams: 4, maxNew: 32 };
  assert.equal(questionsPerBatch(cpu, config, lengths, gen), CPU_ADAPTER_BATCH);
  assert.equal(promptsPerForward(cpu, config, lengths), CPU_ADAPTER_BATCH);
  // A budget as large as the stated budget even when the caller states a large device memory.
  assert.equal(questionsPerBatch(cpu, config, lengths, gen, { deviceBytes: 64 * GiB }), 8);
  const big = { deviceBytes: 64 * GiB };
  assert.equal(questionsPerBatch(gpu, config, lengths, gen, big), GPU_QUESTIONS_CAP);
  assert.equal(promptsPerForward(gpu, config, lengths, big), GPU_PROMPTS_CAP);
  assert.equal(questionsPerBatch(gpu, config, lengths.slice(0, 5), gen, big), 5, "what is left");
  assert.equal(promptsPerForward(gpu, config, lengths, { ...big, cap: 20 }), 20);
  // The options override: a fixed size on either family.
  assert.equal(questionsPerBatch(gpu, config, lengths, gen, { ...big, fixed: 3 }), 3);
  assert.equal(promptsPerForward(cpu, config, lengths, { fixed: 16 }), 16);
  // A tiny budget keeps the CPU adapters' 8 where the bindings allow it.
  assert.equal(promptsPerForward(gpu, config, lengths, { deviceBytes: 2 ** 20 }), 8);
  // LLaMA-3-8B shapes at this device's binding limit (128 MiB on llvmpipe): the chooser stops
  // where a layer's KV cache or the widest activation would pass it, on both families.
  const bind = gpu.device.limits.maxStorageBufferBindingSize;
  const LLAMA3_8B = SYNTHETIC_SHAPES["llama3-8b"].config;
  const long = Array.from({ length: 100 }, () => 1000);
  const kvPerQuestion = 4 * 1032 * 1024 * 4; // a layer's keys: beams × positions × kvDim × 4
  const mlpPerPrompt = 1000 * 14336 * 4; // the prefill's widest activation: tokens × hidden × 4
  const fit = Math.max(
    1,
    Math.min(Math.floor(bind / kvPerQuestion), Math.floor(bind / mlpPerPrompt)),
  );
  assert.equal(questionsPerBatch(gpu, LLAMA3_8B, long, gen, big), Math.min(64, fit));
  assert.equal(questionsPerBatch(cpu, LLAMA3_8B, long, gen), Math.min(8, fit));
  const p8b = promptsPerForward(gpu, LLAMA3_8B, long, big);
  assert.equal(p8b, Math.max(1, Math.min(32, Math.floor(bind / mlpPerPrompt))));
  assert.throws(() => promptsPerForward(gpu, config, lengths, { fraction: 2 }), RangeError);
});

Deno.test("batching: commonsense generations and MMLU scores are the same at the chosen batch and one at a time", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const { ckpt, config, tok } = await stories();
  const model = await GpuLlama.create(rt, config, ckpt);
  const sizing = { deviceBytes: 64 * GiB };
  try {
    const records = [
      "Is the sky blue?",
      "Can a dog fly over the big tree in the park?",
      "Is it hot?",
      "Did Lily find the red ball under the bed?",
      "Is the cat sad?",
      "Was the boy happy to see his mom at the door?",
      "Is the sun up?",
      "Can fish swim?",
      "Did Tom eat the cake?",
      "Is the dog big?",
    ].map((instruction, i) => ({
      instruction,
      input: "",
      output: "",
      answer: i % 2 ? "false" : "true",
    }));
    const commonsense = async (questionsPerBatch?: number) => {
      const batches: number[] = [];
      const r = await evaluateCommonsense(rt, model, tok, { boolq: records }, {
        beams: 2,
        maxNew: 6,
        questionsPerBatch,
        sizing,
        onBatch: (n) => batches.push(n),
      });
      return { ...r, batches };
    };
    const chosen = await commonsense();
    const one = await commonsense(1);
    assert.deepEqual(chosen.batches, [10], "all 10 questions in one batch");
    assert.deepEqual(one.batches, Array(10).fill(1));
    assert.deepEqual(chosen.generations, one.generations);
    assert.deepEqual(chosen.predictions, one.predictions);
    assert.deepEqual(chosen.tasks, one.tasks);

    const data: Parameters<typeof evaluateMmlu>[3] = {};
    for (const s of ["astronomy", "sociology"]) {
      data[s] = {
        dev: await loadMmlu(dataDir(), s, "dev"),
        test: await loadMmlu(dataDir(), s, "test", 10),
      };
    }
    const mmlu = async (batch?: number) => {
      const batches: number[] = [];
      const r = await evaluateMmlu(rt, model, tok, data, {
        shots: 1,
        maxLen: 512,
        batch,
        sizing,
        onBatch: (n) => batches.push(n),
      });
      return { ...r, batches };
    };
    const all = await mmlu();
    const single = await mmlu(1);
    assert.deepEqual(all.batches, [10, 10], "one forward per subject");
    assert.deepEqual(single.batches, Array(20).fill(1));
    const { batches: _a, ...scoresAll } = all;
    const { batches: _s, ...scoresOne } = single;
    assert.deepEqual(scoresAll, scoresOne);
    assert.equal(scoresAll.total, 20);
  } finally {
    model.release();
  }
});
