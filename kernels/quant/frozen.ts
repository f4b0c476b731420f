/**
 * A frozen matrix W [rows, cols] kept in row blocks, each block's buffers within the device's
 * `maxStorageBufferBindingSize`: a 128k-token embedding or classifier, or an f32 layer of an 8B
 * model, is several blocks on a device that binds 128 MiB and one block on one that binds 4 GiB.
 * Every operation a model needs walks the blocks:
 *
 * - `frozenMatmul`          y = x·Wᵀ (+ β·y), each block writing its column window of y
 * - `frozenMatmulBackward`  dx = dy·W (+ β·dx), each block adding its part
 * - `frozenBlockMatmul`     one block's columns only, into a buffer of their own (vocabulary
 *                           chunks of a classifier), and its backward `frozenBlockBackward`
 * - `frozenGather`          out[t] = W[ids[t]] (an embedding lookup)
 * - `frozenDequantize`      W as one f32 tensor (where it fits), `frozenRowNorms` ‖W_r‖.
 *
 * f32 blocks run the dense matmul kernels; bf16/f16/NF4/int4 blocks the fused frozen-weight kernels
 * of `qmatmul.ts`, which decode in registers.
 */
import { matmul } from "../matmul/matmul.ts";
import type { Batch } from "../runtime/batch.ts";
import type { ProductEpilogue } from "../runtime/epilogue.ts";
import { FLAT_INDEX_WGSL, grid1d } from "../runtime/launch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import {
  emptyWeight,
  type GpuQuantWeight,
  quantGemvFor,
  quantMatmul,
  quantMatmulBackward,
  quantParams,
  type StorageFormat,
  storageRowBytes,
} from "./qmatmul.ts";
import { weightAtWgsl } from "./wgsl.ts";

/** One row block of a {@link FrozenMatrix}. */
export interface FrozenBlock {
  /** First row of W this block holds. */
  rowStart: number;
  /** The block's buffers (rows = the block's row count). */
  weight: GpuQuantWeight;
}

/** Options of {@link FrozenMatrix.empty}. */
export interface FrozenOptions {
  /** NF4 block or int4 group size (default 64). */
  blockSize?: number;
  /** Largest block in bytes (default: the device's maxStorageBufferBindingSize). */
  maxBlockBytes?: number;
}

/** Rows per block so that every block's buffers stay within `maxBytes`. */
export function planRowBlocks(rows: number, rowBytes: number, maxBytes: number): number[] {
  const per = Math.floor(maxBytes / rowBytes);
  if (per < 1) {
    throw new RangeError(
      `one row of ${rowBytes} bytes does not fit in a ${maxBytes}-byte buffer; store the ` +
        `weight in a smaller format (bf16, f16, nf4, int4)`,
    );
  }
  const blocks = Math.ceil(rows / per);
  const even = Math.ceil(rows / blocks); // as even as possible: no tiny last block
  return Array.from({ length: blocks }, (_, b) => Math.min(even, rows - b * even));
}

/** A frozen weight on the GPU in row blocks. */
export class FrozenMatrix {
  /** Rows (output features of a linear layer; vocabulary of an embedding). */
  readonly rows: number;
  /** Columns (input features). */
  readonly cols: number;
  /** Storage format. */
  readonly format: StorageFormat;
  /** The blocks, in row order. */
  readonly blocks: readonly FrozenBlock[];

  private constructor(
    rows: number,
    cols: number,
    format: StorageFormat,
    blocks: FrozenBlock[],
  ) {
    this.rows = rows;
    this.cols = cols;
    this.format = format;
    this.blocks = blocks;
  }

  /** Allocate the blocks (contents undefined until written, e.g. by `quantizeRows`). */
  static empty(
    rt: GpuRuntime,
    format: StorageFormat,
    rows: number,
    cols: number,
    options: FrozenOptions = {},
  ): FrozenMatrix {
    const blockSize = options.blockSize ?? 64;
    const limit = options.maxBlockBytes ?? rt.device.limits.maxStorageBufferBindingSize;
    const plan = planRowBlocks(rows, storageRowBytes(format, cols, blockSize), limit);
    const blocks: FrozenBlock[] = [];
    let rowStart = 0;
    for (const n of plan) {
      blocks.push({ rowStart, weight: emptyWeight(rt, format, n, cols, blockSize) });
      rowStart += n;
    }
    return new FrozenMatrix(rows, cols, format, blocks);
  }

