/**
 * Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores such tasks: each
 * option is a continuation of the question's context; the prediction is the option with the
 * highest Σ log p (`acc`) or the highest Σ log p per byte of the option's text (`acc_norm`).
 * It needs no generation and no answer parsing, so it reads something from models that never
 * produce the answer format.
 *
 * The question and its options are parsed from the LLM-Adapters records (the only form the data
 * ships in); contexts follow lm-eval's templates as far as the records carry the fields:
 * - boolq: "Question: {question}\nAnswer:" with " no" / " yes" (the records have no passage);
 * - piqa, ARC-Easy, ARC-Challenge: "Question: {question}\nAnswer:" with " {option}";
 * - social_i_qa: "Q: {question}\nA:"; openbookqa: "{question}"; hellaswag: "{context}";
 * - winogrande: lm-eval's partial scoring — the sentence up to the blank with each option filled
 *   in is the context, the rest of the sentence the (shared) continuation.
 */
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import type { InstructionRecord } from "../tasks/alpaca.ts";
import type { CommonsenseTask } from "../tasks/commonsense/data.ts";
import {
  continuationLogLikelihoods,
  type LogitsAt,
  type ScoredPair,
  splitContinuation,
} from "./loglik.ts";

/** A record as a multiple-choice question: (context, continuation) per option, and the gold one. */
export interface ChoiceQuestion {
  /** Context text of each option (the same for all but winogrande's). */
  contexts: string[];
  /** Continuation text of each option, with its leading space. */
  continuations: string[];
  /** Index of the right option. */
  gold: number;
}

const FORMAT = /\n*\s*Answer format: ([\w/]+)\s*$/;

/** The text between `prefix` and the options block of an instruction. */
function between(text: string, prefix: RegExp, end: RegExp): string | null {
  const m = prefix.exec(text);
  if (!m) return null;
  const rest = text.slice(m.index + m[0].length);
  const e = end.exec(rest);
  return (e ? rest.slice(0, e.index) : rest).trim();
}

/** Options labelled `Label1: … Label2: …` (space- or blank-line-separated). */
function labelledOptions(text: string, label: string): string[] | null {
  const body = text.replace(FORMAT, "");
  const re = new RegExp(`${label}(\\d+):\\s*`, "g");
  const marks = [...body.matchAll(re)];
  if (marks.length < 2) return null;
  return marks.map((m, i) => {
    const from = m.index! + m[0].length;
    const to = i + 1 < marks.length ? marks[i + 1].index! : body.length;
    return body.slice(from, to).trim();
  });
}

/**
 * Parse a record of `task` into a multiple-choice question; throws naming the task and `index`
 * when the record is not in the LLM-Adapters form.
 */
export function choiceQuestion(
  task: CommonsenseTask,
  r: Pick<InstructionRecord, "instruction" | "answer">,
  index = 0,
): ChoiceQuestion {
  const fail = (why: string): never => {
    throw new Error(`${task} record ${index}: ${why} (not the LLM-Adapters form)`);
  };
  const answer = r.answer ?? fail("no answer");
  const text = r.instruction;
  const goldOf = (labels: string[]) => {
    const g = labels.indexOf(answer);
    return g >= 0 ? g : fail(`answer "${answer}" is not among ${labels.join("/")}`);
  };
  const numbered = (label: string, prefix: RegExp, template: (q: string) => string) => {
    const q = between(text, prefix, new RegExp(`\\s*${label}1:`)) ?? fail("no question");
    const options = labelledOptions(text, label) ?? fail(`no ${label}1/${label}2 options`);
    const words = options.map((_, i) => `${label.toLowerCase()}${i + 1}`);
    return {
      contexts: options.map(() => template(q)),
      continuations: options.map((o) => ` ${o}`),
      gold: goldOf(words),
    };
  };
  switch (task) {
    case "boolq": {
      const q = between(text, /question:\s*/i, FORMAT) ?? fail("no question");
      return {
        contexts: [0, 1].map(() => `Question: ${q}\nAnswer:`),
        continuations: [" no", " yes"],
        gold: goldOf(["false", "true"]),
      };
    }
    case "piqa":
      return numbered("Solution", /question:\s*/, (q) => `Question: ${q}\nAnswer:`);
    case "ARC-Easy":
    case "ARC-Challenge":
      return numbered("Answer", /question:\s*/, (q) => `Question: ${q}\nAnswer:`);
    case "social_i_qa":
      return numbered("Answer", /question:\s*/, (q) => `Q: ${q}\nA:`);
    case "openbookqa":
      return numbered("Answer", /question:\s*/, (q) => q);
    case "hellaswag":
      return numbered("Ending", /sentence:\s*/, (q) => q);
    case "winogrande": {
      const sentence = between(text, /sentence:\s*/, /\s*Option1:/) ?? fail("no sentence");
      const options = labelledOptions(text, "Option") ?? fail("no Option1/Option2");
      const blank = sentence.indexOf("_");
      if (blank < 0) fail("no blank in the sentence");
      const rest = ` ${sentence.slice(blank + 1).trim()}`;
      return {
        contexts: options.map((o) => sentence.slice(0, blank) + o),
        continuations: options.map(() => rest),
        gold: goldOf(options.map((_, i) => `option${i + 1}`)),
      };
    }
  }
}

