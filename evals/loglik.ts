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
 * Σ log p(continuation | context) for every pair, and whether each continuation is the greedy one
 * (every token the argmax). Pairs whose context and continuation agree but for the continuation's
 * last token share one sequence (the options of a question usually do: " A".." D", " no"/" yes"),
 * so a question costs one forward, not one per option; `batch` sequences go to each call of
 * `logitsAt`.
 */
export async function continuationLogLikelihoods(
  logitsAt: LogitsAt,
  pairs: ScoredPair[],
  batch = 8,
): Promise<{ logLikelihood: number; greedy: boolean }[]> {
  for (const p of pairs) {
    if (p.context.length === 0 || p.continuation.length === 0) {
      throw new RangeError("continuationLogLikelihoods: empty context or continuation");
    }
  }
  // One sequence per distinct context + continuation[:-1]; token t of a continuation is
  // predicted at position context.length − 1 + t of it.
  const seqIndex = new Map<string, number>();
  const seqs: number[][] = [];
  const firstScored: number[] = []; // per sequence, the first position any of its pairs scores
  const seqOf = pairs.map((p) => {
    const seq = [...p.context, ...p.continuation.slice(0, -1)];
    const key = seq.join(",");
    if (!seqIndex.has(key)) {
      seqIndex.set(key, seqs.length);
      seqs.push(seq);
      firstScored.push(Infinity);
    }
    const i = seqIndex.get(key)!;
    firstScored[i] = Math.min(firstScored[i], p.context.length - 1);
    return i;
  });
  const rows: ArrayLike<number>[][] = [];
  for (let b = 0; b < seqs.length; b += batch) {
    const group = seqs.slice(b, b + batch);
    const positions = group.map((s, i) =>
      Array.from({ length: s.length - firstScored[b + i] }, (_, t) => firstScored[b + i] + t)
    );
    const got = await logitsAt(group, positions);
    group.forEach((_, i) => {
      rows[b + i] = [];
      positions[i].forEach((pos, t) => rows[b + i][pos] = got[i][t]);
    });
  }
  return pairs.map((p, k) => {
    let ll = 0;
    let greedy = true;
    p.continuation.forEach((tok, t) => {
      const row = rows[seqOf[k]][p.context.length - 1 + t];
      ll += row[tok] - logSumExp(row);
      for (let j = 0; j < row.length; j++) if (row[j] > row[tok]) greedy = false;
    });
    return { logLikelihood: ll, greedy };
  });
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
