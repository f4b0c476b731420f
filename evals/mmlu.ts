/**
 * MMLU scoring by next-token logits, as Hendrycks' evaluate.py: after the k-shot prompt ending in
 * "Answer:", the prediction is the letter among " A", " B", " C", " D" whose token has the highest
 * logit (by log-likelihood when a letter is several tokens). Accuracy per
 * subject, per category (STEM, humanities, social sciences, other) and overall (all questions
 * weighted equally, as Hendrycks et al. report it), plus the unweighted mean over subjects.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { majorityBaseline } from "./stats.ts";
import { logitsAt } from "../models/llama/generate.ts";
import {
  continuationLogLikelihoods,
  type LogitsAt,
  type ScoredPair,
  splitContinuation,
} from "./loglik.ts";
import type { GpuLlama } from "../models/llama/gpu/model.ts";
import { promptsPerForward } from "./batching.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import {
  type MmluCategory,
  mmluCategory,
  mmluPrompt,
  type MmluQuestion,
} from "../tasks/mmlu/data.ts";

/**
 * The answer letters after a prompt: for each of " A", " B", " C", " D" (Hendrycks' `" {}"`), the
 * context and the continuation tokens when prompt and letter are encoded together. With most
 * tokenizers every letter is one token after the same context; tok512-like vocabularies may split
 * some letters, and those questions are scored by log-likelihood.
 */
export function letterContinuations(
  tok: TextTokenizer,
  prompt: string,
  maxLen = Infinity,
): ScoredPair[] {
  const encode = (t: string) => tok.encode(t, { bos: true });
  return [..."ABCD"].map((l) => {
    const pair = splitContinuation(encode, prompt, ` ${l}`);
    // A question longer than the model's context even at 0 shots keeps BOS and its last tokens.
    const room = maxLen - pair.continuation.length;
    if (pair.context.length > room) {
      pair.context = [pair.context[0], ...pair.context.slice(pair.context.length - room + 1)];
    }
    return pair;
  });
}

/** Accuracy summary. */
export interface MmluScores {
  /** Per subject: correct / total. */
  subjects: Record<string, { accuracy: number; correct: number; total: number }>;
  /** Per category, all its questions weighted equally. */
  categories: Partial<Record<MmluCategory, number>>;
  /** All questions weighted equally. */
  average: number;
  /** Unweighted mean of subject accuracies. */
  subjectMean: number;
  /** Questions in all. */
  total: number;
  /** Right answers in all. */
  correct: number;
  /** Accuracy of always answering the most frequent gold letter (of these questions). */
  majority: number;
}

/** Options of {@link evaluateMmlu}. */
export interface MmluOptions {
  /** Exemplars from dev (0 or 5 in the protocol). */
  shots: number;
  /**
   * Prompts per forward: a number, or a function of the token lengths of the prompts still to
   * score (in order) giving how many of them go next. Default: {@link evaluateMmlu} chooses from
   * the device ({@link promptsPerForward}: 8 on CPU adapters; on GPUs as many as fit `sizing`'s
   * memory budget, up to 32); {@link scoreMmlu} with any other scorer takes 8.
   */
  batch?: number | ((lengths: readonly number[]) => number);
  /** The memory budget and cap of {@link evaluateMmlu}'s default batch on GPUs. */
  sizing?: {
    /** Device memory in bytes (default: the device's `maxBufferSize`). */
    deviceBytes?: number;
    /** The share of it one batch may take (default 0.5). */
    fraction?: number;
    /** Most items per batch. */
    cap?: number;
  };
  /** Called with each forward's prompt count before it runs. */
  onBatch?: (prompts: number) => void;
  /** Longest prompt in tokens (exemplars are dropped until it fits, as the reference code does). */
  maxLen: number;
}

/**
 * A question's prompt text, dropping exemplars while its tokens (and the longest answer letter)
 * exceed maxLen, as Hendrycks' `crop` loop does; at 0 shots the text is returned as is.
 */
export function mmluPromptText(
  tok: TextTokenizer,
  subject: string,
  dev: MmluQuestion[],
  q: MmluQuestion,
  shots: number,
  maxLen: number,
): string {
  for (let k = shots; k > 0; k--) {
    const text = mmluPrompt(subject, dev, q, k);
    if (tok.encode(text + " A", { bos: true }).length <= maxLen) return text;
  }
  return mmluPrompt(subject, dev, q, 0);
}

/**
 * Score subjects with any scorer of logits: the prediction is the letter whose continuation the
 * model finds likeliest — its logit after the prompt when every letter is one token after the
 * same context (Hendrycks' comparison of " A".." D"), else the continuations' log-likelihoods.
 */
