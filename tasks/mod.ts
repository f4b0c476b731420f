/**
 * Task data: the Alpaca prompt template, the eight commonsense tasks (LLM-Adapters' files) and
 * MMLU (Hendrycks' CSVs), read and validated with the file and record named on a bad one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatQuestion, parseMmluCsv, parseRecords } from "./mod.ts";
 * // An MMLU subject file: question, four choices, the answer letter.
 * const [q] = parseMmluCsv('"What is 2 + 2?",3,4,5,6,B\n', "demo.csv");
 * assert.deepEqual(q, { question: "What is 2 + 2?", choices: ["3", "4", "5", "6"], answer: 1 });
 * assert.equal(formatQuestion(q, true), "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n");
 * // Commonsense records: `input` defaults to "", an answer must be one of the task's words.
 * const [r] = parseRecords([{ instruction: "Q", output: "true", answer: "true" }], "d.json", true);
 * assert.equal(r.input, "");
 * const bad = [{ instruction: "Q", output: "x", answer: "maybe" }];
 * assert.throws(
 *   () => parseRecords(bad, "d.json", true, "boolq"),
 *   /d\.json: record 0: field answer: "maybe" is not one of true, false/,
 * );
 * ```
 *
 * @module
 */
export {
  evaluationPrompt,
  type InstructionRecord,
  InstructionRecordSchema,
  PROTOCOL,
  type Protocol,
  type ProtocolName,
  PROTOCOLS,
  responseOf,
  trainingExample,
  trainingText,
} from "./alpaca.ts";
export {
  answerWords,
  COMMONSENSE_ORDER,
  COMMONSENSE_TASKS,
  type CommonsenseTask,
  loadCommonsense,
  loadRecordFile,
  parseRecords,
  parseTask,
} from "./commonsense/data.ts";
export {
  formatQuestion,
  formatSubject,
  loadMmlu,
  MMLU_SUBJECTS,
  type MmluCategory,
  mmluCategory,
  mmluPrompt,
  type MmluQuestion,
  parseMmluCsv,
} from "./mmlu/data.ts";
export { parseCsv } from "./csv.ts";
