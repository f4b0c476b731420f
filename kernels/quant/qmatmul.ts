/**
 * Host side of the frozen-weight kernels (4-bit NF4/int4, and f32/bf16/f16 with the same tiling):
 * upload a weight, run y = x·Wᵀ and dx = dy·W.
 */
import { type QuantizedWeight, validateQuantized } from "./format.ts";
import type { Batch } from "../runtime/batch.ts";
import type { ProductEpilogue } from "../runtime/epilogue.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import {
  EPILOGUE_FIRST_BINDING,
  isHalfFormat,
  QUANT_PARAMS,
  type QuantBackwardConfig,
  quantBackwardWgsl,
  type QuantForwardConfig,
  quantForwardWgsl,
  quantForwardWideWgsl,
  type QuantKernelFormat,
  wideForwardEligible,
} from "./wgsl.ts";
import {
  chooseGemv,
  GEMV_MAX_TOKENS,
  gemvName,
  gemvStorageBytes,
  type QuantGemvConfig,
  quantGemvWgsl,
} from "./gemv.ts";
import { grid1d } from "../runtime/launch.ts";
import { subgroupPrelude } from "../runtime/variants.ts";
import {
  chooseTile,
  type QuantTileConfig,
  quantTiledWgsl,
  tileName,
  tileStorageBytes,
} from "./tiled.ts";

/** A frozen weight resident on the GPU in its storage format. */
export interface GpuQuantWeight {
  /** Storage format the kernels decode. */
  format: QuantKernelFormat;
  /** Output features (rows of W). */
  rows: number;
  /** Input features (columns of W). */
  cols: number;
  /** Scale block (NF4) or group (int4) size; 8 for f32, bf16 and f16 (unused). */
  blockSize: number;
  /** Packed codes (u32), 16-bit pairs (bf16, f16; rows padded to 8 columns) or f32 values. */
  packed: GpuTensor;
  /** absmax (nf4), second-level scales (nf4dq) or group scales (int4). */
  scales: GpuTensor;
  /** int8 absmax codes (nf4dq) or 4-bit zero points (int4); one unused word otherwise. */
  aux: GpuTensor;
  /** Second-level group (nf4dq). */
  dqGroup: number;
  /** Mean absmax (nf4dq). */
  dqOffset: number;
  /** GPU bytes of the weight's buffers (payload, not pool rounding). */
  bytes: number;
  /** Free the GPU buffers. */
  release(): void;
}

function makeWeight(
  format: QuantKernelFormat,
  rows: number,
  cols: number,
  blockSize: number,
  packed: GpuTensor,
  scales: GpuTensor,
  aux: GpuTensor,
  dq = { group: 1, offset: 0 },
): GpuQuantWeight {
  return {
    format,
    rows,
    cols,
    blockSize,
    packed,
    scales,
    aux,
    dqGroup: dq.group,
    dqOffset: dq.offset,
    bytes: packed.byteLength +
      (format === "f32" || isHalfFormat(format) ? 0 : scales.byteLength + aux.byteLength),
    release() {
      packed.release();
      scales.release();
      aux.release();
    },
  };
}

/**
 * Validate a quantized weight and upload it. A weight whose buffers disagree with its shape is
 * rejected before any byte reaches the GPU.
 */
export function uploadQuantized(rt: GpuRuntime, w: QuantizedWeight, what?: string): GpuQuantWeight {
  validateQuantized(w, what);
  const placeholder = () => rt.upload(new Uint32Array(1), [1]);
  if (w.format === "int4") {
    return makeWeight(
      "int4",
      w.rows,
      w.cols,
      w.groupSize,
      rt.upload(w.packed, [w.packed.length]),
      rt.upload(w.scales, [w.scales.length]),
      rt.upload(w.zeros, [w.zeros.length]),
    );
  }
  if (w.doubleQuant) {
    const dq = w.doubleQuant;
    return makeWeight(
      "nf4dq",
      w.rows,
      w.cols,
      w.blockSize,
      rt.upload(w.packed, [w.packed.length]),
      rt.upload(dq.scales, [dq.scales.length]),
      rt.upload(dq.codes, [dq.codes.length]),
      { group: dq.groupSize, offset: dq.offset },
    );
  }
  return makeWeight(
    "nf4",
    w.rows,
    w.cols,
    w.blockSize,
    rt.upload(w.packed, [w.packed.length]),
    rt.upload(w.absmax!, [w.absmax!.length]),
    placeholder(),
  );
}

