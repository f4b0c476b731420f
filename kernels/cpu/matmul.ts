/**
 * CPU reference for the batched matmul: C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] (or, with
 * reduceBatch = r, C[g] = alpha·Σ_{b in group g} op(A[b])·op(B[b]) + beta·C[g]).
 *
 * Plain loops you can read. It is the oracle for the WGSL kernels and the fallback backend, so it
 * favours clarity over speed; `accumulate: "f64"` sums in float64 for tests that need a tight oracle.
 */

/** Problem description shared by the CPU reference and the GPU kernels. */
export interface MatmulSpec {
  /** Rows of op(A) and C. */
  m: number;
  /** Columns of op(B) and C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** Number of independent products (default 1). */
  batch?: number;
  /** A is stored k×m (so op(A) = Aᵀ). */
  transA?: boolean;
  /** B is stored n×k (so op(B) = Bᵀ): y = x·Wᵀ with W as [out, in]. */
  transB?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of the previous C (default 0: overwrite). beta=1, alpha=α gives C += α·A·B. */
  beta?: number;
  /** A is one matrix shared by every batch entry (broadcast). */
  broadcastA?: boolean;
  /** B is one matrix shared by every batch entry (broadcast), e.g. a weight. */
  broadcastB?: boolean;
  /**
   * Batch-reduce: each run of this many consecutive batch entries is summed into one output, so C
   * has batch / reduceBatch matrices (default 1). Σ_t A[t]·B[t] without per-entry partials, e.g.
   * a weight gradient summed over tokens whose per-token factors are not contiguous along K.
   */
  reduceBatch?: number;
}

/** Resolved spec with defaults filled in and sizes checked. */
export type FullMatmulSpec = Required<MatmulSpec>;

/** Fill defaults and validate integer sizes. */
export function resolveMatmulSpec(spec: MatmulSpec): FullMatmulSpec {
  const full: FullMatmulSpec = {
    batch: 1,
    transA: false,
    transB: false,
    alpha: 1,
    beta: 0,
    broadcastA: false,
    broadcastB: false,
    reduceBatch: 1,
    ...spec,
  };
  for (const key of ["m", "n", "k", "batch"] as const) {
    const v = full[key];
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`matmul: ${key}=${v} must be an integer >= 0`);
    }
  }
  const r = full.reduceBatch;
  if (!Number.isInteger(r) || r < 1 || full.batch % r !== 0) {
    throw new RangeError(
      `matmul: reduceBatch=${r} must be a positive integer dividing batch=${full.batch}`,
    );
  }
  if (!Number.isFinite(full.alpha) || !Number.isFinite(full.beta)) {
    throw new RangeError(`matmul: alpha=${full.alpha}, beta=${full.beta} must be finite`);
  }
  return full;
}

/** Element counts each operand must have for `spec`. */
export function matmulSizes(spec: FullMatmulSpec): { a: number; b: number; c: number } {
  const { m, n, k, batch } = spec;
  return {
    a: (spec.broadcastA ? 1 : batch) * m * k,
    b: (spec.broadcastB ? 1 : batch) * k * n,
    c: (batch / spec.reduceBatch) * m * n,
  };
}

/** Throw a clear error when an operand's length does not match the spec. */
export function checkMatmulOperands(
  spec: FullMatmulSpec,
  lengths: { a: number; b: number; c: number },
): void {
  const want = matmulSizes(spec);
  for (const name of ["a", "b", "c"] as const) {
    if (lengths[name] !== want[name]) {
      throw new RangeError(
        `matmul: operand ${name.toUpperCase()} has ${lengths[name]} elements, expected ` +
          `${want[name]} for batch=${spec.batch} m=${spec.m} n=${spec.n} k=${spec.k}` +
          ` transA=${spec.transA} transB=${spec.transB}`,
      );
    }
  }
}

/**
 * Reference matmul into `c` (read when beta ≠ 0, then overwritten).
 * `accumulate` picks the precision of the dot-product sum.
 */
export function matmulCpu(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  c: Float32Array | Float64Array,
  spec: MatmulSpec,
  accumulate: "f32" | "f64" = "f64",
): void {
  const s = resolveMatmulSpec(spec);
  checkMatmulOperands(s, { a: a.length, b: b.length, c: c.length });
  const { m, n, k, batch, reduceBatch } = s;
  const round = accumulate === "f32" ? Math.fround : (x: number) => x;
  for (let g = 0; g < batch / reduceBatch; g++) {
    const cOff = g * m * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let bi = g * reduceBatch; bi < (g + 1) * reduceBatch; bi++) {
          const aOff = s.broadcastA ? 0 : bi * m * k;
          const bOff = s.broadcastB ? 0 : bi * k * n;
          for (let p = 0; p < k; p++) {
            const av = a[aOff + (s.transA ? p * m + i : i * k + p)];
            const bv = b[bOff + (s.transB ? j * k + p : p * n + j)];
            sum = round(sum + av * bv);
          }
        }
        const prev = s.beta !== 0 ? s.beta * c[cOff + i * n + j] : 0;
        c[cOff + i * n + j] = s.alpha * sum + prev;
      }
    }
  }
}