/** One task's multiple-choice scores. */
export interface ChoiceScore {
  /** Accuracy by Σ log p. */
  acc: number;
  /** Accuracy by Σ log p per byte of the option. */
  accNorm: number;
  /** Right by acc. */
  correct: number;
  /** Right by acc_norm. */
  correctNorm: number;
  /** Questions. */
  total: number;
  /** Mean 1/(number of options): the expected accuracy of a random guess. */
  chance: number;
}

const utf8 = new TextEncoder();

/**
 * Score `records` of `task` through any {@link LogitsAt} (the GPU model batched, or the float64
 * reference): every option of every question in batches of `batch` sequences.
 */
export async function scoreChoices(
  logitsAt: LogitsAt,
  tok: TextTokenizer,
  task: CommonsenseTask,
  records: Pick<InstructionRecord, "instruction" | "answer">[],
  options: { batch?: number; maxLen?: number } = {},
): Promise<ChoiceScore & { predictions: number[]; logLikelihoods: number[][] }> {
  const questions = records.map((r, i) => choiceQuestion(task, r, i));
  const encode = (t: string) => tok.encode(t, { bos: true });
  const pairs: ScoredPair[] = [];
  for (const q of questions) {
    q.contexts.forEach((c, k) => {
      const pair = splitContinuation(encode, c, q.continuations[k]);
      const room = (options.maxLen ?? Infinity) - pair.continuation.length;
      if (pair.context.length > room) { // keep BOS and the context's end, as MMLU does
        pair.context = [pair.context[0], ...pair.context.slice(pair.context.length - room + 1)];
      }
      pairs.push(pair);
    });
  }
  const lls = await continuationLogLikelihoods(logitsAt, pairs, options.batch ?? 16);
  let at = 0;
  let correct = 0;
  let correctNorm = 0;
  let chance = 0;
  const predictions: number[] = [];
  const logLikelihoods: number[][] = [];
  for (const q of questions) {
    const ll = q.contexts.map((_, k) => lls[at + k].logLikelihood);
    logLikelihoods.push(ll);
    at += q.contexts.length;
    const argmax = (v: number[]) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);
    const pred = argmax(ll);
    // lm-eval divides by the length of the option's text (the delimiter space not counted).
    const norm = argmax(ll.map((x, k) => x / utf8.encode(q.continuations[k].slice(1)).length));
    predictions.push(pred);
    if (pred === q.gold) correct++;
    if (norm === q.gold) correctNorm++;
    chance += 1 / q.contexts.length;
  }
  const n = questions.length;
  return {
    acc: n ? correct / n : 0,
    accNorm: n ? correctNorm / n : 0,
    correct,
    correctNorm,
    total: n,
    chance: n ? chance / n : 0,
    predictions,
    logLikelihoods,
  };
}