/** Upload an f32 weight (rows × cols, cols % 8 = 0) for the same kernels: the fp32 baseline. */
export function uploadF32Weight(
  rt: GpuRuntime,
  w: Float32Array,
  rows: number,
  cols: number,
): GpuQuantWeight {
  if (w.length !== rows * cols) throw new RangeError(`f32 weight: ${w.length} for ${rows}×${cols}`);
  if (cols % 8 !== 0) throw new RangeError(`f32 weight: cols=${cols} must be a multiple of 8`);
  return makeWeight(
    "f32",
    rows,
    cols,
    8,
    rt.upload(w, [rows, cols]),
    rt.upload(new Float32Array(1), [1]),
    rt.upload(new Uint32Array(1), [1]),
  );
}

/** Storage formats a frozen weight can be written in on the GPU ({@link emptyWeight}). */
export type StorageFormat = "f32" | "bf16" | "f16" | "nf4" | "int4";

/**
 * An empty weight of `format` for rows × cols (contents undefined until written, e.g. by
 * `quantizeRows`): packed words, block scales and int4 zero points sized as the kernels read them.
 * `blockSize` is the NF4 block or int4 group (ignored for the other formats).
 */
export function emptyWeight(
  rt: GpuRuntime,
  format: StorageFormat,
  rows: number,
  cols: number,
  blockSize = 64,
): GpuQuantWeight {
  const wpr = Math.ceil(cols / 8);
  const bpr = Math.ceil(cols / blockSize);
  const one = () => rt.empty([1], "u32");
  switch (format) {
    case "f32":
      return makeWeight(format, rows, cols, 8, rt.empty([rows, cols]), rt.empty([1]), one());
    case "bf16":
    case "f16":
      return makeWeight(
        format,
        rows,
        cols,
        8,
        rt.empty([rows, wpr * 4], "u32"),
        rt.empty([1]),
        one(),
      );
    case "nf4":
      return makeWeight(
        format,
        rows,
        cols,
        blockSize,
        rt.empty([rows, wpr], "u32"),
        rt.empty([rows, bpr]),
        one(),
      );
    case "int4":
      return makeWeight(
        format,
        rows,
        cols,
        blockSize,
        rt.empty([rows, wpr], "u32"),
        rt.empty([rows, bpr]),
        rt.empty([rows, Math.ceil(bpr / 8)], "u32"),
      );
  }
}

/** Bytes one row takes in `format` (packed values and per-row scales). */
export function storageRowBytes(format: StorageFormat, cols: number, blockSize = 64): number {
  const wpr = Math.ceil(cols / 8);
  switch (format) {
    case "f32":
      return 4 * cols;
    case "bf16":
    case "f16":
      return 16 * wpr;
    case "nf4":
      return 4 * wpr + 4 * Math.ceil(cols / blockSize);
    case "int4":
      return 4 * wpr + 4 * Math.ceil(cols / blockSize) + 4 * Math.ceil(cols / blockSize / 8);
  }
}

/**
 * Upload a 16-bit weight (rows × cols) given as its raw halves, row-major: bf16 (the top halves of
 * f32 values) or IEEE f16. Rows are padded to a multiple of 8 columns with zeros.
 */
export function uploadHalfWeight(
  rt: GpuRuntime,
  format: "bf16" | "f16",
  halves: Uint16Array,
  rows: number,
  cols: number,
): GpuQuantWeight {
  if (halves.length !== rows * cols) {
    throw new RangeError(`${format} weight: ${halves.length} values for ${rows}×${cols}`);
  }
  const stride = Math.ceil(cols / 8) * 8;
  const padded = new Uint16Array(rows * stride);
  for (let r = 0; r < rows; r++) padded.set(halves.subarray(r * cols, (r + 1) * cols), r * stride);
  return makeWeight(
    format,
    rows,
    cols,
    8,
    rt.upload(new Uint32Array(padded.buffer), [rows, stride / 2], "u32"),
    rt.upload(new Float32Array(1), [1]),
    rt.upload(new Uint32Array(1), [1]),
  );
}

/**
 * Default tiles: decode (one token) spreads rows over invocations and reads four words per step;
 * prefill tiles tokens too and keeps one word per step (the wide step's 32 x values per token
 * crowd out the token tile: measured no faster at 64 tokens on llvmpipe).
 */
export const QUANT_DECODE: QuantForwardConfig = { tm: 1, tn: 8, wx: 32, wy: 1 };
/** Default forward tile for several tokens. */
export const QUANT_PREFILL: QuantForwardConfig = { tm: 4, tn: 4, wx: 8, wy: 8, wide: false };
/** Default backward tile. */
export const QUANT_BACKWARD: QuantBackwardConfig = { tm: 4, tw: 1, wx: 8, wy: 8 };

