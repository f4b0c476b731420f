/** LoRA merge: W' = W + (α/r)·B·A. */

/** scale·B·A added to a copy of `w` ([dOut, dIn]), in float64. */
export function loraMerged(
  a: Float64Array,
  b: Float64Array,
  r: number,
  scale: number,
  w: Float64Array,
  dIn: number,
  dOut: number,
): Float64Array {
  const out = Float64Array.from(w);
  for (let o = 0; o < dOut; o++) {
    for (let k = 0; k < r; k++) {
      const bv = scale * b[o * r + k];
      for (let i = 0; i < dIn; i++) out[o * dIn + i] += bv * a[k * dIn + i];
    }
  }
  return out;
}
