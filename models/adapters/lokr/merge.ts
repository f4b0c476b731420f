/** LoKr merge: W' = W + (α/r)·(w1 ⊗ w2), w1 and w2 rebuilt from their low-rank parts. */
import type { F64Params } from "../adapter.ts";
import { kronMaterializeCpu, type KronShape } from "../../../kernels/adapters/kron_cpu.ts";
import type { LokrLayout } from "./config.ts";

/** a [m, r] · b [r, n] in float64. */
export function lowRankProduct(a: Float64Array, b: Float64Array, m: number, r: number, n: number) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < r; k++) {
      const av = a[i * r + k];
      for (let j = 0; j < n; j++) out[i * n + j] += av * b[k * n + j];
    }
  }
  return out;
}

/** The two Kronecker factors (w1, w2) of a LoKr layer, materialised from their parts. */
export function lokrFactors(
  p: F64Params,
  l: LokrLayout,
  r: number,
): { w1: Float64Array; w2: Float64Array } {
  return {
    w1: l.useW1 ? p.w1 : lowRankProduct(p.w1_a, p.w1_b, l.outL, r, l.inM),
    w2: l.useW2 ? p.w2 : lowRankProduct(p.w2_a, p.w2_b, l.outK, r, l.inN),
  };
}

/** The Kronecker shape of w1 ⊗ w2. */
export function lokrShape(l: LokrLayout): KronShape {
  return { ma: l.outL, na: l.inM, mb: l.outK, nb: l.inN };
}

/** The merged weight in float64. */
export function lokrMerged(
  p: F64Params,
  l: LokrLayout,
  r: number,
  scale: number,
  w: Float64Array,
): Float64Array {
  const { w1, w2 } = lokrFactors(p, l, r);
  const out = Float64Array.from(w);
  kronMaterializeCpu(w1, w2, lokrShape(l), scale, out);
  return out;
}
