/**
 * 4-bit base weights: NF4 (QLoRA's NormalFloat levels, absmax per block, double quantization)
 * and asymmetric group-wise int4, their packed formats and float64 quantizers, and the WGSL
 * kernels that dequantize in registers ({@link quantMatmul}: y = x·Wᵀ; its backward dx = dy·W).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantizeNf4, quantizeNf4 } from "./mod.ts";
 * const w = Float32Array.from({ length: 2 * 128 }, (_, i) => Math.sin(i)); // [2, 128]
 * const q = quantizeNf4(w, 2, 128); // 4-bit codes, one absmax per block of 64
 * const back = dequantizeNf4(q);
 * assert.ok(w.every((v, i) => Math.abs(v - back[i]) < 0.2));
 * ```
 *
 * @module
 */
export {
  blocksPerRow,
  checkWeightInput,
  getCode,
  type Int4Weight,
  type Nf4DoubleQuant,
  type Nf4Weight,
  packCodes,
  quantizedBytes,
  type QuantizedWeight,
  unpackCodes,
  validateQuantized,
  wordsPerRow,
} from "./format.ts";
export {
  dequantizeNf4,
  doubleQuantize,
  NF4_LEVELS,
  NF4_ZERO_CODE,
  nf4Absmax,
  nf4Code,
  type Nf4Options,
  normalFloatLevels,
  quantizeNf4,
} from "./nf4.ts";
export { dequantizeInt4, quantizeInt4 } from "./int4.ts";
export { normalCdf, normalQuantile } from "./normal.ts";
export {
  emptyWeight,
  type GpuQuantWeight,
  QUANT_BACKWARD,
  QUANT_DECODE,
  QUANT_PREFILL,
  type QuantForwardOptions,
  type QuantGemvChoice,
  quantGemvFor,
  type QuantKernelChoice,
  quantMatmul,
  quantMatmulBackward,
  type QuantMatmulOptions,
  quantTileFor,
  type StorageFormat,
  storageRowBytes,
  uploadF32Weight,
  uploadHalfWeight,
  uploadQuantized,
} from "./qmatmul.ts";
export { quantizeRows, type RawRows, type StoredDType } from "./quantize.ts";
export {
  checkTile,
  chooseTile,
  type QuantTileConfig,
  quantTiledWgsl,
  type QuantTileMode,
  TILE_FEW,
  TILE_LARGE,
  TILE_MEDIUM,
  tileName,
  tileStorageBytes,
  tileWorkgroup,
} from "./tiled.ts";
export {
  chooseGemv,
  GEMV_MAX_TOKENS,
  gemvName,
  gemvStorageBytes,
  type QuantGemvConfig,
  quantGemvWgsl,
} from "./gemv.ts";
export {
  type FrozenBlock,
  frozenBlockBackward,
  frozenBlockMatmul,
  frozenDequantize,
  type FrozenForwardOptions,
  frozenGather,
  frozenMatmul,
  frozenMatmulBackward,
  type FrozenMatmulOptions,
  FrozenMatrix,
  type FrozenOptions,
  frozenRowNorms,
  planRowBlocks,
} from "./frozen.ts";
export {
  EPILOGUE_FIRST_BINDING,
  type QuantBackwardConfig,
  quantBackwardWgsl,
  type QuantForwardConfig,
  quantForwardWgsl,
  quantForwardWideWgsl,
  type QuantKernelFormat,
  wideForwardEligible,
} from "./wgsl.ts";
