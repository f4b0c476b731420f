/**
 * GpuRuntime: the one object kernels receive. It bundles the device, the buffer pool and the
 * pipeline cache, and moves tensors between host and GPU.
 */
import { BufferPool } from "./buffer_pool.ts";
import { Batch } from "./batch.ts";
import { acquireGpu, type AcquireGpuOptions, assertAlive, type Gpu } from "./device.ts";
import { BYTES_PER_ELEMENT, type DType, type HostArray, hostArray, numel } from "./dtype.ts";
import { PipelineCache } from "./pipeline_cache.ts";
import { GpuTensor, TENSOR_USAGE } from "./tensor.ts";
import {
  chooseKernelVariants,
  type KernelVariantRequest,
  type KernelVariants,
  variantRequestFromEnv,
} from "./variants.ts";

/** Options of {@link GpuRuntime}: which kernel variants it records. */
export interface GpuRuntimeOptions {
  /**
   * Force kernel variants (tests run the GPU family on a CPU adapter); unset choices follow
   * `MOKA_KERNELS`, then the device.
   */
  kernels?: KernelVariantRequest;
}

/** Device + buffer pool + pipeline cache. Create with {@link GpuRuntime.create}. */
export class GpuRuntime {
  /** Adapter, device and their features. */
  readonly gpu: Gpu;
  /** Reusable buffers. */
  readonly pool: BufferPool;
  /** Compiled pipelines by WGSL source. */
  readonly pipelines: PipelineCache;
  /** The kernel variants every kernel family records on this runtime. */
  readonly variants: KernelVariants;

  /** Wrap an acquired Gpu (several runtimes may share one, each with its own variants). */
  constructor(gpu: Gpu, options: GpuRuntimeOptions = {}) {
    this.gpu = gpu;
    this.pool = new BufferPool(gpu.device);
    this.pipelines = new PipelineCache(gpu.device);
    this.variants = chooseKernelVariants(gpu, { ...variantRequestFromEnv(), ...options.kernels });
  }

  /** Acquire an adapter/device and wrap it. */
  static async create(options?: AcquireGpuOptions & GpuRuntimeOptions): Promise<GpuRuntime> {
    return new GpuRuntime(await acquireGpu(options), options);
  }

  /** The device. */
  get device(): GPUDevice {
    return this.gpu.device;
  }

  /** A new tensor with undefined contents (pooled buffer). */
  empty(shape: readonly number[], dtype: DType = "f32"): GpuTensor {
    assertAlive(this.gpu);
    if (dtype === "f16" && !this.gpu.hasF16) {
      throw new TypeError(
        `f16 tensors need the shader-f16 feature; ${this.gpu.description} lacks it`,
      );
    }
    const bytes = Math.max(4, Math.ceil((numel(shape) * BYTES_PER_ELEMENT[dtype]) / 4) * 4);
    const maxBytes = this.device.limits.maxStorageBufferBindingSize;
    if (bytes > maxBytes) {
      throw new RangeError(
        `${dtype}[${shape.join(", ")}] needs ${bytes} bytes, over this device's ` +
          `maxStorageBufferBindingSize ${maxBytes}`,
      );
    }
    return new GpuTensor(shape, dtype, this.pool.acquire(bytes, TENSOR_USAGE, "tensor"), this.pool);
  }

  /** Upload host data as a tensor of `shape` (its length must equal the element count). */
  upload<D extends DType>(data: HostArray<D>, shape: readonly number[], dtype?: D): GpuTensor {
    const dt: DType = dtype ?? dtypeOf(data);
    if (data.length !== numel(shape)) {
      throw new RangeError(
        `upload: ${data.length} values do not fill shape [${shape.join(", ")}] (${numel(shape)})`,
      );
    }
    const t = this.empty(shape, dt);
    this.write(t, data);
    return t;
  }

  /** Overwrite a tensor's contents from host data of the same length and dtype. */
  write<D extends DType>(t: GpuTensor, data: HostArray<D>): void {
    if (data.length !== t.size) {
      throw new RangeError(`write: ${data.length} values for a tensor of ${t.size}`);
    }
    if (dtypeOf(data) !== t.dtype) {
      throw new TypeError(`write: ${dtypeOf(data)} data into a ${t.dtype} tensor`);
    }
    if (data.byteLength === 0) return; // Deno's writeBuffer panics on empty data
    // writeBuffer needs a multiple of 4 bytes; odd-length f16 data is padded with one element.
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0) {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(t.buffer, t.byteOffset, bytes as Uint8Array<ArrayBuffer>);
  }

  /** Fill every element of an f32 tensor with `value` (NaN to poison outputs in tests). */
  fill(t: GpuTensor, value: number): void {
    t.check("fill", "f32");
    this.write(t, new Float32Array(t.size).fill(value));
  }

  /** Copy a tensor back to the host. Waits for all queued GPU work that writes it. */
  async read<D extends DType>(t: GpuTensor & { dtype: D }): Promise<HostArray<D>>;
  /** Copy a tensor of any dtype back to the host. */
  async read(t: GpuTensor): Promise<HostArray<DType>>;
  async read(t: GpuTensor): Promise<HostArray<DType>> {
    t.check("read");
    assertAlive(this.gpu);
    const bytes = t.byteLength;
    const staging = this.pool.acquire(
      bytes,
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      "readback",
    );
    try {
      const encoder = this.device.createCommandEncoder();
      encoder.copyBufferToBuffer(t.buffer, t.byteOffset, staging, 0, bytes);
      this.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
      assertAlive(this.gpu);
      const copy = staging.getMappedRange(0, bytes).slice(0);
      staging.unmap();
      const out = hostArray(t.dtype, t.size);
      new Uint8Array(out.buffer).set(new Uint8Array(copy, 0, out.byteLength));
      return out;
    } finally {
      this.pool.release(staging);
    }
  }

  /** Start recording a batch of dispatches (one command buffer). */
  batch(options: { profile?: boolean } = {}): Batch {
    return new Batch(this.gpu, this.pool, options.profile ?? false);
  }

  /** Wait until every submitted command has finished. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    assertAlive(this.gpu);
  }
}

/** The dtype that a host typed array carries. */
export function dtypeOf(data: ArrayBufferView): DType {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Float16Array) return "f16";
  if (data instanceof Uint32Array) return "u32";
  throw new TypeError(`unsupported host array ${data.constructor.name}`);
}
