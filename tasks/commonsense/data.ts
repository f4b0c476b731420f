/**
 * The eight commonsense benchmarks in the LLM-Adapters JSON format (arrays of
 * {instruction, input, output, answer}) and commonsense_170k-style mixed training files.
 * Files are read whole and every record validated before any is returned: a bad record names the
 * file and its index, and a failing file never leaves a partial dataset in use.
 */
import { z } from "../../deps/zod.ts";
import { type InstructionRecord, InstructionRecordObject } from "../alpaca.ts";

/** The tasks, with the answer words their extraction looks for (LLM-Adapters' extract_answer). */
export const COMMONSENSE_TASKS = {
  boolq: /true|false/,
  piqa: /solution1|solution2/,
  social_i_qa: /answer1|answer2|answer3|answer4|answer5/,
  hellaswag: /ending1|ending2|ending3|ending4/,
  winogrande: /option1|option2/,
  "ARC-Easy": /answer1|answer2|answer3|answer4|answer5/,
  "ARC-Challenge": /answer1|answer2|answer3|answer4|answer5/,
  openbookqa: /answer1|answer2|answer3|answer4|answer5/,
} as const;

/** One of the eight tasks (folder names as LLM-Adapters ships them). */
export type CommonsenseTask = keyof typeof COMMONSENSE_TASKS;

/** Task names in the paper's table order. */
export const COMMONSENSE_ORDER: CommonsenseTask[] = [
  "boolq",
  "piqa",
  "social_i_qa",
  "hellaswag",
  "winogrande",
  "ARC-Easy",
  "ARC-Challenge",
  "openbookqa",
];

/** Parse a task name (case-insensitive, "arc_e"/"siqa" style aliases accepted). */
export function parseTask(name: string): CommonsenseTask {
  const aliases: Record<string, CommonsenseTask> = {
    arc_e: "ARC-Easy",
    "arc-e": "ARC-Easy",
    arc_c: "ARC-Challenge",
    "arc-c": "ARC-Challenge",
    siqa: "social_i_qa",
    obqa: "openbookqa",
  };
  const hit = COMMONSENSE_ORDER.find((t) => t.toLowerCase() === name.toLowerCase()) ??
    aliases[name.toLowerCase()];
  if (!hit) {
    throw new RangeError(`unknown commonsense task "${name}"; use ${COMMONSENSE_ORDER.join(", ")}`);
  }
  return hit;
}

/** The exact answer words of `task` (boolq: `true`, `false`, as the released files spell them). */
export function answerWords(task: CommonsenseTask): string[] {
  return COMMONSENSE_TASKS[task].source.split("|");
}

/**
 * Validate a parsed JSON array of records; errors name `source` and the record index. With
 * `task`, an `answer` must be exactly one of its words ({@link answerWords}). An empty array is an
 * error: a split without records is a broken file, not an empty benchmark.
 */
export function parseRecords(
  json: unknown,
  source: string,
  needAnswer: boolean,
  task?: CommonsenseTask,
): InstructionRecord[] {
  if (!Array.isArray(json)) throw new Error(`${source}: expected a JSON array of records`);
  if (!json.length) throw new Error(`${source}: no records`);
  const schema = needAnswer
    ? InstructionRecordObject.extend({ answer: z.string().min(1) })
    : InstructionRecordObject;
  const words = task ? answerWords(task) : null;
  return json.map((r, i) => {
    const p = schema.safeParse(r);
    if (!p.success) {
      const issue = p.error.issues[0];
      throw new Error(
        `${source}: record ${i}: field ${issue.path.join(".") || "(record)"}: ${issue.message}`,
      );
    }
    const answer = p.data.answer;
    if (words && answer !== undefined && !words.includes(answer)) {
      throw new Error(
        `${source}: record ${i}: field answer: "${answer}" is not one of ${words.join(", ")}`,
      );
    }
    return p.data;
  });
}

/**
 * The task whose folder holds `path` (`…/boolq/test.json` → boolq, as LLM-Adapters lays out its
 * `dataset/`), or null.
 */
export function taskOfPath(path: string): CommonsenseTask | null {
  const folder = path.replaceAll("\\", "/").split("/").at(-2);
  return COMMONSENSE_ORDER.find((t) => t === folder) ?? null;
}

/**
 * Read and validate one LLM-Adapters JSON file (test files need `answer`). Answers are checked
 * against a task's words: `task`'s, else the task whose folder holds the file
 * ({@link taskOfPath}). `null`, or a file outside a task's folder (commonsense_170k mixes tasks,
 * math_10k answers with numbers), checks only that answers are non-empty text.
 */
export async function loadRecordFile(
  path: string,
  needAnswer: boolean,
  task?: CommonsenseTask | null,
): Promise<InstructionRecord[]> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    // Keep "not found" recognisable: callers skip tasks that ship no split.
    if (e instanceof Deno.errors.NotFound) throw new Deno.errors.NotFound(`${path}: no such file`);
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  return parseRecords(
    json,
    path,
    needAnswer,
    task === undefined ? taskOfPath(path) ?? undefined : task ?? undefined,
  );
}

/** A task's split from `<dataDir>/commonsense/<task>/<split>.json`, first `limit` records. */
export async function loadCommonsense(
  dataDir: string,
  task: CommonsenseTask,
  split: "train" | "test",
  limit?: number,
): Promise<InstructionRecord[]> {
  const records = await loadRecordFile(
    `${dataDir}/commonsense/${task}/${split}.json`,
    split === "test",
    task,
  );
  return limit === undefined ? records : records.slice(0, limit);
}
