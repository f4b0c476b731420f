/**
 * Hugging Face `tokenizer.json` (byte-level BPE as in LLaMA-3, SentencePiece-style BPE with byte
 * fallback as in LLaMA-2) through `@huggingface/tokenizers`, the pure-TS implementation of the
 * Tokenizers pipeline (normalizer, pre-tokenizer, model, decoder): our tests hold it to llama2.c's
 * own encoder on the embedded vocabulary and to hand-computed byte-level merges.
 */
import { Tokenizer } from "../../deps/tokenizers.ts";
import { z } from "../../deps/zod.ts";
import type { Llama2cTokenizer } from "./llama2c.ts";
import type { TextTokenizer } from "./tokenizer.ts";

// Ids within the largest vocabulary a config may declare (hf.ts): the size is the top id + 1.
const TokenId = z.number().int().nonnegative().max(2 ** 22);
const TokenizerJsonSchema = z.object({
  model: z.object({ type: z.string(), vocab: z.record(z.string(), TokenId) }).loose(),
  added_tokens: z.array(z.object({ id: TokenId, content: z.string() }).loose()).default([]),
}).loose();

/** A tokenizer.json-backed tokenizer. */
export class HfTokenizer implements TextTokenizer {
  readonly #tok: Tokenizer;
  /** Vocabulary size (model vocab plus added tokens). */
  readonly size: number;
  /** BOS id. */
  readonly bosId: number;
  /** EOS id. */
  readonly eosId: number;

  /** Build from parsed tokenizer.json (and tokenizer_config.json) objects; `source` names the file. */
  constructor(json: unknown, config: Record<string, unknown> = {}, source = "tokenizer.json") {
    const r = TokenizerJsonSchema.safeParse(json);
    if (!r.success) {
      const i = r.error.issues[0];
      throw new Error(`${source}: field ${i.path.join(".")}: ${i.message}`);
    }
    if (r.data.model.type !== "BPE") {
      throw new Error(`${source}: model type ${r.data.model.type}, only BPE is supported`);
    }
    this.#tok = new Tokenizer(json as object, config);
    // A loop, not Math.max(...ids): a 128k vocabulary would overflow the call stack.
    let top = -1;
    for (const id of Object.values(r.data.model.vocab)) if (id > top) top = id;
    for (const t of r.data.added_tokens) if (t.id > top) top = t.id;
    this.size = top + 1;
    const idOf = (name: unknown, fallback: string[]) => {
      for (
        const t of [
          typeof name === "string" ? name : (name as { content?: string } | undefined)?.content,
          ...fallback,
        ]
      ) {
        const id = t === undefined ? undefined : this.#tok.token_to_id(t);
        if (id !== undefined) return id;
      }
      throw new Error(`${source}: no BOS/EOS token among ${fallback.join(", ")}`);
    };
    this.bosId = idOf(config.bos_token, ["<s>", "<|begin_of_text|>"]);
    this.eosId = idOf(config.eos_token, ["</s>", "<|end_of_text|>", "<|eot_id|>"]);
  }

  /** Read `tokenizer.json` (and `tokenizer_config.json` when present) from a model folder. */
  static async load(dir: string): Promise<HfTokenizer> {
    const path = `${dir}/tokenizer.json`;
    let config: Record<string, unknown> = {};
    try {
      config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new Error(`${dir}/tokenizer_config.json: ${(e as Error).message}`);
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`);
    }
    return new HfTokenizer(json, config, path);
  }

  /** Ids of `text`, with BOS/EOS when asked (the file's own post-processor is not applied). */
  encode(text: string, options: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids = this.#tok.encode(text, { add_special_tokens: false }).ids.map(Number);
    return [...(options.bos ? [this.bosId] : []), ...ids, ...(options.eos ? [this.eosId] : [])];
  }

  /** Text of ids, special tokens dropped. */
  decode(ids: number[]): string {
    return this.#tok.decode(ids, { skip_special_tokens: true });
  }
}

/**
 * A llama2.c vocabulary as a LLaMA-2-style tokenizer.json: "▁" for spaces (prepended once),
 * BPE merges ranked by the merged token's score (llama2.c merges the best-scoring pair first),
 * byte fallback for the `<0xXX>` tokens.
 */
export function llama2cToTokenizerJson(tok: Llama2cTokenizer): Record<string, unknown> {
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8", { fatal: false });
  const specials = ["<unk>", "<s>", "</s>"];
  const pieces = tok.pieces.map((p, id) => {
    if (id < 3) return specials[id];
    const s = latin1.decode(p);
    return /^<0x[0-9A-F]{2}>$/i.test(s) ? s : utf8.decode(p).replaceAll(" ", "▁");
  });
  const vocab: Record<string, number> = {};
  pieces.forEach((p, id) => vocab[p] ??= id);
  const merges: { pair: string; score: number; id: number }[] = [];
  pieces.forEach((p, id) => {
    if (id < 3 || /^<0x/.test(p) || [...p].length < 2) return;
    const chars = [...p];
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join("");
      const b = chars.slice(k).join("");
      if (a in vocab && b in vocab) merges.push({ pair: `${a} ${b}`, score: tok.scores[id], id });
    }
  });
  merges.sort((x, y) => y.score - x.score || x.id - y.id);
  return {
    version: "1.0",
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: "▁" }, {
        type: "Replace",
        pattern: { String: " " },
        content: "▁",
      }],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: merges.map((m) => m.pair),
    },
  };
}