/** The uniform block (`QUANT_PARAMS_WGSL`) of a kernel over `w` and `tokens` rows. */
export function quantParams(
  w: GpuQuantWeight,
  tokens: number,
  alpha: number,
  beta: number,
  ldo: number,
  oOff: number,
): ArrayBuffer {
  const bpr = Math.ceil(w.cols / w.blockSize);
  return QUANT_PARAMS.pack({
    M: tokens,
    N: w.rows,
    K: w.cols,
    wpr: Math.ceil(w.cols / 8),
    bpr,
    blockSize: w.blockSize,
    zpr: Math.ceil(bpr / 8),
    dqGroup: w.dqGroup,
    dqOffset: w.dqOffset,
    alpha,
    beta,
    ldo,
    oOff,
  });
}

/** Options of {@link quantMatmul} and {@link quantMatmulBackward}. */
export interface QuantMatmulOptions {
  /** Output tensor (required when beta ≠ 0). */
  out?: GpuTensor;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of the previous output (default 0). */
  beta?: number;
  /** Record into this batch instead of submitting. */
  batch?: Batch;
  /**
   * The output-side tensor (y forward, dy backward) is a column window of a wider one: its row
   * stride in elements (default: W's rows) ...
   */
  outStride?: number;
  /** ... and the window's first column (default 0). */
  outOffset?: number;
}

/**
 * The kernel a frozen matmul records: the CPU-adapter register tile, or the GPU workgroup tile
 * (`kernels/quant/tiled.ts`). Without either option the runtime's variants decide
 * ({@link quantTileFor}).
 */
export interface QuantKernelChoice {
  /** Force a GPU workgroup tile (the tiled kernels run on any adapter). */
  tile?: QuantTileConfig;
}

/** Options of the forward's GPU matrix–vector kernel. */
export interface QuantGemvChoice {
  /** Force the GPU matrix–vector kernel (at most 16 tokens) with this shape. */
  gemv?: QuantGemvConfig;
}

/**
 * The GPU matrix–vector kernel `rt.variants` choose for `tokens` (1–7 on GPUs), or null.
 */
export function quantGemvFor(rt: GpuRuntime, tokens: number): QuantGemvConfig | null {
  if (rt.variants.target !== "gpu" || tokens > GEMV_MAX_TOKENS) return null;
  const cfg = chooseGemv(tokens, rt.variants.subgroups);
  return gemvStorageBytes(cfg, tokens) <= rt.variants.workgroupStorageBytes ? cfg : null;
}

/**
 * The GPU tile `rt.variants` choose for `tokens` × `outputs`, or null for the CPU-adapter kernels
 * (on CPU adapters, and on GPUs for fewer than 8 tokens).
 */
export function quantTileFor(
  rt: GpuRuntime,
  tokens: number,
  outputs: number,
): QuantTileConfig | null {
  if (rt.variants.target !== "gpu") return null;
  return chooseTile(tokens, outputs, rt.variants.workgroupStorageBytes);
}

function checkTileFits(rt: GpuRuntime, tile: QuantTileConfig, label: string): void {
  const need = tileStorageBytes(tile);
  if (need > rt.variants.workgroupStorageBytes) {
    throw new RangeError(
      `${label}: tile ${tileName(tile)} needs ${need} bytes of workgroup memory, over the ` +
        `device's ${rt.variants.workgroupStorageBytes}`,
    );
  }
}

/** Options of {@link quantMatmul}. */
export interface QuantForwardOptions
  extends QuantMatmulOptions, QuantKernelChoice, QuantGemvChoice {
  /**
   * The CPU-adapter tile (default {@link QUANT_DECODE} for one token, else {@link QUANT_PREFILL});
   * giving it overrides the variants' choice of a GPU tile.
   */
  kernel?: QuantForwardConfig;
  /**
   * Terms added to every output in the same dispatch: y = α·x·Wᵀ + e + β·y, with e(t, o) of
   * output column o (the window's offset included) of token t.
   */
  epilogue?: ProductEpilogue;
}

