/** MoKA merge: W' = W + s·Σᵢ softmax(g)ᵢ·(Aᵢ ⊗ Bᵢ), in float64. */
import type { F64Params } from "../adapter.ts";
import { kronMaterializeCpu, type KronShape, softmax } from "../../../kernels/adapters/kron_cpu.ts";

/** ΔW = s·Σᵢ αᵢ (Aᵢ ⊗ Bᵢ) as a dense [dOut, dIn] matrix (added into `out` when given). */
export function kronMixtureDelta(
  factors: { a: Float64Array | null; b: Float64Array; shape: KronShape }[],
  gate: ArrayLike<number>,
  scale: number,
  out?: Float64Array,
): Float64Array {
  const { ma, mb, na, nb } = factors[0].shape;
  const w = out ?? new Float64Array(ma * mb * na * nb);
  const alpha = softmax(gate);
  factors.forEach((f, i) => kronMaterializeCpu(f.a, f.b, f.shape, scale * alpha[i], w));
  return w;
}

/** The merged weight of a MoKA layer. */
export function mokaMerged(
  p: F64Params,
  shapes: KronShape[],
  identityA: boolean,
  scale: number,
  w: Float64Array,
): Float64Array {
  const factors = shapes.map((shape, i) => ({
    a: identityA ? null : p[`A.${i}`],
    b: p[`B.${i}`],
    shape,
  }));
  return kronMixtureDelta(factors, p.gate, scale, Float64Array.from(w));
}
