/**
 * NF4, the 4-bit NormalFloat of QLoRA (Dettmers et al. 2023): 16 levels at quantiles of N(0, 1)
 * scaled to [-1, 1] (8 positive, 7 negative, an exact zero), times a per-block absmax.
 */
import {
  blocksPerRow,
  checkWeightInput,
  type Nf4DoubleQuant,
  type Nf4Weight,
  packCodes,
  unpackCodes,
  validateQuantized,
} from "./format.ts";
import { normalQuantile } from "./normal.ts";

/** The NF4 code book as published in QLoRA / bitsandbytes (float32 values). */
export const NF4_LEVELS: readonly number[] = Object.freeze([
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
]);

/** Index of the exact zero in {@link NF4_LEVELS}. */
export const NF4_ZERO_CODE = 7;

/** float32 linspace the way torch.linspace computes it (both halves anchored at an end). */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const f = Math.fround;
  start = f(start); // torch holds the end points as float32 too
  end = f(end);
  const step = f((end - start) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Array.from(
    { length: steps },
    (_, i) => i < half ? f(start + step * i) : f(end - step * (steps - i - 1)),
  );
}

/**
 * Derive the NF4 levels from QLoRA's definition: quantiles of N(0, 1) between offset 0.9677083 and
 * 0.5 (9 points for the positive half, 8 for the negative), zero added, normalised by the largest.
 */
export function normalFloatLevels(offset = 0.9677083): number[] {
  const f = Math.fround;
  const positive = linspaceF32(offset, 0.5, 9).slice(0, -1).map((p) => f(normalQuantile(p)));
  const negative = linspaceF32(offset, 0.5, 8).slice(0, -1).map((p) => f(-normalQuantile(p)));
  const values = [...positive, 0, ...negative].sort((a, b) => a - b);
  const max = values[values.length - 1];
  return values.map((v) => f(v / max));
}

/** Midpoints between adjacent levels: code = number of thresholds below the value. */
const THRESHOLDS = NF4_LEVELS.slice(1).map((v, i) => (v + NF4_LEVELS[i]) / 2);

/** Nearest NF4 code of a value already divided by its block's absmax (in [-1, 1]). */
export function nf4Code(normalized: number): number {
  let code = 0;
  while (code < 15 && normalized > THRESHOLDS[code]) code++;
  return code;
}

/** Options of {@link quantizeNf4}. */
export interface Nf4Options {
  /** Elements per absmax block (default 64, QLoRA's). A multiple of 8. */
  blockSize?: number;
  /** Double-quantize the absmax values (QLoRA's "DQ"); default false. */
  doubleQuant?: boolean;
  /** Blocks per second-level group when double-quantizing (default 256). */
  doubleQuantGroup?: number;
}

/** Quantize a row-major `rows × cols` f32 weight to NF4. */
export function quantizeNf4(
  weight: Float32Array,
  rows: number,
  cols: number,
  options: Nf4Options = {},
): Nf4Weight {
  const blockSize = options.blockSize ?? 64;
  checkWeightInput(weight, rows, cols, "quantizeNf4");
  if (!Number.isInteger(blockSize) || blockSize < 8 || blockSize % 8 !== 0) {
    throw new RangeError(`quantizeNf4: blockSize=${blockSize} must be a multiple of 8`);
  }
  const bpr = Math.ceil(cols / blockSize);
  const absmax = new Float32Array(rows * bpr);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < bpr; b++) {
      const start = r * cols + b * blockSize;
      const end = r * cols + Math.min(cols, (b + 1) * blockSize);
      let m = 0;
      for (let i = start; i < end; i++) m = Math.max(m, Math.abs(weight[i]));
      absmax[r * bpr + b] = m;
      for (let i = start; i < end; i++) codes[i] = m === 0 ? NF4_ZERO_CODE : nf4Code(weight[i] / m);
    }
  }
  const packed = packCodes(codes, rows, cols);
  if (!options.doubleQuant) {
    return { format: "nf4", rows, cols, blockSize, packed, absmax, doubleQuant: null };
  }
  return {
    format: "nf4",
    rows,
    cols,
    blockSize,
    packed,
    absmax: null,
    doubleQuant: doubleQuantize(absmax, options.doubleQuantGroup ?? 256),
  };
}

/** Second-level int8 quantization of the block absmax values. */
export function doubleQuantize(absmax: Float32Array, groupSize: number): Nf4DoubleQuant {
  let mean = 0;
  for (const v of absmax) mean += v;
  const offset = Math.fround(absmax.length ? mean / absmax.length : 0);
  const groups = Math.ceil(absmax.length / groupSize);
  const scales = new Float32Array(groups);
  const codes = new Uint32Array(Math.ceil(absmax.length / 4));
  for (let g = 0; g < groups; g++) {
    const start = g * groupSize;
    const end = Math.min(absmax.length, start + groupSize);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(absmax[i] - offset));
    scales[g] = m / 127;
    for (let i = start; i < end; i++) {
      const q = scales[g] === 0 ? 0 : Math.round((absmax[i] - offset) / scales[g]);
      const byte = Math.max(-127, Math.min(127, q)) & 0xff;
      codes[i >> 2] |= byte << ((i & 3) * 8);
    }
  }
  return { groupSize, codes, scales, offset };
}

/** The block absmax values a weight decodes with (from f32, or from the double quantization). */
export function nf4Absmax(w: Nf4Weight): Float32Array {
  if (w.absmax) return w.absmax;
  const dq = w.doubleQuant!;
  const n = w.rows * blocksPerRow(w);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const code = ((dq.codes[i >> 2] >>> ((i & 3) * 8)) << 24) >> 24; // sign-extend the byte
    out[i] = Math.fround(code * dq.scales[Math.floor(i / dq.groupSize)]) + dq.offset;
  }
  return out;
}

/** Decode an NF4 weight back to row-major f32 (what the fused kernels must agree with). */
export function dequantizeNf4(w: Nf4Weight): Float32Array {
  validateQuantized(w, "NF4 weight");
  const absmax = nf4Absmax(w);
  const codes = unpackCodes(w.packed, w.rows, w.cols);
  const bpr = blocksPerRow(w);
  const out = new Float32Array(w.rows * w.cols);
  for (let r = 0; r < w.rows; r++) {
    for (let c = 0; c < w.cols; c++) {
      const scale = absmax[r * bpr + Math.floor(c / w.blockSize)];
      out[r * w.cols + c] = NF4_LEVELS[codes[r * w.cols + c]] * scale;
    }
  }
  return out;
}
