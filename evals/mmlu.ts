/**
 * MMLU scoring by next-token logits: after the k-shot prompt ending in "Answer:", the prediction
 * is the letter among " A", " B", " C", " D" whose token has the highest logit. Accuracy per
 * subject, per category (STEM, humanities, social sciences, other) and overall (all questions
 * weighted equally, as Hendrycks et al. report it), plus the unweighted mean over subjects.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { nextTokenLogits } from "../models/llama/generate.ts";
import type { GpuLlama } from "../models/llama/gpu/model.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import {
  type MmluCategory,
  mmluCategory,
  mmluPrompt,
  type MmluQuestion,
} from "../tasks/mmlu/data.ts";

/** Logits after each prompt (the GPU model batched, or the CPU reference). */
export type NextLogits = (prompts: number[][]) => Promise<ArrayLike<number>[]>;

/** The token id of each answer letter as it follows "Answer:". */
export function letterIds(tok: TextTokenizer): number[] {
  return [..."ABCD"].map((l) => tok.encode(`Answer: ${l}`).at(-1)!);
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
}

/** Options of {@link evaluateMmlu}. */
export interface MmluOptions {
  /** Exemplars from dev (0 or 5 in the protocol). */
  shots: number;
  /** Prompts per forward. */
  batch?: number;
  /** Longest prompt in tokens (exemplars are dropped until it fits, as the reference code does). */
  maxLen: number;
}

/** Token ids of a question's prompt, dropping exemplars while it is longer than maxLen. */
export function mmluPromptIds(
  tok: TextTokenizer,
  subject: string,
  dev: MmluQuestion[],
  q: MmluQuestion,
  shots: number,
  maxLen: number,
): number[] {
  for (let k = shots; k >= 0; k--) {
    const ids = tok.encode(mmluPrompt(subject, dev, q, k), { bos: true });
    if (ids.length <= maxLen) return ids;
  }
  const ids = tok.encode(mmluPrompt(subject, dev, q, 0), { bos: true });
  return [ids[0], ...ids.slice(ids.length - maxLen + 1)]; // keep BOS, cut the oldest text
}

/** Score subjects with any next-token scorer. */
export async function scoreMmlu(
  next: NextLogits,
  tok: TextTokenizer,
  data: Record<string, { dev: MmluQuestion[]; test: MmluQuestion[] }>,
  options: MmluOptions,
  progress?: (subject: string, done: number, total: number) => void,
): Promise<MmluScores> {
  const letters = letterIds(tok);
  const batch = options.batch ?? 8;
  const subjects: MmluScores["subjects"] = {};
  const cat = new Map<MmluCategory, { correct: number; total: number }>();
  let correctAll = 0;
  let totalAll = 0;
  for (const [subject, { dev, test }] of Object.entries(data)) {
    let correct = 0;
    for (let i = 0; i < test.length; i += batch) {
      const qs = test.slice(i, i + batch);
      const logits = await next(
        qs.map((q) => mmluPromptIds(tok, subject, dev, q, options.shots, options.maxLen)),
      );
      qs.forEach((q, j) => {
        let best = 0;
        for (let c = 1; c < 4; c++) if (logits[j][letters[c]] > logits[j][letters[best]]) best = c;
        if (best === q.answer) correct++;
      });
      progress?.(subject, Math.min(i + batch, test.length), test.length);
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
  return scoreMmlu((prompts) => nextTokenLogits(rt, model, prompts), tok, data, options, progress);
}
