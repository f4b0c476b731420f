/**
 * Evaluations: commonsense generation with answer extraction as LLM-Adapters does it, MMLU
 * k-shot scoring by the next-token logits of A–D, log-likelihood multiple choice (acc,
 * acc_norm), held-out loss, Wilson intervals and seed-noise statistics, the expressiveness
 * experiment and its SVD floors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { extractAnswer, scoreAnswers, wilsonInterval } from "./mod.ts";
 * // The first answer word after "### Response:" is the prediction ("" when there is none).
 * const generation = "### Instruction:\nIs water wet?\n\n### Response:\nthe answer is true";
 * assert.equal(extractAnswer("boolq", generation), "true");
 * const score = scoreAnswers(["true", "", "false"], ["true", "true", "true"]);
 * assert.deepEqual(score, { accuracy: 1 / 3, correct: 1, total: 3, unparseable: 1 });
 * // 8 of 10 right: a 95 % Wilson interval of about [0.49, 0.94].
 * const [lo, hi] = wilsonInterval(8, 10);
 * assert.ok(Math.abs(lo - 0.4902) < 1e-4 && Math.abs(hi - 0.9433) < 1e-4);
 * ```
 *
 * @module
 */
export { cpuHeldOutLoss, type HeldOutLoss, heldOutLoss } from "./heldout.ts";
export { type ChoiceQuestion, choiceQuestion, type ChoiceScore, scoreChoices } from "./choice.ts";
export { beyondSeedNoise, majorityBaseline, meanSd, wilsonInterval, Z95 } from "./stats.ts";
export {
  type CommonsenseEvalOptions,
  evaluateCommonsense,
  extractAnswer,
  scoreAnswers,
  type TaskScore,
} from "./commonsense.ts";
export {
  evaluateMmlu,
  letterContinuations,
  type MmluOptions,
  mmluPromptText,
  type MmluScores,
  scoreMmlu,
} from "./mmlu.ts";
export {
  continuationLogLikelihoods,
  type LogitsAt,
  type ScoredPair,
  splitContinuation,
} from "./loglik.ts";
export {
  adaptersForBudget,
  type BudgetedAdapter,
  type FitOptions,
  type FitResult,
  fitTarget,
} from "./expressiveness.ts";
export { kronRearrange, singularValues, truncationError } from "./svd.ts";
export {
  BATCH_MEMORY_FRACTION,
  batchBudgetBytes,
  type BatchSizing,
  CPU_ADAPTER_BATCH,
  GPU_PROMPTS_CAP,
  GPU_QUESTIONS_CAP,
  promptsPerForward,
  questionsPerBatch,
} from "./batching.ts";
