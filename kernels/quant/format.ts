/**
 * Packed 4-bit weight formats shared by the quantizers (TypeScript) and the WGSL kernels.
 *
 * A weight W is `rows × cols` (PyTorch's [out, in]). Every row is packed on its own: 8 codes per
 * u32, low nibble first, `ceil(cols / 8)` words per row; scale blocks run along the row and the
 * last one of a row may be partial. So any `cols` works, rows start word-aligned, and the kernels
 * find a block as `row * blocksPerRow + col / blockSize`. (bitsandbytes blocks the flattened
 * tensor instead; for `cols % blockSize == 0`, which holds for every LLaMA layer, the two agree.)
 */

/** NF4 (QLoRA): 16 NormalFloat levels × per-block absmax, optionally double-quantized. */
export interface Nf4Weight {
  /** Format tag. */
  format: "nf4";
  /** Output features (rows of W). */
  rows: number;
  /** Input features (columns of W). */
  cols: number;
  /** Elements per absmax block along a row (QLoRA: 64). A multiple of 8. */
  blockSize: number;
  /** 4-bit level indices, `rows × ceil(cols/8)` words. */
  packed: Uint32Array;
  /** Per-block absmax in f32 (`rows × blocksPerRow`); null when double-quantized. */
  absmax: Float32Array | null;
  /** QLoRA's double quantization of the absmax values (null: plain f32 absmax). */
  doubleQuant: Nf4DoubleQuant | null;
}

/**
 * Second-level quantization of NF4 block scales: absmax ≈ code·scale[g] + offset, with `code` a
 * signed 8-bit integer, one f32 `scale` per `groupSize` blocks (QLoRA: 256) and one global
 * `offset` (the mean absmax). QLoRA codes with an 8-bit dynamic float map; we use symmetric linear
 * int8 with the same storage (8 bits per block + 32 per group): 4.127 bits per weight in both.
 */
export interface Nf4DoubleQuant {
  /** Blocks per second-level group (QLoRA: 256). */
  groupSize: number;
  /** int8 codes, four per u32 word (low byte first), `ceil(nBlocks / 4)` words. */
  codes: Uint32Array;
  /** Dequantization step of each group (absmax range / 127). */
  scales: Float32Array;
  /** Mean absmax, added back after dequantization. */
  offset: number;
}

/** Asymmetric int4 (GPTQ / QA-LoRA style): w ≈ (q − zero)·scale per group along a row. */
export interface Int4Weight {
  /** Format tag. */
  format: "int4";
  /** Output features (rows of W). */
  rows: number;
  /** Input features (columns of W). */
  cols: number;
  /** Elements per group along a row: 32, 64 or 128. */
  groupSize: number;
  /** 4-bit codes, `rows × ceil(cols/8)` words. */
  packed: Uint32Array;
  /** f32 scale per group, `rows × groupsPerRow`. */
  scales: Float32Array;
  /** 4-bit zero points, 8 per word, `rows × ceil(groupsPerRow/8)` words. */
  zeros: Uint32Array;
}

/** Either 4-bit format. */
export type QuantizedWeight = Nf4Weight | Int4Weight;

/** Words of packed codes per row. */
export function wordsPerRow(cols: number): number {
  return Math.ceil(cols / 8);
}

/** Scale blocks (NF4) or groups (int4) per row. */
export function blocksPerRow(w: QuantizedWeight): number {
  return Math.ceil(w.cols / (w.format === "nf4" ? w.blockSize : w.groupSize));
}

/** Read 4-bit code `col` of row `row`. */
export function getCode(packed: Uint32Array, cols: number, row: number, col: number): number {
  return (packed[row * wordsPerRow(cols) + (col >> 3)] >>> ((col & 7) * 4)) & 0xf;
}

/** Pack one code per element (rows × cols, values 0..15) into words, 8 per u32, row by row. */
export function packCodes(codes: Uint8Array, rows: number, cols: number): Uint32Array {
  if (codes.length !== rows * cols) {
    throw new RangeError(`packCodes: ${codes.length} codes for ${rows}×${cols}`);
  }
  const wpr = wordsPerRow(cols);
  const out = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const q = codes[r * cols + c];
      if (q > 15) throw new RangeError(`packCodes: code ${q} at (${r}, ${c}) is not 4-bit`);
      out[r * wpr + (c >> 3)] |= q << ((c & 7) * 4);
    }
  }
  return out;
}

