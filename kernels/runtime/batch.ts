/**
 * Record many dispatches into one command buffer and submit them together.
 *
 * One submit per kernel costs a queue round trip each; a training step has hundreds of kernels.
 * A Batch encodes them all, owns the small temporary buffers they need (uniform parameters), and
 * frees those after the GPU is done. With `profile: true` on a device that has `timestamp-query`,
 * each dispatch is timed on the GPU and `durations()` gives nanoseconds per label.
 */
import { bucketSize, type BufferPool } from "./buffer_pool.ts";
import { assertAlive, type Gpu } from "./device.ts";
import { numel } from "./dtype.ts";
import { GpuTensor, TENSOR_USAGE } from "./tensor.ts";

/** A buffer binding: the whole buffer at `binding` index order. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

/** Per-label GPU time gathered by a profiled batch. */
export interface KernelTiming {
  /** The dispatch's label (kernel name). */
  label: string;
  /** GPU nanoseconds between the pass's begin and end timestamps. */
  ns: number;
}

// WebGPU caps a query set at 4096 queries: two timestamps per dispatch.
const MAX_PROFILED_DISPATCHES = 2048;

// getBindGroupLayout makes a new layout object on every call; one per pipeline is enough.
const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
function layoutOf(pipeline: GPUComputePipeline): GPUBindGroupLayout {
  let layout = layouts.get(pipeline);
  if (!layout) {
    layout = pipeline.getBindGroupLayout(0);
    layouts.set(pipeline, layout);
  }
  return layout;
}

/** Uniform blocks kept per device, by contents (a few bytes each; decoding makes one per position). */
export const PERSISTENT_UNIFORMS = 16384;
const persistentUniforms = new WeakMap<GPUDevice, Map<string, GPUBuffer>>();

// Bind groups by pipeline and bound buffers: creating one costs more than recording the dispatch,
// and a repeated step binds the same buffers (kept uniforms, pooled buffers handed out in the same
// order). A hit means every buffer is the very object asked for, so the group is valid as long as
// they are. Bounded per pipeline: past the bound the map starts over.
const BIND_GROUPS_PER_PIPELINE = 512;
const bindGroups = new WeakMap<GPUComputePipeline, Map<string, GPUBindGroup>>();
const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 1;
function bufferId(b: GPUBuffer): number {
  let id = bufferIds.get(b);
  if (id === undefined) {
    id = nextBufferId++;
    bufferIds.set(b, id);
  }
  return id;
}
function bindGroupFor(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  bindings: Binding[],
  entries: GPUBindGroupEntry[],
): GPUBindGroup {
  let key = "";
  for (const b of bindings) {
    key += b instanceof GPUBuffer
      ? `${bufferId(b)};`
      : `${bufferId(b.buffer)}:${b.offset ?? 0}:${b.size ?? -1};`;
  }
  let byKey = bindGroups.get(pipeline);
  if (!byKey) {
    byKey = new Map();
    bindGroups.set(pipeline, byKey);
  }
  let group = byKey.get(key);
  if (!group) {
    if (byKey.size >= BIND_GROUPS_PER_PIPELINE) byKey.clear();
    group = device.createBindGroup({ layout: layoutOf(pipeline), entries });
    byKey.set(key, group);
  }
  return group;
}

/** Encoder for a sequence of compute dispatches and buffer copies. */
export class Batch {
  readonly #gpu: Gpu;
  readonly #pool: BufferPool;
  readonly #encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | null = null;
  readonly #temps: GPUBuffer[] = [];
  readonly #uniforms = new Map<string, GPUBuffer>(); // by contents: equal parameters share one
  readonly #recycled = new Map<number, GPUBuffer[]>(); // by pool bucket: free for later dispatches
  readonly #scratch = new WeakSet<GpuTensor>();
  readonly #releaseAfter: { release(): void }[] = [];
  readonly #labels: string[] = [];
  readonly #onDone: { resolve(): void; reject(e: unknown): void }[] = [];
  readonly #snapshots: { staging: GPUBuffer; bytes: number; data: ArrayBuffer | null }[] = [];
  readonly #querySet: GPUQuerySet | null;
  #submitted = false;
  #timings: KernelTiming[] = [];

  /** Prefer {@link GpuRuntime.batch}; `profile` asks for GPU timestamps per dispatch. */
  constructor(gpu: Gpu, pool: BufferPool, profile = false) {
    assertAlive(gpu);
    this.#gpu = gpu;
    this.#pool = pool;
    this.#encoder = gpu.device.createCommandEncoder();
    this.#querySet = profile && gpu.hasTimestamps
      ? gpu.device.createQuerySet({ type: "timestamp", count: 2 * MAX_PROFILED_DISPATCHES })
      : null;
  }

