/**
 * Streaming upload of a model's frozen weights: for each tensor, blocks of rows are read as stored,
 * uploaded raw and converted on the GPU into the storage format (`quantizeRows`); the conversions
 * of about `chunkBytes` of checkpoint run as one batch while the next are read from disk. The
 * host holds two such batches of raw bytes at most and never a widened copy, so an 8B checkpoint
 * loads in a few hundred MB of host memory beside what the GPU holds (`tools/memory_test.ts` holds
 * a load and a forward to the pool's buffers + 576 MiB). Nothing made per conversion outlives its
 * batch: the raw rows and the conversion's parameters are pooled buffers released once it has run.
 *
 * Every matrix lives in row blocks within the device's binding limit (`FrozenMatrix`); NaN or ±Inf
 * anywhere in a tensor is flagged on the GPU and refused with the tensor's file and name.
 */
import { FrozenMatrix } from "../../../kernels/quant/frozen.ts";
import type { StorageFormat } from "../../../kernels/quant/qmatmul.ts";
import { quantizeRows } from "../../../kernels/quant/quantize.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import { TARGET_MODULES } from "../../llama_shapes.ts";
import { decodeToF32, type SafetensorsDType } from "../../safetensors.ts";
import { adapterKey } from "../cpu/model.ts";
import { type LlamaSource, type LlamaTensorName, tensorNames, tensorShape } from "../source.ts";

/** How a frozen matrix is stored on the GPU. */
export type WeightFormat = StorageFormat;

/** Options of {@link loadWeights}. */
export interface WeightLoadOptions {
  /** Storage of the blocks' linear weights (default f32). */
  base?: WeightFormat;
  /**
   * Storage of the embedding and the classifier; `auto` (default) keeps the checkpoint's own
   * precision: f32 for F32, bf16 for BF16, f16 for F16 (lossless either way).
   */
  embedding?: WeightFormat | "auto";
  /** NF4 block size (default 64, QLoRA's). */
  nf4Block?: number;
  /** int4 group size (default 32). */
  int4Group?: number;
  /** Largest buffer of a stored matrix (default: the device's maxStorageBufferBindingSize). */
  maxBlockBytes?: number;
  /** Raw bytes read per step (default 64 MiB, or the binding limit when smaller). */
  chunkBytes?: number;
  /** Called after each chunk with the bytes read so far and in all. */
  progress?: (done: number, total: number) => void;
}

/** A model's frozen weights on the GPU. */
export interface LoadedWeights {
  /** Token embedding [vocab, dim]. */
  embed: FrozenMatrix;
  /** Classifier [vocab, dim] (the embedding itself when shared). */
  classifier: FrozenMatrix;
  /** Final RMSNorm weight [dim]. */
  finalNorm: GpuTensor;
  /** Per layer: attention and MLP RMSNorm weights [dim]. */
  norms: { attn: GpuTensor; ffn: GpuTensor }[];
  /** Linear weights by `${layer}.${module}`, [dOut, dIn]. */
  linear: Map<string, FrozenMatrix>;
  /** What the load took. */
  stats: { bytesRead: number; seconds: number };
}

const BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2 };

function autoFormat(dtype: SafetensorsDType): WeightFormat {
  return dtype === "F32" ? "f32" : dtype === "BF16" ? "bf16" : "f16";
}

