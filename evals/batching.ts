/**
 * Batch sizes of the evaluations, chosen from the device: questions decoded together in
 * commonsense generation ({@link questionsPerBatch}) and prompts scored per forward in MMLU
 * ({@link promptsPerForward}). On CPU adapters (`rt.variants.target === "cpu-adapter"`) the size
 * stays {@link CPU_ADAPTER_BATCH}, as it always was, so llvmpipe runs and their timings do not
 * change. On GPUs a batch takes as many items as fit a memory budget — a fraction of a
 * device-memory figure (by default the device's `maxBufferSize`) — up to a cap (64 questions, 32
 * prompts), and never fewer than {@link CPU_ADAPTER_BATCH}. Everywhere every tensor of the batch
 * (a layer's KV cache, the widest activation, the logits) stays within
 * `maxStorageBufferBindingSize`, which may make a batch smaller. Results do not depend on the
 * batch size: padded rows and extra slots change no prompt's logits.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import {
  estimateGenerationMemory,
  estimateScoringMemory,
  type InferenceBatchMemory,
} from "../models/llama/memory.ts";

/** The batch size on CPU adapters, and the least a GPU gets where the binding limits allow. */
export const CPU_ADAPTER_BATCH = 8;
/** The most questions decoded together on a GPU (by default). */
export const GPU_QUESTIONS_CAP = 64;
/** The most prompts scored per forward on a GPU (by default). */
export const GPU_PROMPTS_CAP = 32;
/** The share of the device-memory figure one batch may use (by default). */
export const BATCH_MEMORY_FRACTION = 0.5;

/** How to size batches on a GPU. */
export interface BatchSizing {
  /** Device memory in bytes (default: the device's `maxBufferSize`). */
  deviceBytes?: number;
  /** The share of it one batch may take (default {@link BATCH_MEMORY_FRACTION}). */
  fraction?: number;
  /** Most items per batch (default 64 questions / 32 prompts). */
  cap?: number;
  /**
   * A fixed most-items-per-batch instead of the choice (the evaluations' `questionsPerBatch` /
   * `batch` options): still cut where a tensor would pass the binding limit.
   */
  fixed?: number;
}

/** The bytes one batch may take under `sizing`. */
export function batchBudgetBytes(rt: GpuRuntime, sizing: BatchSizing = {}): number {
  const device = sizing.deviceBytes ?? rt.device.limits.maxBufferSize;
  const fraction = sizing.fraction ?? BATCH_MEMORY_FRACTION;
  if (!(device > 0) || !(fraction > 0 && fraction <= 1)) {
    throw new RangeError(`batch sizing: deviceBytes=${device}, fraction=${fraction}`);
  }
  return device * fraction;
}

/**
 * How many of the leading items (token lengths `lengths`, in order) form the next batch, with
 * `estimate(n, longest)` the memory of n items padded to the longest: at least 1.
 */
function leadingBatch(
  rt: GpuRuntime,
  lengths: readonly number[],
  estimate: (n: number, longest: number) => InferenceBatchMemory,
  gpuCap: number,
  sizing: BatchSizing,
): number {
  if (lengths.length === 0) return 0;
  const fixed = sizing.fixed;
  if (fixed !== undefined && !(Number.isInteger(fixed) && fixed >= 1)) {
    throw new RangeError(`batch sizing: fixed=${fixed}`);
  }
  const bind = rt.device.limits.maxStorageBufferBindingSize;
  const gpu = fixed === undefined && rt.variants.target !== "cpu-adapter";
  const most = Math.min(lengths.length, fixed ?? (gpu ? sizing.cap ?? gpuCap : CPU_ADAPTER_BATCH));
  const budget = gpu ? batchBudgetBytes(rt, sizing) : Infinity;
  let n = 1;
  let longest = lengths[0];
  while (n < most) {
    const l = Math.max(longest, lengths[n]);
    const m = estimate(n + 1, l);
    if (m.largestBinding > bind) break;
    // Past the least batch, only within the memory budget.
    if (n + 1 > CPU_ADAPTER_BATCH && m.total > budget) break;
    longest = l;
    n++;
  }
  return n;
}

/**
 * Questions of the next commonsense generation batch: of the prompts still to decode (token
 * lengths in order), how many {@link searchManyOnGpu} takes at once with `beams` beams each and
 * up to `maxNew` new tokens (see the module's rules).
 */
export function questionsPerBatch(
  rt: GpuRuntime,
  config: LlamaConfig,
  lengths: readonly number[],
  generation: { beams: number; maxNew: number },
  sizing: BatchSizing = {},
): number {
  return leadingBatch(
    rt,
    lengths,
    (prompts, longest) => estimateGenerationMemory(config, { prompts, longest, ...generation }),
    GPU_QUESTIONS_CAP,
    sizing,
  );
}

/**
 * Prompts of the next MMLU scoring forward: of the prompts still to score (token lengths in
 * order), how many one `logitsAt` forward takes (the classifier on `logitRowsPerPrompt` rows of
 * each; see the module's rules).
 */
export function promptsPerForward(
  rt: GpuRuntime,
  config: LlamaConfig,
  lengths: readonly number[],
  sizing: BatchSizing = {},
  logitRowsPerPrompt = 1,
): number {
  return leadingBatch(
    rt,
    lengths,
    (prompts, longest) =>
      estimateScoringMemory(config, { prompts, longest, logitRows: prompts * logitRowsPerPrompt }),
    GPU_PROMPTS_CAP,
    sizing,
  );
}
