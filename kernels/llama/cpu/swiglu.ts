/** SwiGLU gate, float64 reference: h = silu(a) ⊙ b with a = x·W1ᵀ, b = x·W3ᵀ. */

/** silu(a)·b elementwise. */
export function swigluForward(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => (v / (1 + Math.exp(-v))) * b[i]);
}

/** da, db from dh. silu'(a) = σ(a)·(1 + a·(1 − σ(a))). */
export function swigluBackward(
  a: Float64Array,
  b: Float64Array,
  dh: Float64Array,
): { da: Float64Array; db: Float64Array } {
  const da = new Float64Array(a.length);
  const db = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const sig = 1 / (1 + Math.exp(-a[i]));
    db[i] = dh[i] * a[i] * sig;
    da[i] = dh[i] * b[i] * sig * (1 + a[i] * (1 - sig));
  }
  return { da, db };
}