  /** Number of dispatches recorded. */
  get dispatchCount(): number {
    return this.#labels.length;
  }

  /**
   * A uniform buffer holding `data`. Contents never change once written, so equal parameters
   * share one buffer: within a batch (a layer that walks token chunks records the same sizes for
   * every chunk) and, up to {@link PERSISTENT_UNIFORMS} of them per device, across batches, which
   * keeps the buffers of a repeated step the same objects and lets their bind groups be reused.
   */
  uniform(data: ArrayBuffer | ArrayBufferView): GPUBuffer {
    const view = data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const key = String.fromCharCode(...view);
    const shared = this.#uniforms.get(key);
    if (shared) return shared;
    const device = this.#gpu.device;
    let persistent = persistentUniforms.get(device);
    if (!persistent) {
      persistent = new Map();
      persistentUniforms.set(device, persistent);
    }
    const kept = persistent.get(key);
    if (kept) return kept;
    if (persistent.size < PERSISTENT_UNIFORMS) {
      const buffer = device.createBuffer({
        size: Math.max(16, Math.ceil(view.byteLength / 16) * 16),
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: "uniform (kept)",
      });
      device.queue.writeBuffer(buffer, 0, view as BufferSource);
      persistent.set(key, buffer);
      return buffer;
    }
    const buffer = this.#pool.acquire(
      Math.max(16, Math.ceil(view.byteLength / 16) * 16),
      GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      "uniform",
    );
    this.#gpu.device.queue.writeBuffer(buffer, 0, view as BufferSource);
    this.#temps.push(buffer);
    this.#uniforms.set(key, buffer);
    return buffer;
  }

  /** Record one dispatch of `pipeline` with `bindings` in group 0 at indices 0, 1, 2, ... */
  dispatch(
    pipeline: GPUComputePipeline,
    bindings: Binding[],
    workgroups: readonly [number, number?, number?],
    label = pipeline.label,
  ): void {
    if (this.#submitted) throw new Error("Batch.dispatch after submit");
    const limit = this.#gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    for (const n of [x, y, z]) {
      if (!Number.isInteger(n) || n < 0 || n > limit) {
        throw new RangeError(`${label}: workgroup count ${n} outside [0, ${limit}]`);
      }
    }
    if (x * y * z === 0) return; // empty problem: nothing to run
    const entries = bindings.map((b, binding) => ({
      binding,
      resource: b instanceof GPUBuffer ? { buffer: b } : b,
    }));
    const bindGroup = bindGroupFor(this.#gpu.device, pipeline, bindings, entries);
    const index = this.#labels.length;
    const profiled = this.#querySet !== null && index < MAX_PROFILED_DISPATCHES;
    if (profiled) {
      // Timestamps are per pass: a profiled dispatch gets a pass of its own.
      this.#endPass();
      const pass = this.#encoder.beginComputePass({
        timestampWrites: {
          querySet: this.#querySet!,
          beginningOfPassWriteIndex: 2 * index,
          endOfPassWriteIndex: 2 * index + 1,
        },
      });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    } else {
      // Consecutive dispatches share one compute pass (each dispatch is still its own usage
      // scope, so later ones see earlier writes); a pass per dispatch costs encoding and a
      // pass boundary each, which dominates small kernels.
      this.#pass ??= this.#encoder.beginComputePass();
      this.#pass.setPipeline(pipeline);
      this.#pass.setBindGroup(0, bindGroup);
      this.#pass.dispatchWorkgroups(x, y, z);
    }
    this.#labels.push(label);
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /**
   * Release `tensor` once the GPU has run this batch. Releasing a scratch tensor at once would let
   * a `queue.writeBuffer` (an upload) reuse its buffer before this batch even runs.
   */
  releaseAfter(tensor: { release(): void }): void {
    this.#releaseAfter.push(tensor);
  }

  /**
   * An f32 scratch tensor for work recorded in this batch, back in the pool once the batch is
   * done. Its buffer is one that an earlier part of this batch {@link Batch.recycle}d when one of
   * the same bucket is free: a batch's dispatches run in order, so a later dispatch may reuse what
   * an earlier one has finished with. Layers that chain in one batch thus share their scratch.
   */
  scratch(shape: readonly number[]): GpuTensor {
    if (this.#submitted) throw new Error("Batch.scratch after submit");
    const bytes = Math.max(4, 4 * numel(shape));
    const size = bucketSize(bytes);
    let buffer = this.#recycled.get(size)?.pop();
    if (!buffer) {
      buffer = this.#pool.acquire(bytes, TENSOR_USAGE, "scratch");
      this.#temps.push(buffer);
    }
    const t = new GpuTensor(shape, "f32", buffer, null, true);
    this.#scratch.add(t);
    return t;
  }

  /** Hand a {@link Batch.scratch} tensor to later dispatches of this batch (no longer used here). */
  recycle(t: GpuTensor): void {
    if (!this.#scratch.has(t)) throw new Error("Batch.recycle: not a scratch tensor of this batch");
    this.#scratch.delete(t);
    const size = bucketSize(t.buffer.size);
    const list = this.#recycled.get(size) ?? [];
    list.push(t.buffer);
    this.#recycled.set(size, list);
  }

  /** Record a buffer-to-buffer copy. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#endPass();
    this.#encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Record a fill of `bytes` bytes with 0 (WebGPU's clearBuffer). */
  clear(buffer: GPUBuffer, offset = 0, bytes?: number): void {
    this.#endPass();
    this.#encoder.clearBuffer(buffer, offset, bytes);
  }

  /**
   * A copy of `t` as it stands at this point of the batch, readable once the batch has run, e.g.
   * a status flag checked while the next batch already runs (the read waits for this batch only).
   * The copy is mapped together with the batch's completion: reading it costs no wait of its own.
   */
  snapshot(t: GpuTensor): { read(): Promise<ArrayBuffer> } {
    const bytes = t.byteLength;
    const staging = this.#pool.acquire(
      bytes,
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      "snapshot",
    );
    this.copy(t.buffer, t.byteOffset, staging, 0, bytes);
    const entry = { staging, bytes, data: null as ArrayBuffer | null };
    this.#snapshots.push(entry);
    const done = new Promise<void>((resolve, reject) => this.#onDone.push({ resolve, reject }));
    done.catch(() => {}); // submit() reports the failure; a snapshot never read must not crash
    return {
      async read() {
        await done;
        return entry.data!;
      },
    };
  }

  /** Submit the recorded work; resolves when the GPU has finished it. */
  async submit(): Promise<void> {
    if (this.#submitted) throw new Error("Batch submitted twice");
    this.#submitted = true;
    this.#endPass();
    assertAlive(this.#gpu);
    const device = this.#gpu.device;
    let resolve: GPUBuffer | null = null;
    let staging: GPUBuffer | null = null;
    const profiled = Math.min(this.#labels.length, MAX_PROFILED_DISPATCHES);
    if (this.#querySet && profiled > 0) {
      const bytes = 16 * profiled;
      resolve = this.#pool.acquire(
        bytes,
        GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        "timestamps",
      );
      staging = this.#pool.acquire(
        bytes,
        GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        "timestamps",
      );
      this.#encoder.resolveQuerySet(this.#querySet, 0, 2 * profiled, resolve, 0);
      this.#encoder.copyBufferToBuffer(resolve, 0, staging, 0, bytes);
    }
    // A validation error would otherwise invalidate the whole command buffer silently.
    device.pushErrorScope("validation");
    device.queue.submit([this.#encoder.finish()]);
    const error = await device.popErrorScope();
    try {
      if (error) {
        throw new Error(
          `GPU validation error in batch [${this.#labels.join(", ")}]: ${error.message}`,
        );
      }
      // Every wait in one: the runtime resolves GPU promises on a polling interval, so each
      // await in sequence would cost a whole interval even when the work is long done.
      await Promise.all([
        device.queue.onSubmittedWorkDone(),
        staging?.mapAsync(GPUMapMode.READ, 0, 16 * profiled),
        ...this.#snapshots.map((m) => m.staging.mapAsync(GPUMapMode.READ, 0, m.bytes)),
      ]);
      assertAlive(this.#gpu);
      for (const m of this.#snapshots) {
        m.data = m.staging.getMappedRange(0, m.bytes).slice(0);
        m.staging.unmap();
      }
      if (staging) {
        const ticks = new BigUint64Array(staging.getMappedRange(0, 16 * profiled).slice(0));
        staging.unmap();
        this.#timings = this.#labels.slice(0, profiled).map((label, i) => ({
          label,
          ns: Number(ticks[2 * i + 1] - ticks[2 * i]),
        }));
      }
      for (const d of this.#onDone) d.resolve();
    } catch (e) {
      for (const d of this.#onDone) d.reject(e);
      throw e;
    } finally {
      for (const m of this.#snapshots) {
        if (m.staging.mapState === "mapped") m.staging.unmap(); // a failed wait left it mapped
        this.#pool.release(m.staging);
      }
      for (const t of this.#temps) this.#pool.release(t);
      for (const t of this.#releaseAfter) t.release();
      if (resolve) this.#pool.release(resolve);
      if (staging) this.#pool.release(staging);
      this.#querySet?.destroy();
    }
  }

  /** GPU time per dispatch, after `submit()` resolved; empty when not profiled. */
  durations(): KernelTiming[] {
    return [...this.#timings];
  }
}
