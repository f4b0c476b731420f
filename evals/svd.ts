/**
 * Singular values by the cyclic Jacobi eigenvalue method on the Gram matrix (float64). Small and
 * exact enough for the expressiveness floors (matrices up to a few hundred on a side).
 */

/** Singular values of a rows×cols row-major matrix, descending. */
export function singularValues(m: ArrayLike<number>, rows: number, cols: number): Float64Array {
  if (m.length !== rows * cols) {
    throw new RangeError(`singularValues: ${m.length} ≠ ${rows}×${cols}`);
  }
  // Gram of the smaller side: G = M·Mᵀ (rows ≤ cols) or Mᵀ·M.
  const n = Math.min(rows, cols);
  const g = new Float64Array(n * n);
  const at = rows <= cols
    ? (i: number, k: number) => m[i * cols + k]
    : (i: number, k: number) => m[k * cols + i];
  const inner = Math.max(rows, cols);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = 0; k < inner; k++) s += at(i, k) * at(j, k);
      g[i * n + j] = g[j * n + i] = s;
    }
  }
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += g[p * n + q] ** 2;
    if (off < 1e-22 * (g.reduce((a, v) => a + v * v, 0) || 1)) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = g[p * n + q];
        if (apq === 0) continue;
        const theta = (g[q * n + q] - g[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) { // rotate columns p, q
          const gkp = g[k * n + p];
          const gkq = g[k * n + q];
          g[k * n + p] = c * gkp - s * gkq;
          g[k * n + q] = s * gkp + c * gkq;
        }
        for (let k = 0; k < n; k++) { // rotate rows p, q
          const gpk = g[p * n + k];
          const gqk = g[q * n + k];
          g[p * n + k] = c * gpk - s * gqk;
          g[q * n + k] = s * gpk + c * gqk;
        }
      }
    }
  }
  const out = Float64Array.from({ length: n }, (_, i) => Math.sqrt(Math.max(0, g[i * n + i])));
  return out.sort((a, b) => b - a);
}

/** ‖T − best rank-r approximation‖_F / ‖T‖_F from singular values (Eckart–Young). */
export function truncationError(sv: Float64Array, r: number): number {
  let total = 0;
  let kept = 0;
  sv.forEach((s, i) => {
    total += s * s;
    if (i < r) kept += s * s;
  });
  return total === 0 ? 0 : Math.sqrt(Math.max(0, total - kept) / total);
}

/**
 * Van Loan–Pitsianis rearrangement: A ⊗ B terms of T (ma·mb × na·nb) are rank-1 terms of R(T)
 * ((ma·na) × (mb·nb)), so the best sum of K such products is a rank-K truncation of R(T).
 */
export function kronRearrange(
  t: ArrayLike<number>,
  ma: number,
  na: number,
  mb: number,
  nb: number,
): Float64Array {
  const out = new Float64Array(ma * na * mb * nb);
  const cols = na * nb;
  for (let a = 0; a < ma; a++) {
    for (let p = 0; p < na; p++) {
      for (let c = 0; c < mb; c++) {
        for (let q = 0; q < nb; q++) {
          out[(a * na + p) * (mb * nb) + c * nb + q] = t[(a * mb + c) * cols + p * nb + q];
        }
      }
    }
  }
  return out;
}
