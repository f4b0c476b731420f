/**
 * A free-list of GPU buffers keyed by (rounded size, usage).
 *
 * Kernels allocate many short-lived buffers (activations, uniforms, staging); creating and
 * destroying a GPUBuffer each time costs more than the small kernels themselves. Sizes are rounded
 * up so that nearby sizes share a bucket; `stats` reports what the pool holds so that benchmarks can
 * state GPU memory use.
 */

/** Counters describing the pool's memory, in bytes. */
export interface PoolStats {
  /** Bytes of all live GPUBuffers created by the pool (in use + free). */
  allocatedBytes: number;
  /** Bytes currently handed out. */
  inUseBytes: number;
  /** Highest `inUseBytes` seen since creation or the last `resetPeak()`. */
  peakInUseBytes: number;
  /** Buffers created so far (a measure of pool misses). */
  created: number;
}

/** Round a byte size to its bucket: powers of two up to 64 MiB, then whole MiB. */
export function bucketSize(bytes: number): number {
  const min = 256;
  if (bytes <= min) return min;
  const mib = 1 << 20;
  if (bytes > 64 * mib) return Math.ceil(bytes / mib) * mib;
  return 2 ** Math.ceil(Math.log2(bytes));
}

/** Pool of reusable GPU buffers for one device. */
export class BufferPool {
  readonly #device: GPUDevice;
  readonly #free = new Map<string, GPUBuffer[]>();
  readonly #sizeOf = new WeakMap<GPUBuffer, number>();
  #stats: PoolStats = { allocatedBytes: 0, inUseBytes: 0, peakInUseBytes: 0, created: 0 };

  /** A pool that creates its buffers on `device`. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** A buffer of at least `bytes` bytes with exactly `usage`; contents are undefined. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label = "moka"): GPUBuffer {
    if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`bad buffer size ${bytes}`);
    const size = bucketSize(bytes);
    const key = `${size}:${usage}`;
    let buffer = this.#free.get(key)?.pop();
    if (!buffer) {
      buffer = this.#device.createBuffer({ size, usage, label });
      this.#sizeOf.set(buffer, size);
      this.#stats.allocatedBytes += size;
      this.#stats.created++;
    }
    this.#stats.inUseBytes += size;
    this.#stats.peakInUseBytes = Math.max(this.#stats.peakInUseBytes, this.#stats.inUseBytes);
    return buffer;
  }

  /** Return a buffer obtained from `acquire`; it may be handed out again at once. */
  release(buffer: GPUBuffer): void {
    const size = this.#sizeOf.get(buffer);
    if (size === undefined) throw new Error("BufferPool.release: buffer was not made by this pool");
    const key = `${size}:${buffer.usage}`;
    const list = this.#free.get(key) ?? [];
    if (list.includes(buffer)) throw new Error("BufferPool.release: buffer released twice");
    list.push(buffer);
    this.#free.set(key, list);
    this.#stats.inUseBytes -= size;
  }

  /** Destroy every free buffer (in-use ones stay valid). */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.#stats.allocatedBytes -= this.#sizeOf.get(b) ?? 0;
        b.destroy();
      }
    }
    this.#free.clear();
  }

  /** Reset the peak counter to the current use. */
  resetPeak(): void {
    this.#stats.peakInUseBytes = this.#stats.inUseBytes;
  }

  /** A copy of the counters. */
  get stats(): PoolStats {
    return { ...this.#stats };
  }
}
