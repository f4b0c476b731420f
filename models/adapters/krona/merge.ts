/** KronA merge: W' = W + s·(A ⊗ B). */
import { kronMaterializeCpu, type KronShape } from "../../../kernels/adapters/kron_cpu.ts";

/** The merged weight in float64. */
export function kronaMerged(
  a: Float64Array,
  b: Float64Array,
  shape: KronShape,
  scale: number,
  w: Float64Array,
): Float64Array {
  const out = Float64Array.from(w);
  kronMaterializeCpu(a, b, shape, scale, out);
  return out;
}