async function run(
  rt: GpuRuntime,
  code: string,
  label: string,
  w: GpuQuantWeight,
  input: GpuTensor,
  out: GpuTensor,
  tokens: number,
  grid: [number, number],
  options: QuantMatmulOptions,
  epilogue?: ProductEpilogue,
): Promise<void> {
  if (out.buffer === input.buffer) {
    throw new Error(`${label}: the output must not alias the input (rows are read after writes)`);
  }
  const pipeline = await rt.pipelines.get(code, label);
  const batch = options.batch ?? rt.batch();
  batch.dispatch(
    pipeline,
    [
      batch.uniform(
        quantParams(
          w,
          tokens,
          options.alpha ?? 1,
          options.beta ?? 0,
          options.outStride ?? w.rows,
          options.outOffset ?? 0,
        ),
      ),
      w.packed.buffer,
      w.scales.buffer,
      w.aux.buffer,
      input.binding,
      out.binding,
      ...(epilogue?.bindings(batch) ?? []),
    ],
    grid,
    label,
  );
  if (!options.batch) await batch.submit();
}

function checkIo(x: GpuTensor, features: number, what: string): number {
  x.check(what, "f32");
  if (x.size % features !== 0 || x.size === 0) {
    throw new RangeError(
      `${what}: ${x.size} elements is not a whole number of ${features}-feature rows ` +
        `(shape [${x.shape.join(", ")}])`,
    );
  }
  return x.size / features;
}

function outputFor(rt: GpuRuntime, tokens: number, features: number, o: QuantMatmulOptions) {
  if ((o.beta ?? 0) !== 0 && !o.out) throw new Error("beta ≠ 0 needs options.out");
  const out = o.out ?? rt.empty([tokens, features]);
  out.check("output", "f32");
  if (out.size !== tokens * features) {
    throw new RangeError(`output has ${out.size} elements, expected ${tokens}×${features}`);
  }
  return out;
}

/** The row stride and offset of the output-side tensor, checked against its size. */
function window(w: GpuQuantWeight, t: GpuTensor, tokens: number, o: QuantMatmulOptions): void {
  const ldo = o.outStride ?? w.rows;
  const off = o.outOffset ?? 0;
  if (!Number.isInteger(ldo) || !Number.isInteger(off) || off < 0 || off + w.rows > ldo) {
    throw new RangeError(`column window [${off}, ${off + w.rows}) of rows ${ldo} wide`);
  }
  if (t.size !== tokens * ldo) {
    throw new RangeError(
      `a ${ldo}-wide tensor of ${tokens} rows has ${tokens * ldo} elements, not ${t.size}`,
    );
  }
}

function checkFullColumns(w: GpuQuantWeight, what: string): void {
  if (w.format === "f32" && w.cols % 8 !== 0) {
    throw new RangeError(`${what}: f32 weights need cols % 8 = 0 (cols = ${w.cols})`);
  }
}

