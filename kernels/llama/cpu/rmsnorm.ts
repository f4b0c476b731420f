/**
 * RMSNorm, float64 reference: y = x / √(mean(x²) + ε) ⊙ w, row by row over [rows, dim].
 */

/** Forward; returns y and the per-row 1/rms the backward reuses. */
export function rmsnormForward(
  x: Float64Array,
  w: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
): { y: Float64Array; inv: Float64Array } {
  const y = new Float64Array(rows * dim);
  const inv = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const s = 1 / Math.sqrt(ss / dim + eps);
    inv[r] = s;
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * s * w[i];
  }
  return { y, inv };
}

/**
 * Backward: dx = s·(w⊙dy) − x·s³·⟨w⊙dy, x⟩/dim per row (s = 1/rms), dw = Σ_rows dy⊙x·s.
 */
export function rmsnormBackward(
  x: Float64Array,
  w: ArrayLike<number>,
  inv: Float64Array,
  dy: Float64Array,
  rows: number,
  dim: number,
): { dx: Float64Array; dw: Float64Array } {
  const dx = new Float64Array(rows * dim);
  const dw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const s = inv[r];
    let dot = 0;
    for (let i = 0; i < dim; i++) dot += w[i] * dy[r * dim + i] * x[r * dim + i];
    const c = (s * s * s * dot) / dim;
    for (let i = 0; i < dim; i++) {
      const k = r * dim + i;
      dx[k] = s * w[i] * dy[k] - c * x[k];
      dw[i] += dy[k] * x[k] * s;
    }
  }
  return { dx, dw };
}
