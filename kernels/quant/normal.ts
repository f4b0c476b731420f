/**
 * The standard normal distribution in float64: CDF by Marsaglia's series and the quantile by
 * Newton's method on it. Used to derive the NF4 levels from their definition rather than trust a
 * copied table.
 */

/** Φ(x) for |x| ≤ 8, accurate to ~1e-15 (Marsaglia 2004, "Evaluating the Normal Distribution"). */
export function normalCdf(x: number): number {
  if (x < -8) return 0;
  if (x > 8) return 1;
  let sum = x;
  let term = x;
  const x2 = x * x;
  for (let i = 3; sum + term !== sum; i += 2) {
    term = (term * x2) / i;
    sum += term;
  }
  return 0.5 + sum * Math.exp(-0.5 * x2 - 0.91893853320467274178);
}

/** Φ⁻¹(p) for p in (0, 1). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile: p=${p} must be in (0, 1)`);
  let x = 0;
  for (let i = 0; i < 100; i++) {
    const pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    const step = (normalCdf(x) - p) / pdf;
    x -= step;
    if (Math.abs(step) < 1e-15) break;
  }
  return x;
}
