/**
 * Log-likelihood scoring: how probable the model finds a continuation after a context, as
 * lm-evaluation-harness computes it — Σ log p(continuation token | everything before), the
 * context and continuation tokenized together so the split is where the tokenizer puts it.
 * MMLU's answer letters use it when a letter takes several tokens; multiple-choice commonsense
 * tasks use it to rank their options.
 */

/**
 * Logits after the given positions of each sequence: for sequence i, one row [vocab] per entry of
 * positions[i] (the model batched on the GPU, or the float64 reference).
 */
export type LogitsAt = (
  seqs: number[][],
  positions: number[][],
) => Promise<ArrayLike<number>[][]>;

/** One (context, continuation) pair as token ids. */
export interface ScoredPair {
  /** Tokens before the continuation (BOS included). */
  context: number[];
  /** The continuation's tokens (at least one). */
  continuation: number[];
}

/** log Σ exp over a row, in float64. */
function logSumExp(row: ArrayLike<number>): number {
  let mx = -Infinity;
  for (let j = 0; j < row.length; j++) if (row[j] > mx) mx = row[j];
  let s = 0;
  for (let j = 0; j < row.length; j++) s += Math.exp(row[j] - mx);
  return mx + Math.log(s);
}

/**
 * Σ log p(continuation | context) for every pair, `batch` sequences per call of `logitsAt`, and
 * whether each continuation is the greedy one (every token the argmax).
 */
export async function continuationLogLikelihoods(
  logitsAt: LogitsAt,
  pairs: ScoredPair[],
  batch = 8,
): Promise<{ logLikelihood: number; greedy: boolean }[]> {
  const out: { logLikelihood: number; greedy: boolean }[] = [];
  for (let b = 0; b < pairs.length; b += batch) {
    const group = pairs.slice(b, b + batch);
    for (const p of group) {
      if (p.context.length === 0 || p.continuation.length === 0) {
        throw new RangeError("continuationLogLikelihoods: empty context or continuation");
      }
    }
    const seqs = group.map((p) => [...p.context, ...p.continuation]);
    // Token t of the continuation is predicted at position context.length − 1 + t.
    const positions = group.map((p) => p.continuation.map((_, t) => p.context.length - 1 + t));
    const rows = await logitsAt(seqs, positions);
    group.forEach((p, i) => {
      let ll = 0;
      let greedy = true;
      p.continuation.forEach((tok, t) => {
        const row = rows[i][t];
        ll += row[tok] - logSumExp(row);
        for (let j = 0; j < row.length; j++) if (row[j] > row[tok]) greedy = false;
      });
      out.push({ logLikelihood: ll, greedy });
    });
  }
  return out;
}

/**
 * The tokens `continuation` adds to `context` when both are encoded together: the longest common
 * prefix of encode(context) and encode(context + continuation) is the context, the rest the
 * continuation (a merge across the seam moves the split left, as lm-eval-harness allows).
 */
export function splitContinuation(
  encode: (text: string) => number[],
  context: string,
  continuation: string,
): ScoredPair {
  const a = encode(context);
  const whole = encode(context + continuation);
  let n = 0;
  while (n < a.length && n < whole.length && a[n] === whole[n]) n++;
  if (n === whole.length) n = whole.length - 1; // keep at least one continuation token
  return { context: whole.slice(0, n), continuation: whole.slice(n) };
}
