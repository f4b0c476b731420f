/**
 * Open a model the way every tool does: a Hugging Face folder (streamed from its safetensors,
 * `tokenizer.json`) or a llama2.c `.bin` file (read into memory; its `tok<vocab>.bin` or
 * `tokenizer.bin` beside it, or byte-level tokens when neither exists).
 */
import { openHfSource } from "../hf.ts";
import { loadLlama2c } from "../llama2c.ts";
import { HfTokenizer } from "../tokenizer/hf.ts";
import { loadLlama2cTokenizer } from "../tokenizer/llama2c.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { fromLlama2c } from "./config.ts";
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
