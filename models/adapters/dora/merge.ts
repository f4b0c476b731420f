/** DoRA merge: W' = (m/‖W + s·B·A‖)·(W + s·B·A), row by row. */
import { loraMerged } from "../lora/merge.ts";

/** ‖row o‖₂ of a [rows, cols] matrix. */
export function rowNormsCpu(v: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let o = 0; o < rows; o++) {
    let s = 0;
    for (let i = 0; i < cols; i++) s += v[o * cols + i] ** 2;
    out[o] = Math.sqrt(s);
  }
  return out;
}

/** The merged weight in float64. */
export function doraMerged(
  a: Float64Array,
  b: Float64Array,
  magnitude: Float64Array,
  r: number,
  scale: number,
  w: Float64Array,
  dIn: number,
  dOut: number,
): Float64Array {
  const v = loraMerged(a, b, r, scale, w, dIn, dOut);
  const norms = rowNormsCpu(v, dOut, dIn);
  for (let o = 0; o < dOut; o++) {
    const c = magnitude[o] / norms[o];
    for (let i = 0; i < dIn; i++) v[o * dIn + i] *= c;
  }
  return v;
}
