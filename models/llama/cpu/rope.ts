/**
 * Rotary position embedding as llama2.c applies it: within each head, adjacent pairs
 * (2i, 2i+1) rotate by pos·θ^(−2i/headSize). The backward is the rotation by the opposite angle.
 */

/** Rotate in place rows [tokens, heads·headSize] whose positions are `positions[t]`. */
export function ropeApply(
  x: Float64Array,
  positions: ArrayLike<number>,
  heads: number,
  headSize: number,
  theta: number,
  inverse = false,
): void {
  const width = heads * headSize;
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < headSize; i += 2) {
        const freq = 1 / theta ** (i / headSize);
        const angle = positions[t] * freq * (inverse ? -1 : 1);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const k = t * width + h * headSize + i;
        const v0 = x[k];
        const v1 = x[k + 1];
        x[k] = v0 * c - v1 * s;
        x[k + 1] = v0 * s + v1 * c;
      }
    }
  }
}
