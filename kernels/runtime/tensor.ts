/**
 * A typed handle to a GPU buffer: shape + dtype + the buffer that holds the elements row-major.
 */
import { BYTES_PER_ELEMENT, type DType, numel } from "./dtype.ts";
import type { BufferPool } from "./buffer_pool.ts";

/** Usage flags every tensor buffer gets: kernels read/write it, uploads and readbacks copy it. */
export const TENSOR_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** A row-major tensor living in a GPU buffer. */
export class GpuTensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** The underlying buffer; it may be larger than `byteLength` (pool buckets). */
  readonly buffer: GPUBuffer;
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
  ) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.buffer = buffer;
    this.#pool = pool;
    this.#borrowed = borrowed;
    if (buffer.size < this.byteLength) {
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
    return new GpuTensor(shape, this.dtype, this.buffer, null, true);
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
