/**
 * The statistics every reported accuracy carries: its sample size and a 95 % Wilson interval,
 * the chance and majority-class baselines, and — across seeds — mean ± sd with a rule for whether
 * two configurations differ by more than seed noise.
 */

/** z of a two-sided 95 % interval. */
export const Z95 = 1.959963984540054;

/**
 * Wilson score interval of `correct` successes in `n` trials: [lo, hi], valid also at 0 or n
 * successes and small n, where the normal approximation collapses to a point.
 */
export function wilsonInterval(correct: number, n: number, z = Z95): [number, number] {
  if (n === 0) return [0, 1];
  const p = correct / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** The accuracy of always answering the most frequent gold label of `gold`. */
export function majorityBaseline(gold: readonly (string | number)[]): number {
  if (!gold.length) return 0;
  const counts = new Map<string | number, number>();
  for (const g of gold) counts.set(g, (counts.get(g) ?? 0) + 1);
  return Math.max(...counts.values()) / gold.length;
}

/** Mean and sample standard deviation (n − 1; 0 for one value). */
export function meanSd(values: readonly number[]): { mean: number; sd: number; n: number } {
  const n = values.length;
  if (!n) return { mean: NaN, sd: NaN, n: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const ss = values.reduce((a, v) => a + (v - mean) ** 2, 0);
  return { mean, sd: n > 1 ? Math.sqrt(ss / (n - 1)) : 0, n };
}

/**
 * Whether two sets of seed results differ by more than seed noise: |Δmean| greater than twice the
 * standard error of the difference, √(sd₁²/n₁ + sd₂²/n₂) (about a 95 % test for normal noise).
 * With a single seed on either side there is no noise estimate, and the answer is "unknown".
 */
export function beyondSeedNoise(
  a: readonly number[],
  b: readonly number[],
): { difference: number; standardError: number; verdict: "beyond" | "within" | "unknown" } {
  const x = meanSd(a);
  const y = meanSd(b);
  const difference = x.mean - y.mean;
  if (x.n < 2 || y.n < 2) return { difference, standardError: NaN, verdict: "unknown" };
  const standardError = Math.sqrt(x.sd ** 2 / x.n + y.sd ** 2 / y.n);
  const verdict = Math.abs(difference) > 2 * standardError ? "beyond" : "within";
  return { difference, standardError, verdict };
}
