/**
 * Evaluations: commonsense generation with answer extraction as LLM-Adapters does it, MMLU
 * k-shot scoring by the next-token logits of A–D, log-likelihood multiple choice (acc,
 * acc_norm), held-out loss, Wilson intervals and seed-noise statistics, the expressiveness
 * experiment and its SVD floors.
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