  /** A single-block matrix around an existing weight (the caller gives up ownership). */
  static of(weight: GpuQuantWeight): FrozenMatrix {
    return new FrozenMatrix(
      weight.rows,
      weight.cols,
      weight.format as StorageFormat,
      [{ rowStart: 0, weight }],
    );
  }

  /**
   * An f32 tensor [rows, cols] seen as a one-block matrix, without a copy; releasing the matrix
   * leaves the tensor to its owner.
   */
  static wrapF32(rt: GpuRuntime, t: GpuTensor): FrozenMatrix {
    if (t.dtype !== "f32" || t.shape.length !== 2) {
      throw new TypeError(`wrapF32: an f32 [rows, cols] tensor, not ${t.dtype}[${t.shape}]`);
    }
    const [rows, cols] = t.shape;
    const scales = rt.empty([1]);
    const aux = rt.empty([1], "u32");
    const weight: GpuQuantWeight = {
      format: "f32",
      rows,
      cols,
      blockSize: 8,
      packed: t,
      scales,
      aux,
      dqGroup: 1,
      dqOffset: 0,
      bytes: t.byteLength,
      release() {
        scales.release();
        aux.release();
      },
    };
    return FrozenMatrix.of(weight);
  }

  /**
   * Whether {@link frozenMatmul} can add a {@link ProductEpilogue} in its dispatch: every format
   * but f32 rows that are not whole multiples of 8 columns (the frozen-weight kernels' f32 path).
   */
  get takesEpilogue(): boolean {
    return this.format !== "f32" || this.cols % 8 === 0;
  }

  /** GPU bytes of all blocks (payload). */
  get bytes(): number {
    return this.blocks.reduce((n, b) => n + b.weight.bytes, 0);
  }

  /** The block holding `row`. */
  blockOf(row: number): FrozenBlock {
    for (const b of this.blocks) if (row < b.rowStart + b.weight.rows) return b;
    throw new RangeError(`row ${row} of a ${this.rows}-row matrix`);
  }

  /** Free every block. */
  release(): void {
    for (const b of this.blocks) b.weight.release();
  }
}

/** Options of the frozen matmuls. */
export interface FrozenMatmulOptions {
  /** Output (required when beta ≠ 0). */
  out?: GpuTensor;
  /** Scale of the previous output (default 0). */
  beta?: number;
}

/** Options of {@link frozenMatmul}. */
export interface FrozenForwardOptions extends FrozenMatmulOptions {
  /**
   * Terms added to every output in the product's dispatch (y = x·Wᵀ + e + β·y, e(t, o) for
   * output feature o of token t); needs {@link FrozenMatrix.takesEpilogue}.
   */
  epilogue?: ProductEpilogue;
}

/**
 * Whether an f32 weight's forward takes the dense matmul: always, except for the few tokens of a
 * decoding step on a GPU, where the matrix–vector kernel reads W at memory speed (rows of whole
 * groups of 8 columns).
 */
function denseF32(rt: GpuRuntime, w: FrozenMatrix, tokens: number): boolean {
  return w.cols % 8 !== 0 || quantGemvFor(rt, tokens) === null;
}