/** The stored bytes as u32 words (copied once when the length is not a whole number of words). */
function words(bytes: Uint8Array): Uint32Array {
  if (bytes.byteOffset % 4 === 0 && bytes.byteLength % 4 === 0) {
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
  const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  padded.set(bytes);
  return new Uint32Array(padded.buffer);
}

/** Load every frozen weight of `source` onto the GPU (see the module comment). */
export async function loadWeights(
  rt: GpuRuntime,
  source: LlamaSource,
  options: WeightLoadOptions = {},
): Promise<LoadedWeights> {
  const c = source.config;
  const started = performance.now();
  const names = tensorNames(c);
  const limit = rt.device.limits.maxStorageBufferBindingSize;
  const chunkBytes = Math.min(options.chunkBytes ?? 64 * 2 ** 20, limit);
  const total = names.reduce((n, name) => {
    const [rows, cols] = tensorShape(c, name);
    return n + rows * cols * BYTES[source.dtype(name)];
  }, 0);
  const flags = rt.upload(new Uint32Array(names.length), [names.length], "u32");
  const owned: { release(): void }[] = [flags];
  let done = 0;
  // Chunks of several tensors share a batch until it holds `chunkBytes`: one submit costs
  // milliseconds on some adapters, and a layer has many small tensors. One batch runs on the
  // GPU while the next is read and recorded.
  let batch = rt.batch();
  let pending = 0;
  let inFlight: Promise<void> | null = null;
  const flush = async () => {
    if (pending === 0) return;
    const full = batch;
    batch = rt.batch();
    pending = 0;
    if (inFlight) await inFlight;
    inFlight = full.submit();
  };

  const matrix = async (name: LlamaTensorName, format: WeightFormat): Promise<FrozenMatrix> => {
    const [rows, cols] = tensorShape(c, name);
    const dtype = source.dtype(name);
    const blockSize = format === "int4" ? options.int4Group ?? 32 : options.nf4Block ?? 64;
    const w = FrozenMatrix.empty(rt, format, rows, cols, {
      blockSize,
      maxBlockBytes: options.maxBlockBytes,
    });
    owned.push(w);
    const perChunk = Math.max(1, Math.floor(chunkBytes / (cols * BYTES[dtype])));
    for (const block of w.blocks) {
      for (let r = 0; r < block.weight.rows; r += perChunk) {
        const n = Math.min(perChunk, block.weight.rows - r);
        const raw = await source.readRows(name, block.rowStart + r, n); // overlaps the GPU's work
        const gpuRaw = rt.upload(words(raw.bytes), [Math.ceil(raw.bytes.byteLength / 4)], "u32");
        await quantizeRows(
          rt,
          batch,
          { raw: gpuRaw, dtype, rows: n },
          block.weight,
          r,
          flags,
          names.indexOf(name),
        );
        batch.releaseAfter(gpuRaw);
        pending += raw.bytes.byteLength;
        done += raw.bytes.byteLength;
        if (pending >= chunkBytes) await flush();
        options.progress?.(done, total);
      }
    }
    return w;
  };
  const vector = async (name: LlamaTensorName): Promise<GpuTensor> => {
    const raw = await source.readRows(name, 0, 1);
    const v = decodeToF32(raw.bytes, raw.dtype);
    const bad = v.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new Error(`${source.origin(name)}[${bad}] is ${v[bad]} (corrupt weights)`);
    done += raw.bytes.byteLength;
    const t = rt.upload(v, [v.length]);
    owned.push(t);
    return t;
  };

  try {
    const embedFormat = (name: LlamaTensorName) =>
      options.embedding === undefined || options.embedding === "auto"
        ? autoFormat(source.dtype(name))
        : options.embedding;
    const embed = await matrix("embed", embedFormat("embed"));
    const norms: LoadedWeights["norms"] = [];
    const linear = new Map<string, FrozenMatrix>();
    for (let l = 0; l < c.layers; l++) {
      norms.push({ attn: await vector(`${l}.attn_norm`), ffn: await vector(`${l}.ffn_norm`) });
      for (const m of TARGET_MODULES) {
        linear.set(adapterKey(l, m), await matrix(`${l}.${m}`, options.base ?? "f32"));
      }
    }
    const finalNorm = await vector("final_norm");
    const classifier = c.sharedClassifier
      ? embed
      : await matrix("classifier", embedFormat("classifier"));
    await flush();
    await inFlight;
    const bad = await rt.read(flags) as Uint32Array;
    const first = bad.findIndex((f) => f !== 0);
    if (first >= 0) {
      throw new Error(
        `${source.origin(names[first])} has NaN or infinite values (corrupt weights)`,
      );
    }
    flags.release();
    return {
      embed,
      classifier,
      finalNorm,
      norms,
      linear,
      stats: { bytesRead: done, seconds: (performance.now() - started) / 1000 },
    };
  } catch (e) {
    await (inFlight as Promise<void> | null)?.catch(() => {});
    await rt.sync().catch(() => {});
    for (const o of owned) o.release();
    throw e;
  }
}
