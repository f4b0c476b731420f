import assert from "node:assert/strict";
import { PROTOCOL, responseOf } from "../tasks/alpaca.ts";
import { extractAnswer, scoreAnswers } from "./commonsense.ts";

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
