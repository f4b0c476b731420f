/**
 * Asymmetric int4 with per-group scale and zero point (GPTQ / QA-LoRA storage, round-to-nearest):
 * scale = (max − min) / 15, zero = round(−min / scale), q = clamp(round(w / scale) + zero, 0, 15),
 * w ≈ (q − zero)·scale.
 */
import {
  blocksPerRow,
  checkWeightInput,
  type Int4Weight,
  packCodes,
  unpackCodes,
  validateQuantized,
} from "./format.ts";

/** Quantize a row-major `rows × cols` f32 weight to int4 with `groupSize` ∈ {32, 64, 128}. */
export function quantizeInt4(
  weight: Float32Array,
  rows: number,
  cols: number,
  groupSize = 128,
): Int4Weight {
  checkWeightInput(weight, rows, cols, "quantizeInt4");
  if (![32, 64, 128].includes(groupSize)) {
    throw new RangeError(`quantizeInt4: groupSize=${groupSize} must be 32, 64 or 128`);
  }
  const gpr = Math.ceil(cols / groupSize);
  const scales = new Float32Array(rows * gpr);
  const zeroCodes = new Uint8Array(rows * gpr);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < gpr; g++) {
      const start = r * cols + g * groupSize;
      const end = r * cols + Math.min(cols, (g + 1) * groupSize);
      let lo = 0; // the range always contains 0 so that zero is exactly representable
      let hi = 0;
      for (let i = start; i < end; i++) {
        lo = Math.min(lo, weight[i]);
        hi = Math.max(hi, weight[i]);
      }
      const scale = Math.fround((hi - lo) / 15);
      const zero = scale === 0 ? 0 : Math.min(15, Math.max(0, Math.round(-lo / scale)));
      scales[r * gpr + g] = scale;
      zeroCodes[r * gpr + g] = zero;
      for (let i = start; i < end; i++) {
        const q = scale === 0 ? zero : Math.round(weight[i] / scale) + zero;
        codes[i] = Math.min(15, Math.max(0, q));
      }
    }
  }
  return {
    format: "int4",
    rows,
    cols,
    groupSize,
    packed: packCodes(codes, rows, cols),
    scales,
    zeros: packCodes(zeroCodes, rows, gpr),
  };
}

/** Decode an int4 weight back to row-major f32. */
export function dequantizeInt4(w: Int4Weight): Float32Array {
  validateQuantized(w, "int4 weight");
  const gpr = blocksPerRow(w);
  const codes = unpackCodes(w.packed, w.rows, w.cols);
  const zeros = unpackCodes(w.zeros, w.rows, gpr);
  const out = new Float32Array(w.rows * w.cols);
  for (let r = 0; r < w.rows; r++) {
    for (let c = 0; c < w.cols; c++) {
      const g = r * gpr + Math.floor(c / w.groupSize);
      out[r * w.cols + c] = (codes[r * w.cols + c] - zeros[g]) * w.scales[g];
    }
  }
  return out;
}
