/**
 * Open a model the way every tool does: a Hugging Face folder (streamed from its safetensors,
 * `tokenizer.json`) or a llama2.c `.bin` file (read into memory; its `tok<vocab>.bin` or
 * `tokenizer.bin` beside it, or byte-level tokens when neither exists).
 */
import { openHfSource, parseHfConfig } from "../hf.ts";
import { loadLlama2c, parseLlama2cHeader } from "../llama2c.ts";
import { HfTokenizer } from "../tokenizer/hf.ts";
import { loadLlama2cTokenizer } from "../tokenizer/llama2c.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { fromLlama2c, type LlamaConfig } from "./config.ts";
import { hostSource, type LlamaSource } from "./source.ts";

/** A model's weights (to stream to the GPU) and its tokenizer. */
export interface OpenedModel {
  /** The path it was opened from. */
  path: string;
  /** Its weights. */
  source: LlamaSource;
  /** Its tokenizer. */
  tok: TextTokenizer;
}

/** Open `path` (folder: Hugging Face; file: llama2.c); `tokenizer` overrides a .bin's tokenizer. */
export async function openModel(path: string, tokenizer?: string): Promise<OpenedModel> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  if (info.isDirectory) {
    const source = await openHfSource(path);
    try {
      return { path, source, tok: await HfTokenizer.load(path) };
    } catch (e) {
      source.close();
      throw e;
    }
  }
  const ckpt = await loadLlama2c(path);
  const config = fromLlama2c(ckpt.config);
  const dir = path.replace(/[^/]*$/, "") || "./";
  let tokPath = tokenizer;
  if (!tokPath) {
    for (const name of [`tok${config.vocab}.bin`, "tokenizer.bin"]) {
      try {
        await Deno.stat(`${dir}${name}`);
        tokPath = `${dir}${name}`;
        break;
      } catch { /* try the next */ }
    }
  }
  const tok = await loadLlama2cTokenizer(tokPath ?? `${dir}tokenizer.bin`, config.vocab);
  return { path, source: hostSource(config, ckpt, path), tok };
}

/**
 * The architecture of the model at `path` without reading its weights: a folder's `config.json`
 * or a llama2.c file's 28-byte header. Lets a caller check settings against the model (its
 * context, say) before the weights load.
 */
export async function readModelConfig(path: string): Promise<LlamaConfig> {
  const info = await Deno.stat(path);
  if (info.isDirectory) {
    const file = `${path}/config.json`;
    return parseHfConfig(await Deno.readTextFile(file), file);
  }
  const f = await Deno.open(path, { read: true });
  try {
    const header = new Uint8Array(28);
    let n = 0;
    while (n < header.length) {
      const got = await f.read(header.subarray(n));
      if (got === null) break;
      n += got;
    }
    return fromLlama2c(parseLlama2cHeader(header.subarray(0, n), path));
  } finally {
    f.close();
  }
}
