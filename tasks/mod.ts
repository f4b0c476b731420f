/**
 * Task data: the Alpaca prompt template, the eight commonsense tasks (LLM-Adapters' files) and
 * MMLU (Hendrycks' CSVs), read and validated with the file and record named on a bad one.
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