/** y = α·x·Wᵀ + β·y for x [tokens, cols] → y [tokens, rows], W dequantized in registers. */
export async function quantMatmul(
  rt: GpuRuntime,
  x: GpuTensor,
  w: GpuQuantWeight,
  options: QuantForwardOptions = {},
): Promise<GpuTensor> {
  const tokens = checkIo(x, w.cols, "quantMatmul x");
  checkFullColumns(w, "quantMatmul");
  let out: GpuTensor;
  if (options.outStride !== undefined) {
    if (!options.out) throw new Error("quantMatmul: outStride needs options.out");
    out = options.out;
    out.check("output", "f32");
    window(w, out, tokens, options);
  } else out = outputFor(rt, tokens, w.rows, options);
  const { epilogue } = options;
  const auto = !options.kernel && !options.tile && !options.gemv;
  const gemv = options.gemv ?? (auto ? quantGemvFor(rt, tokens) : null);
  if (gemv) {
    if (gemv.subgroups && !rt.variants.subgroups) {
      throw new RangeError("quantMatmul: subgroup kernels need rt.variants.subgroups");
    }
    const vecX = w.cols % 4 === 0;
    const label = `qmatmul-gemv/${w.format}/t${tokens}-${gemvName(gemv)}${vecX ? "/v4" : ""}${
      epilogue ? `+${epilogue.name}` : ""
    }`;
    const need = gemvStorageBytes(gemv, tokens);
    if (need > rt.variants.workgroupStorageBytes) {
      throw new RangeError(`${label}: needs ${need} bytes of workgroup memory`);
    }
    const code = quantGemvWgsl(
      w.format,
      gemv,
      tokens,
      vecX,
      epilogue?.wgsl(EPILOGUE_FIRST_BINDING, vecX) ?? "",
      gemv.subgroups ? subgroupPrelude(rt.variants) : "",
    );
    const [gx, gy] = grid1d(rt, Math.ceil(w.rows / gemv.rows), 1);
    await run(rt, code, label, w, x, out, tokens, [gx, gy], options, epilogue);
    return out;
  }
  const tile = options.tile ?? (auto ? quantTileFor(rt, tokens, w.rows) : null);
  if (tile) {
    const vecA = w.cols % 4 === 0;
    const label = `qmatmul-tiled/${w.format}/${tileName(tile)}${vecA ? "/v4" : ""}${
      epilogue ? `+${epilogue.name}` : ""
    }`;
    checkTileFits(rt, tile, label);
    const code = quantTiledWgsl(
      w.format,
      "forward",
      tile,
      vecA,
      epilogue?.wgsl(EPILOGUE_FIRST_BINDING, vecA) ?? "",
    );
    const grid: [number, number] = [Math.ceil(w.rows / tile.bn), Math.ceil(tokens / tile.bm)];
    await run(rt, code, label, w, x, out, tokens, grid, options, epilogue);
    return out;
  }
  const cfg = options.kernel ?? (tokens === 1 ? QUANT_DECODE : QUANT_PREFILL);
  const aligned = w.cols % 8 === 0;
  const wide = (cfg.wide ?? true) && wideForwardEligible(w.format, w.cols, w.blockSize);
  const label = `qmatmul/${w.format}/${cfg.tm}x${cfg.tn}-wg${cfg.wx}x${cfg.wy}${
    wide ? "/w4" : aligned ? "/v4" : ""
  }${epilogue ? `+${epilogue.name}` : ""}`;
  const grid: [number, number] = [
    Math.ceil(w.rows / (cfg.tn * cfg.wx)),
    Math.ceil(tokens / (cfg.tm * cfg.wy)),
  ];
  const epilogueCode = epilogue?.wgsl(EPILOGUE_FIRST_BINDING, wide || aligned) ?? "";
  const code = wide
    ? quantForwardWideWgsl(w.format, cfg, epilogueCode)
    : quantForwardWgsl(w.format, cfg, aligned, epilogueCode);
  await run(rt, code, label, w, x, out, tokens, grid, options, epilogue);
  return out;
}

/** dx = α·dy·W + β·dx for dy [tokens, rows] → dx [tokens, cols]. */
export async function quantMatmulBackward(
  rt: GpuRuntime,
  dy: GpuTensor,
  w: GpuQuantWeight,
  options: QuantMatmulOptions & QuantKernelChoice & { kernel?: QuantBackwardConfig } = {},
): Promise<GpuTensor> {
  checkFullColumns(w, "quantMatmulBackward");
  let tokens: number;
  if (options.outStride !== undefined) {
    dy.check("quantMatmulBackward dy", "f32");
    tokens = dy.size / options.outStride;
    if (!Number.isInteger(tokens) || tokens === 0) {
      throw new RangeError(
        `quantMatmulBackward dy: ${dy.size} elements in rows of ${options.outStride}`,
      );
    }
    window(w, dy, tokens, options);
  } else tokens = checkIo(dy, w.rows, "quantMatmulBackward dy");
  const out = outputFor(rt, tokens, w.cols, options);
  // Any number of tokens takes the tiled backward on GPUs: the CPU-adapter backward walks all N
  // rows of W in every invocation.
  const tile = options.tile ??
    (options.kernel ? null : quantTileFor(rt, Math.max(tokens, 8), w.cols));
  if (tile) {
    const ldo = options.outStride ?? w.rows;
    const vecA = w.rows % 4 === 0 && ldo % 4 === 0 && (options.outOffset ?? 0) % 4 === 0;
    const label = `qmatmul-bwd-tiled/${w.format}/${tileName(tile)}${vecA ? "/v4" : ""}`;
    checkTileFits(rt, tile, label);
    const code = quantTiledWgsl(w.format, "backward", tile, vecA, "");
    const grid: [number, number] = [Math.ceil(w.cols / tile.bn), Math.ceil(tokens / tile.bm)];
    await run(rt, code, label, w, dy, out, tokens, grid, options);
    return out;
  }
  const cfg = options.kernel ?? QUANT_BACKWARD;
  const label = `qmatmul-bwd/${w.format}/${cfg.tm}x${cfg.tw}w-wg${cfg.wx}x${cfg.wy}`;
  const grid: [number, number] = [
    Math.ceil(Math.ceil(w.cols / 8) / (cfg.tw * cfg.wx)),
    Math.ceil(tokens / (cfg.tm * cfg.wy)),
  ];
  await run(rt, quantBackwardWgsl(w.format, cfg), label, w, dy, out, tokens, grid, options);
  return out;
}