/** y [tokens, W.rows] = x [tokens, W.cols]·Wᵀ + β·y. */
export async function frozenMatmul(
  rt: GpuRuntime,
  batch: Batch,
  x: GpuTensor,
  w: FrozenMatrix,
  options: FrozenForwardOptions = {},
): Promise<GpuTensor> {
  const tokens = x.size / w.cols;
  if (!Number.isInteger(tokens) || tokens === 0) {
    throw new RangeError(`frozenMatmul: x of ${x.size} elements is not [tokens, ${w.cols}]`);
  }
  const beta = options.beta ?? 0;
  if (beta !== 0 && !options.out) throw new Error("frozenMatmul: beta ≠ 0 needs options.out");
  const y = options.out ?? rt.empty([tokens, w.rows]);
  const { epilogue } = options;
  if (epilogue && !w.takesEpilogue) {
    throw new RangeError(`frozenMatmul: an f32 weight of ${w.cols} columns takes no epilogue`);
  }
  if (w.blocks.length === 1) {
    const b = w.blocks[0].weight;
    if (w.format === "f32" && !epilogue && denseF32(rt, w, tokens)) {
      await matmul(rt, x, b.packed, { m: tokens, n: w.rows, k: w.cols, transB: true, beta }, {
        out: y,
        batch,
      });
    } else await quantMatmul(rt, x, b, { out: y, beta, batch, epilogue });
    return y;
  }
  for (const { rowStart, weight } of w.blocks) {
    await quantMatmul(rt, x, weight, {
      out: y,
      beta,
      batch,
      outStride: w.rows,
      outOffset: rowStart,
      epilogue,
    });
  }
  return y;
}

/** dx [tokens, W.cols] = dy [tokens, W.rows]·W + β·dx. */
export async function frozenMatmulBackward(
  rt: GpuRuntime,
  batch: Batch,
  dy: GpuTensor,
  w: FrozenMatrix,
  options: FrozenMatmulOptions = {},
): Promise<GpuTensor> {
  const tokens = dy.size / w.rows;
  if (!Number.isInteger(tokens) || tokens === 0) {
    throw new RangeError(
      `frozenMatmulBackward: dy of ${dy.size} elements is not [tokens, ${w.rows}]`,
    );
  }
  const beta = options.beta ?? 0;
  if (beta !== 0 && !options.out) {
    throw new Error("frozenMatmulBackward: beta ≠ 0 needs options.out");
  }
  const dx = options.out ?? rt.empty([tokens, w.cols]);
  if (w.blocks.length === 1) {
    const b = w.blocks[0].weight;
    if (w.format === "f32") {
      await matmul(rt, dy, b.packed, { m: tokens, n: w.cols, k: w.rows, beta }, { out: dx, batch });
    } else await quantMatmulBackward(rt, dy, b, { out: dx, beta, batch });
    return dx;
  }
  for (const [i, { rowStart, weight }] of w.blocks.entries()) {
    await quantMatmulBackward(rt, dy, weight, {
      out: dx,
      beta: i === 0 ? beta : 1,
      batch,
      outStride: w.rows,
      outOffset: rowStart,
    });
  }
  return dx;
}

/** out [tokens, block rows] = x·W_bᵀ for block `b` alone (e.g. a vocabulary chunk of logits). */
export async function frozenBlockMatmul(
  rt: GpuRuntime,
  batch: Batch,
  x: GpuTensor,
  w: FrozenMatrix,
  b: number,
  out: GpuTensor,
): Promise<void> {
  const weight = w.blocks[b].weight;
  const tokens = x.size / w.cols;
  if (w.format === "f32" && denseF32(rt, w, tokens)) {
    await matmul(rt, x, weight.packed, { m: tokens, n: weight.rows, k: w.cols, transB: true }, {
      out,
      batch,
    });
  } else await quantMatmul(rt, x, weight, { out, batch });
}

/** dx (+)= dy [tokens, block rows]·W_b: the backward of {@link frozenBlockMatmul}. */
export async function frozenBlockBackward(
  rt: GpuRuntime,
  batch: Batch,
  dy: GpuTensor,
  w: FrozenMatrix,
  b: number,
  dx: GpuTensor,
  beta: number,
): Promise<void> {
  const weight = w.blocks[b].weight;
  const tokens = dy.size / weight.rows;
  if (w.format === "f32") {
    await matmul(rt, dy, weight.packed, { m: tokens, n: w.cols, k: weight.rows, beta }, {
      out: dx,
      batch,
    });
  } else await quantMatmulBackward(rt, dy, weight, { out: dx, beta, batch });
}