export async function scoreMmlu(
  logitsAt: LogitsAt,
  tok: TextTokenizer,
  data: Record<string, { dev: MmluQuestion[]; test: MmluQuestion[] }>,
  options: MmluOptions,
  progress?: (subject: string, done: number, total: number) => void,
): Promise<MmluScores> {
  const chosen = options.batch ?? 8;
  if (typeof chosen === "number" && !(Number.isInteger(chosen) && chosen >= 1)) {
    throw new RangeError(`scoreMmlu: batch=${chosen}`);
  }
  const batchOf = typeof chosen === "number"
    ? (lengths: readonly number[]) => Math.min(chosen, lengths.length)
    : (lengths: readonly number[]) => {
      const n = chosen(lengths);
      if (!(Number.isInteger(n) && n >= 1 && n <= lengths.length)) {
        throw new RangeError(`scoreMmlu: a batch of ${n} of ${lengths.length} prompts`);
      }
      return n;
    };
  const subjects: MmluScores["subjects"] = {};
  const cat = new Map<MmluCategory, { correct: number; total: number }>();
  let correctAll = 0;
  let totalAll = 0;
  const gold: number[] = [];
  for (const [subject, { dev, test }] of Object.entries(data)) {
    let correct = 0;
    const all = test.map((q) =>
      letterContinuations(
        tok,
        mmluPromptText(tok, subject, dev, q, options.shots, options.maxLen),
        options.maxLen,
      )
    );
    // The longest sequence each question feeds the model (its context, or context + letter).
    const lengths = all.map((ls) => {
      let n = 0;
      for (const l of ls) n = Math.max(n, l.context.length + l.continuation.length - 1);
      return n;
    });
    for (let i = 0; i < test.length;) {
      const batch = batchOf(lengths.slice(i));
      options.onBatch?.(batch);
      const qs = test.slice(i, i + batch);
      const letters = all.slice(i, i + batch);
      const oneToken = letters.map((ls) =>
        ls.every((l) => l.continuation.length === 1 && l.context.join() === ls[0].context.join())
      );
      // One forward for the questions whose letters are single tokens after the same prompt.
      const fast = qs.map((_, j) => j).filter((j) => oneToken[j]);
      const rows = fast.length
        ? await logitsAt(
          fast.map((j) => letters[j][0].context),
          fast.map((j) => [letters[j][0].context.length - 1]),
        )
        : [];
      const scores: number[][] = qs.map(() => []);
      fast.forEach((j, f) =>
        scores[j] = letters[j].map((l) => Number(rows[f][0][l.continuation[0]]))
      );
      // The others by the log-likelihood of each letter's tokens, all in one batch of sequences.
      const slow = qs.map((_, j) => j).filter((j) => !oneToken[j]);
      const lls = await continuationLogLikelihoods(
        logitsAt,
        slow.flatMap((j) => letters[j]),
        4 * batch,
      );
      slow.forEach((j, k) => scores[j] = lls.slice(4 * k, 4 * k + 4).map((x) => x.logLikelihood));
      qs.forEach((q, j) => {
        gold.push(q.answer);
        let best = 0;
        for (let c = 1; c < 4; c++) if (scores[j][c] > scores[j][best]) best = c;
        if (best === q.answer) correct++;
      });
      i += batch;
      progress?.(subject, i, test.length);
    }
    subjects[subject] = {
      accuracy: test.length ? correct / test.length : 0,
      correct,
      total: test.length,
    };
    const c = cat.get(mmluCategory(subject)) ?? { correct: 0, total: 0 };
    cat.set(mmluCategory(subject), { correct: c.correct + correct, total: c.total + test.length });
    correctAll += correct;
    totalAll += test.length;
  }
  const accs = Object.values(subjects).map((s) => s.accuracy);
  return {
    subjects,
    categories: Object.fromEntries(
      [...cat].map(([k, v]) => [k, v.total ? v.correct / v.total : 0]),
    ),
    average: totalAll ? correctAll / totalAll : 0,
    subjectMean: accs.length ? accs.reduce((a, b) => a + b, 0) / accs.length : 0,
    total: totalAll,
    correct: correctAll,
    majority: majorityBaseline(gold),
  };
}

/** MMLU on the GPU model (batched forward passes). */
export function evaluateMmlu(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  data: Record<string, { dev: MmluQuestion[]; test: MmluQuestion[] }>,
  options: MmluOptions,
  progress?: (subject: string, done: number, total: number) => void,
): Promise<MmluScores> {
  // A number given is the most per forward, still cut where a tensor would pass the binding limit.
  const fixed = typeof options.batch === "number" ? options.batch : undefined;
  const batch = typeof options.batch === "function" ? options.batch : (
    lengths: readonly number[],
  ) => promptsPerForward(rt, model.config, lengths, { ...options.sizing, fixed });
  return scoreMmlu(
    (seqs, at) => logitsAt(rt, model, seqs, at),
    tok,
    data,
    { ...options, batch },
    progress,
  );
}
