/**
 * Float64 reference of one Kronecker-product component, shared by MoKA, KronA and LoKr.
 *
 * (A ⊗ B)[a·mb + c, p·nb + q] = A[a, p]·B[c, q], so for a token x of length na·nb
 *     (A ⊗ B) x = vec_rowmajor(A · X · Bᵀ),   X = reshape(x, na, nb).
 * A is [ma, na], B is [mb, nb]; `a === null` means A is the identity (ma = na), MoKA_s's case.
 * Everything below is plain loops over one token at a time: the point is to be obviously right.
 */

/** Factor shapes of one component: A is ma×na, B is mb×nb; the layer is (ma·mb) × (na·nb). */
export interface KronShape {
  /** Rows of A. */
  ma: number;
  /** Columns of A. */
  na: number;
  /** Rows of B. */
  mb: number;
  /** Columns of B. */
  nb: number;
}

/** z = X·Bᵀ [na, mb] for the token whose X = reshape(x[xo ..], na, nb). */
function tokenTimesBt(x: Float64Array, xo: number, b: Float64Array, s: KronShape, z: Float64Array) {
  const { na, mb, nb } = s;
  for (let p = 0; p < na; p++) {
    for (let c = 0; c < mb; c++) {
      let sum = 0;
      for (let q = 0; q < nb; q++) sum += x[xo + p * nb + q] * b[c * nb + q];
      z[p * mb + c] = sum;
    }
  }
}

/** y[t] += coef · (A ⊗ B) x[t] for `tokens` rows of x [tokens, na·nb] and y [tokens, ma·mb]. */
export function kronForwardCpu(
  a: Float64Array | null,
  b: Float64Array,
  s: KronShape,
  x: Float64Array,
  tokens: number,
  coef: number,
  y: Float64Array,
): void {
  const { ma, na, mb, nb } = s;
  const z = new Float64Array(na * mb); // Z = X·Bᵀ
  for (let t = 0; t < tokens; t++) {
    const xo = t * na * nb;
    const yo = t * ma * mb;
    tokenTimesBt(x, xo, b, s, z);
    for (let r = 0; r < ma; r++) {
      for (let c = 0; c < mb; c++) {
        let sum = 0;
        if (a === null) sum = z[r * mb + c];
        else for (let p = 0; p < na; p++) sum += a[r * na + p] * z[p * mb + c];
        y[yo + r * mb + c] += coef * sum;
      }
    }
  }
}

/**
 * Gradients of L = Σ_t ⟨dy[t], coef·(A ⊗ B) x[t]⟩: returns dA (null for an identity A) and dB,
 * and adds ∂L/∂x into dx.
 */
export function kronBackwardCpu(
  a: Float64Array | null,
  b: Float64Array,
  s: KronShape,
  x: Float64Array,
  tokens: number,
  dy: Float64Array,
  coef: number,
  dx: Float64Array,
): { da: Float64Array | null; db: Float64Array } {
  const { ma, na, mb, nb } = s;
  const da = a === null ? null : new Float64Array(ma * na);
  const db = new Float64Array(mb * nb);
  const ax = new Float64Array(ma * nb); // A·X
  const h = new Float64Array(ma * nb); // G·B
  const z = new Float64Array(na * mb); // X·Bᵀ
  const aAt = (r: number, p: number) => (a === null ? (r === p ? 1 : 0) : a[r * na + p]);
  for (let t = 0; t < tokens; t++) {
    const xo = t * na * nb;
    const go = t * ma * mb;
    const g = (r: number, c: number) => coef * dy[go + r * mb + c];
    tokenTimesBt(x, xo, b, s, z);
    for (let r = 0; r < ma; r++) {
      for (let q = 0; q < nb; q++) {
        let sAx = 0;
        for (let p = 0; p < na; p++) sAx += aAt(r, p) * x[xo + p * nb + q];
        ax[r * nb + q] = sAx;
        let sH = 0;
        for (let c = 0; c < mb; c++) sH += g(r, c) * b[c * nb + q];
        h[r * nb + q] = sH;
      }
    }
    if (da) { // dA = G·Zᵀ
      for (let r = 0; r < ma; r++) {
        for (let p = 0; p < na; p++) {
          let sum = 0;
          for (let c = 0; c < mb; c++) sum += g(r, c) * z[p * mb + c];
          da[r * na + p] += sum;
        }
      }
    }
    for (let c = 0; c < mb; c++) { // dB = Gᵀ·(A·X)
      for (let q = 0; q < nb; q++) {
        let sum = 0;
        for (let r = 0; r < ma; r++) sum += g(r, c) * ax[r * nb + q];
        db[c * nb + q] += sum;
      }
    }
    for (let p = 0; p < na; p++) { // dX = Aᵀ·G·B
      for (let q = 0; q < nb; q++) {
        let sum = 0;
        for (let r = 0; r < ma; r++) sum += aAt(r, p) * h[r * nb + q];
        dx[xo + p * nb + q] += sum;
      }
    }
  }
  return { da, db };
}

/** coef·(A ⊗ B) as a dense [ma·mb, na·nb] matrix, added into `w` (merging, tests, baselines). */
export function kronMaterializeCpu(
  a: Float64Array | null,
  b: Float64Array,
  s: KronShape,
  coef: number,
  w: Float64Array,
): void {
  const { ma, na, mb, nb } = s;
  const cols = na * nb;
  for (let r = 0; r < ma; r++) {
    for (let p = 0; p < na; p++) {
      const av = a === null ? (r === p ? 1 : 0) : a[r * na + p];
      if (av === 0) continue;
      for (let c = 0; c < mb; c++) {
        for (let q = 0; q < nb; q++) {
          w[(r * mb + c) * cols + p * nb + q] += coef * av * b[c * nb + q];
        }
      }
    }
  }
}

/** Check that a component's factors compose to a dOut × dIn layer; the error names the layer. */
export function checkKronShape(s: KronShape, dIn: number, dOut: number, what: string): void {
  for (const [k, v] of Object.entries(s)) {
    if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what}: ${k}=${v}`);
  }
  if (s.ma * s.mb !== dOut || s.na * s.nb !== dIn) {
    throw new RangeError(
      `${what}: A ${s.ma}×${s.na} ⊗ B ${s.mb}×${s.nb} is ${s.ma * s.mb}×${s.na * s.nb}, ` +
        `the layer is ${dOut}×${dIn} (need ma·mb = dOut and na·nb = dIn)`,
    );
  }
}

/** softmax in float64 (stable). */
export function softmax(g: ArrayLike<number>): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < g.length; i++) mx = Math.max(mx, g[i]);
  const e = Float64Array.from(g, (v) => Math.exp(v - mx));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}
