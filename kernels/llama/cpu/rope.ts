/**
 * Rotary position embedding, float64 reference. Pair j of a head (0 ≤ j < headSize/2) rotates by
 * pos·θ^(−2j/headSize); which two elements form the pair is the checkpoint's layout:
 * - `interleaved` (Meta's and llama2.c's code): elements (2j, 2j+1);
 * - `half` (Hugging Face's `rotate_half`): elements (j, j + headSize/2).
 * A model is the same function in either layout once q and k rows are permuted to match; the kit
 * computes in the checkpoint's own layout, so adapters on q and k live in the basis its files use.
 * The backward is the rotation by the opposite angle.
 */

/** Which elements of a head RoPE pairs. */
export type RopeLayout = "interleaved" | "half";

/** Rotate in place rows [tokens, heads·headSize] whose positions are `positions[t]`. */
export function ropeApply(
  x: Float64Array,
  positions: ArrayLike<number>,
  heads: number,
  headSize: number,
  theta: number,
  inverse = false,
  layout: RopeLayout = "interleaved",
): void {
  const width = heads * headSize;
  const half = headSize / 2;
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < half; j++) {
        const freq = 1 / theta ** ((2 * j) / headSize);
        const angle = positions[t] * freq * (inverse ? -1 : 1);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const base = t * width + h * headSize;
        const [k0, k1] = layout === "interleaved"
          ? [base + 2 * j, base + 2 * j + 1]
          : [base + j, base + j + half];
        const v0 = x[k0];
        const v1 = x[k1];
        x[k0] = v0 * c - v1 * s;
        x[k1] = v0 * s + v1 * c;
      }
    }
  }
}