const MAIN = `@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  _ = &scales;
  _ = &aux;
  _ = &ids;
  let i = flat(gid, nwg);`;

// One invocation per (token, column); tokens whose id lies in another block are left alone.
const GATHER = (format: StorageFormat) =>
  `${weightAtWgsl(format)}
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.M * p.K) { return; }
  let t = i / p.K;
  let c = i - t * p.K;
  let id = ids[t];
  if (id >= p.oOff && id < p.oOff + p.N) { out[i] = weightAt(id - p.oOff, c); }
}`;

// One invocation per element of the block: out = the dequantized rows at their place in W.
const DEQUANTIZE = (format: StorageFormat) =>
  `${weightAtWgsl(format)}
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.N * p.K) { return; }
  let r = i / p.K;
  out[p.oOff * p.K + i] = weightAt(r, i - r * p.K);
}`;

// One invocation per row of the block: ‖W_r‖ or ‖W_r‖² (f32 sum of squares).
const ROW_NORMS = (squared: boolean) => (format: StorageFormat) =>
  `${weightAtWgsl(format)}
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.N) { return; }
  var ss = 0.0;
  for (var c = 0u; c < p.K; c++) { let v = weightAt(i, c); ss = fma(v, v, ss); }
  out[p.oOff + i] = ${squared ? "ss" : "sqrt(ss)"};
}`;

async function perBlock(
  rt: GpuRuntime,
  batch: Batch,
  w: FrozenMatrix,
  kernel: (format: StorageFormat) => string,
  name: string,
  ids: GpuTensor | null,
  out: GpuTensor,
  tokens: number,
  invocations: (blockRows: number) => number,
): Promise<void> {
  const code = kernel(w.format);
  const pipeline = await rt.pipelines.get(code, `frozen/${name}/${w.format}`);
  const dummy = ids ?? w.blocks[0].weight.aux; // the layout binds ids even where unused
  for (const { rowStart, weight } of w.blocks) {
    const n = invocations(weight.rows);
    if (n === 0) continue;
    batch.dispatch(pipeline, [
      batch.uniform(quantParams(weight, tokens, 1, 0, weight.rows, rowStart)), // oOff: first row
      weight.packed.binding,
      weight.scales.binding,
      weight.aux.binding,
      dummy.binding,
      out.binding,
    ], grid1d(rt, n));
  }
}

/** out [tokens, cols] = rows `ids` (u32 [tokens]) of W: the embedding lookup. */
export async function frozenGather(
  rt: GpuRuntime,
  batch: Batch,
  ids: GpuTensor,
  w: FrozenMatrix,
  out: GpuTensor,
): Promise<void> {
  if (ids.dtype !== "u32" || out.size !== ids.size * w.cols) {
    throw new RangeError(`frozenGather: ${ids.size} ids into ${out.size} outputs of ${w.cols}`);
  }
  await perBlock(rt, batch, w, GATHER, "gather", ids, out, ids.size, () => ids.size * w.cols);
}

/** W dequantized into one f32 tensor [rows, cols] (a new tensor; it must fit one buffer). */
export async function frozenDequantize(
  rt: GpuRuntime,
  batch: Batch,
  w: FrozenMatrix,
): Promise<GpuTensor> {
  const out = rt.empty([w.rows, w.cols]);
  await perBlock(rt, batch, w, DEQUANTIZE, "dequantize", null, out, 0, (n) => n * w.cols);
  return out;
}

/** out [rows] = ‖W_r‖₂ of every row, or its square with `squared` (float32 sums). */
export async function frozenRowNorms(
  rt: GpuRuntime,
  batch: Batch,
  w: FrozenMatrix,
  out: GpuTensor,
  squared = false,
): Promise<void> {
  if (out.size !== w.rows) {
    throw new RangeError(`frozenRowNorms: ${out.size} outputs, ${w.rows} rows`);
  }
  const name = squared ? "row-norms-squared" : "row-norms";
  await perBlock(rt, batch, w, ROW_NORMS(squared), name, null, out, 0, (n) => n);
}
