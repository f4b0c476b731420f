import assert from "node:assert/strict";
import { testRuntime } from "../kernels/testing/mod.ts";
import { fromLlama2c } from "../models/llama/config.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { Llama2cTokenizer } from "../models/tokenizer/llama2c.ts";
import { PROTOCOL, responseOf } from "../tasks/alpaca.ts";
import { evaluateCommonsense, extractAnswer, scoreAnswers } from "./commonsense.ts";

Deno.test("commonsense: answer extraction follows LLM-Adapters' rules on hand-written generations", () => {
  assert.equal(extractAnswer("boolq", "the correct answer is true"), "true");
  assert.equal(
    extractAnswer("boolq", "### Response:\nfalse, not true"),
    "false",
    "first match wins",
  );
  assert.equal(extractAnswer("boolq", "TRUE"), "", "case-sensitive as the reference");
  assert.equal(extractAnswer("piqa", "the correct answer is solution2"), "solution2");
  assert.equal(extractAnswer("social_i_qa", "answer3 or answer1"), "answer3");
  assert.equal(extractAnswer("ARC-Challenge", "the correct answer is answer4"), "answer4");
  assert.equal(extractAnswer("openbookqa", "answer5"), "answer5");
  assert.equal(extractAnswer("hellaswag", "ending2 then ending4"), "ending2");
  assert.equal(extractAnswer("winogrande", "option1"), "option1");
  assert.equal(extractAnswer("winogrande", "I cannot tell"), "");
  assert.equal(extractAnswer("ARC-Easy", "answer is 3"), "");
  const s = scoreAnswers(["true", "", "false", "true"], ["true", "true", "true", "true"]);
  assert.deepEqual(s, { accuracy: 0.5, correct: 2, total: 4, unparseable: 1 });
});

Deno.test("protocol: extraction splits on the first marker (LLM-Adapters) or the last (DoRA)", () => {
  const text = "prompt ### Response:\n the answer is true ### Response: false, solution2 ";
  assert.equal(responseOf(text, PROTOCOL["llm-adapters"]), "the answer is true");
  assert.equal(responseOf(text, PROTOCOL.dora), "false, solution2");
  assert.equal(extractAnswer("boolq", text, PROTOCOL["llm-adapters"]), "true");
  assert.equal(extractAnswer("boolq", text, PROTOCOL.dora), "false");
  assert.equal(responseOf("no marker here "), "no marker here");
});

Deno.test("commonsense: questions decoded in batches give the generations of one question at a time", async () => {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const model = await GpuLlama.create(rt, config, ckpt);
  const records = ["Is the sky blue?", "Can a dog fly over the big tree in the park?", "Is it hot?"]
    .map((instruction, i) => ({
      instruction,
      input: "",
      output: "",
      answer: i % 2 ? "false" : "true",
    }));
  const run = (questionsPerBatch: number) => {
    const calls: number[] = [];
    return evaluateCommonsense(rt, model, tok, { boolq: records }, {
      beams: 2,
      maxNew: 8,
      questionsPerBatch,
      progress: (_, done) => calls.push(done),
    }).then((r) => ({ ...r, calls }));
  };
  const one = await run(1);
  const batched = await run(2);
  assert.deepEqual(batched.generations, one.generations);
  assert.deepEqual(batched.predictions, one.predictions);
  assert.deepEqual(one.calls, [1, 2, 3]);
  assert.deepEqual(batched.calls, [2, 3], "progress after each batch");
  assert.ok(new Set(one.generations.boolq).size > 1, "the questions get different generations");
  model.release();
});
