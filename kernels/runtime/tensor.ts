/**
 * A typed handle to a GPU buffer: shape + dtype + the buffer that holds the elements row-major.
 */
import { BYTES_PER_ELEMENT, type DType, numel } from "./dtype.ts";
import type { BufferPool } from "./buffer_pool.ts";

/** Usage flags every tensor buffer gets: kernels read/write it, uploads and readbacks copy it. */
export const TENSOR_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** WebGPU's default (and most common) minStorageBufferOffsetAlignment, in bytes. */
export const STORAGE_OFFSET_ALIGNMENT = 256;

/**
 * Smallest row count that keeps windows of every listed row size at bindable offsets: a multiple
 * of {@link STORAGE_OFFSET_ALIGNMENT} bytes for each (e.g. the rows of a layer's input and output).
 */
export function rowAlignment(...rowBytes: number[]): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  return rowBytes.reduce((rows, bytes) => {
    const need = STORAGE_OFFSET_ALIGNMENT / gcd(STORAGE_OFFSET_ALIGNMENT, bytes);
    return (rows / gcd(rows, need)) * need;
  }, 1);
}

/** A row-major tensor living in a GPU buffer. */
export class GpuTensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** The underlying buffer; it may be larger than `byteLength` (pool buckets). */
  readonly buffer: GPUBuffer;
  /** Where the elements start in `buffer` (non-zero only for {@link GpuTensor.rows} views). */
  readonly byteOffset: number;
  readonly #pool: BufferPool | null;
  readonly #borrowed: boolean;
  #released = false;

  /**
   * Wrap `buffer` (returned to `pool` on release, or destroyed when `pool` is null; left alone
   * when `borrowed`, as for views).
   */
  constructor(
    shape: readonly number[],
    dtype: DType,
    buffer: GPUBuffer,
    pool: BufferPool | null,
    borrowed = false,
    byteOffset = 0,
  ) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.buffer = buffer;
    this.byteOffset = byteOffset;
    this.#pool = pool;
    this.#borrowed = borrowed;
    if (buffer.size < byteOffset + this.byteLength) {
      throw new RangeError(
        `buffer of ${buffer.size} bytes is too small for ${dtype}[${shape.join(", ")}]`,
      );
    }
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Bytes the elements occupy (f16 tensors are padded to whole 32-bit words). */
  get byteLength(): number {
    return Math.ceil((this.size * BYTES_PER_ELEMENT[this.dtype]) / 4) * 4;
  }

  /** True once `release()` was called. */
  get released(): boolean {
    return this.#released;
  }

  /** Give the buffer back to its pool (or destroy it). Using the tensor afterwards is a bug. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#borrowed) return;
    if (this.#pool) this.#pool.release(this.buffer);
    else this.buffer.destroy();
  }

  /**
   * The first elements of this tensor's buffer seen with another shape (scratch reuse: one buffer
   * serves differently shaped temporaries in turn). The view never frees the buffer.
   */
  view(shape: readonly number[]): GpuTensor {
    this.check("view");
    return new GpuTensor(shape, this.dtype, this.buffer, null, true, this.byteOffset);
  }

  /**
   * Rows [start, start + count) of the outermost dimension, without a copy (token chunks). The
   * byte offset must be a multiple of {@link STORAGE_OFFSET_ALIGNMENT}, as WebGPU binds storage
   * buffers only at such offsets; {@link rowAlignment} gives the row multiple that guarantees it.
   */
  rows(start: number, count: number): GpuTensor {
    this.check("rows");
    const outer = this.shape[0] ?? 1;
    if (
      !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 1 ||
      start + count > outer
    ) {
      throw new RangeError(`rows(${start}, ${count}) of a tensor with ${outer} rows`);
    }
    const rowBytes = (this.size / outer) * BYTES_PER_ELEMENT[this.dtype];
    const offset = this.byteOffset + start * rowBytes;
    if (offset % STORAGE_OFFSET_ALIGNMENT !== 0) {
      throw new RangeError(
        `rows(${start}, ${count}): byte offset ${offset} is not a multiple of ` +
          `${STORAGE_OFFSET_ALIGNMENT} (rows of ${rowBytes} bytes)`,
      );
    }
    const shape = [count, ...this.shape.slice(1)];
    return new GpuTensor(shape, this.dtype, this.buffer, null, true, offset);
  }

  /** How the tensor is bound to a kernel: the whole buffer, or the window of a rows() view. */
  get binding(): GPUBuffer | { buffer: GPUBuffer; offset: number; size: number } {
    if (this.byteOffset === 0) return this.buffer;
    // Round the window up to whole vec4s (kernels may read them) without leaving the buffer.
    const size = Math.min(this.buffer.size - this.byteOffset, Math.ceil(this.byteLength / 16) * 16);
    return { buffer: this.buffer, offset: this.byteOffset, size };
  }

  /** Throw unless the tensor is live and has the expected dtype / rank. */
  check(name: string, dtype?: DType, rank?: number): void {
    if (this.#released) throw new Error(`${name}: tensor was released`);
    if (dtype && this.dtype !== dtype) {
      throw new TypeError(`${name}: expected dtype ${dtype}, got ${this.dtype}`);
    }
    if (rank !== undefined && this.shape.length !== rank) {
      throw new RangeError(
        `${name}: expected rank ${rank}, got shape [${this.shape.join(", ")}]`,
      );
    }
  }
}