/** Inverse of {@link packCodes}. */
export function unpackCodes(packed: Uint32Array, rows: number, cols: number): Uint8Array {
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = getCode(packed, cols, r, c);
  }
  return out;
}

/** Bytes each format stores, and bits per weight, for a rows × cols matrix. */
export function quantizedBytes(w: QuantizedWeight): { bytes: number; bitsPerWeight: number } {
  let bytes = w.packed.byteLength;
  if (w.format === "nf4") {
    bytes += w.absmax ? w.absmax.byteLength : 0;
    if (w.doubleQuant) {
      bytes += w.doubleQuant.codes.byteLength + w.doubleQuant.scales.byteLength + 4;
    }
  } else {
    bytes += w.scales.byteLength + w.zeros.byteLength;
  }
  return { bytes, bitsPerWeight: (8 * bytes) / (w.rows * w.cols) };
}

/**
 * Check a row-major `rows × cols` f32 weight before quantizing it: its length, and that every
 * value is finite (the error gives the first bad (row, col)). `who` names the caller.
 */
export function checkWeightInput(
  weight: Float32Array,
  rows: number,
  cols: number,
  who: string,
): void {
  if (weight.length !== rows * cols) {
    throw new RangeError(`${who}: ${weight.length} values for a ${rows}×${cols} weight`);
  }
  for (let i = 0; i < weight.length; i++) {
    if (!Number.isFinite(weight[i])) {
      throw new RangeError(`${who}: non-finite weight at (${Math.floor(i / cols)}, ${i % cols})`);
    }
  }
}

function expectLength(name: string, got: number, want: number, what: string): void {
  if (got !== want) {
    throw new RangeError(`${what}: ${name} has ${got} elements, expected ${want}`);
  }
}

/**
 * Check that every buffer of a quantized weight has the length its shape implies, so a corrupt or
 * truncated weight is rejected before anything reaches the GPU. `what` names it in the error.
 */
export function validateQuantized(w: QuantizedWeight, what = "quantized weight"): void {
  for (const [k, v] of [["rows", w.rows], ["cols", w.cols]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what}: ${k}=${v} must be >= 1`);
  }
  expectLength("packed", w.packed.length, w.rows * wordsPerRow(w.cols), what);
  if (w.format === "nf4") {
    if (!Number.isInteger(w.blockSize) || w.blockSize < 8 || w.blockSize % 8 !== 0) {
      throw new RangeError(`${what}: NF4 blockSize=${w.blockSize} must be a multiple of 8`);
    }
    const nBlocks = w.rows * blocksPerRow(w);
    if ((w.absmax === null) === (w.doubleQuant === null)) {
      throw new Error(`${what}: NF4 needs exactly one of absmax or doubleQuant`);
    }
    if (w.absmax) expectLength("absmax", w.absmax.length, nBlocks, what);
    if (w.doubleQuant) {
      const dq = w.doubleQuant;
      if (!Number.isInteger(dq.groupSize) || dq.groupSize < 1) {
        throw new RangeError(`${what}: doubleQuant.groupSize=${dq.groupSize} must be >= 1`);
      }
      expectLength("doubleQuant.codes", dq.codes.length, Math.ceil(nBlocks / 4), what);
      expectLength("doubleQuant.scales", dq.scales.length, Math.ceil(nBlocks / dq.groupSize), what);
      if (!Number.isFinite(dq.offset)) {
        throw new RangeError(`${what}: doubleQuant.offset is not finite`);
      }
    }
  } else if (w.format === "int4") {
    if (![32, 64, 128].includes(w.groupSize)) {
      throw new RangeError(`${what}: int4 groupSize=${w.groupSize} must be 32, 64 or 128`);
    }
    const groups = blocksPerRow(w);
    expectLength("scales", w.scales.length, w.rows * groups, what);
    expectLength("zeros", w.zeros.length, w.rows * Math.ceil(groups / 8), what);
  } else {
    throw new TypeError(`${what}: unknown format ${(w as { format: string }).format}`);
  }
}
