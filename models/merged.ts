/**
 * Merge adapters into a base model and write the result as a Hugging Face checkpoint (sharded
 * safetensors, `config.json`, the base's tokenizer files), so any tool that runs HF LLaMA
 * checkpoints runs the fine-tuned model — the way out for MoKA, KronA and MoKA_s, which have no
 * PEFT type.
 *
 * Streams tensor by tensor: an unadapted tensor is copied as stored (bit for bit when the output
 * dtype is the stored one), an adapted one is read whole, merged in float64 by the adapter's
 * reference (`W' = W + ΔW`, DoRA's rescaling included) and rounded once to the output dtype. Peak
 * memory is a few copies of the largest adapted matrix, not the model.
 *
 * The merge is onto the checkpoint's stored weights. An adapter trained over a 4-bit base learned
 * its ΔW against the quantized weights; merged into the full-precision ones it gives a slightly
 * different model (the quantization error), as PEFT's merge does.
 * q and k rows of a llama2.c (interleaved RoPE) source are written in Hugging Face's order.
 */
import type { AdapterSet } from "./adapters/io.ts";
import { hfConfigJson, hfTensorName, hfTensorShapes, permuteRope } from "./hf.ts";
import { headSize } from "./llama/config.ts";
import {
  type LlamaSource,
  type LlamaTensorName,
  tensorNames,
  tensorShape,
} from "./llama/source.ts";
import { checkAdaptersFit } from "./peft.ts";
import {
  decodeToF32,
  encodeElements,
  plannedBytes,
  type SafetensorsDType,
  type TensorPlan,
  writeShardedSafetensors,
} from "./safetensors.ts";

/** Options of {@link writeMergedHf}. */
export interface MergeOptions {
  /** Output element type (default: each tensor's stored type). */
  dtype?: SafetensorsDType;
  /** Largest shard in bytes (default 5 GiB, as `save_pretrained`). */
  shardBytes?: number;
  /**
   * A Hugging Face folder whose config.json and tokenizer files to carry over (the base's own
   * folder); without it a config.json is written from the model's config.
   */
  baseDir?: string;
  /** Called as bytes are written. */
  progress?: (done: number, total: number) => void;
}

const COPY_CHUNK_BYTES = 64 * 2 ** 20;
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "generation_config.json",
];
const TORCH_DTYPE: Record<SafetensorsDType, string> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

/**
 * Write `source` with `adapters` (keys `<layer>.<module>`) merged into `dir` as a Hugging Face
 * checkpoint. Returns the bytes of weights written.
 */
export async function writeMergedHf(
  source: LlamaSource,
  adapters: AdapterSet,
  dir: string,
  options: MergeOptions = {},
): Promise<number> {
  const c = source.config;
  checkAdaptersFit(adapters, c);
  const hfShapes = hfTensorShapes(c);
  const names = tensorNames(c);
  const byHf = new Map<string, LlamaTensorName>();
  const plan: TensorPlan[] = names.map((name) => {
    const hf = hfTensorName(name, c);
    byHf.set(hf, name);
    return { name: hf, shape: hfShapes.get(hf)!, dtype: options.dtype ?? source.dtype(name) };
  });
  const total = await writeShardedSafetensors(
    dir,
    plan,
    options.shardBytes ?? 5 * 2 ** 30,
    (t) => mergedTensor(source, byHf.get(t.name)!, adapters, t.dtype),
    options.progress,
  );
  const dtype = options.dtype ?? source.dtype("embed");
  let config: Record<string, unknown> = hfConfigJson(c, "llama2", dtype);
  if (options.baseDir) {
    const path = `${options.baseDir}/config.json`;
    try {
      config = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`);
    }
    config.torch_dtype = TORCH_DTYPE[dtype];
    for (const f of TOKENIZER_FILES) {
      try {
        await Deno.copyFile(`${options.baseDir}/${f}`, `${dir}/${f}`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
  }
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
  return total;
}

/** The bytes of one output tensor, in pieces. */
async function* mergedTensor(
  source: LlamaSource,
  name: LlamaTensorName,
  adapters: AdapterSet,
  dtype: SafetensorsDType,
): AsyncGenerator<Uint8Array> {
  const c = source.config;
  const [rows, cols] = tensorShape(c, name);
  const adapter = adapters[name];
  const module = name.split(".")[1];
  const permute = (c.ropeLayout ?? "interleaved") !== "half" && (module === "q" || module === "k");
  if (!adapter && !permute) {
    // Copy in row blocks; re-encode only when the dtype changes.
    const rowBytes = plannedBytes({ name, dtype: source.dtype(name), shape: [cols] });
    const step = Math.max(1, Math.floor(COPY_CHUNK_BYTES / rowBytes));
    for (let r = 0; r < rows; r += step) {
      const raw = await source.readRows(name, r, Math.min(step, rows - r));
      yield raw.dtype === dtype
        ? raw.bytes
        : encodeElements(decodeToF32(raw.bytes, raw.dtype), dtype);
    }
    return;
  }
  const raw = await source.readRows(name, 0, rows);
  let w = decodeToF32(raw.bytes, raw.dtype);
  if (adapter) w = adapter.merge(w);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) {
      throw new Error(`${source.origin(name)}: merged value [${i}] is ${w[i]}`);
    }
  }
  if (permute) {
    w = permuteRope(w, module === "q" ? c.heads : c.kvHeads, headSize(c), cols, true);
  }
  yield encodeElements(w, dtype);
}
