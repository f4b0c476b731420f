/**
 * Hugging Face `tokenizer.json` (byte-level BPE as in LLaMA-3, SentencePiece-style BPE with byte
 * fallback as in LLaMA-2) through `@huggingface/tokenizers`, the pure-TS implementation of the
 * Tokenizers pipeline (normalizer, pre-tokenizer, model, decoder): our tests hold it to llama2.c's
 * own encoder on the embedded vocabulary and to hand-computed byte-level merges.
 *
 * Before the package sees a file it is checked here, so every error names the file and field:
 * ids within bounds, the four pipeline stages present (null when unused), and each BPE merge's
 * parts and their concatenation in the vocabulary. Whatever the package still throws is
 * rethrown prefixed with the file's name.
 */
import { Tokenizer } from "../../deps/tokenizers.ts";
import { z } from "../../deps/zod.ts";
import type { Llama2cTokenizer } from "./llama2c.ts";
import type { TextTokenizer } from "./tokenizer.ts";

// Ids within the largest vocabulary a config may declare (hf.ts): the size is the top id + 1.
const TokenId = z.number().int().nonnegative().max(2 ** 22);
const TokenizerJsonSchema = z.object({
  model: z.object({
    type: z.string(),
    vocab: z.record(z.string(), TokenId),
    // "a b" (as LLaMA's files spell them) or ["a", "b"] (newer files).
    merges: z.array(z.union([z.string(), z.tuple([z.string(), z.string()])])).default([]),
    continuing_subword_prefix: z.string().nullable().optional(),
  }).loose(),
  added_tokens: z.array(z.object({ id: TokenId, content: z.string() }).loose()).default([]),
}).loose();

// Pipeline stages the format always writes (null when unused); the tokenizers package refuses a
// file without them, in words that name no file.
const STAGES = ["normalizer", "pre_tokenizer", "post_processor", "decoder"] as const;

/**
 * Each merge's two parts and their concatenation must be vocabulary tokens, as the BPE format
 * requires: a merge outside the vocabulary makes the encoder emit ids of tokens that do not
 * exist (or `<unk>`) without a word.
 */
function checkMerges(
  vocab: Record<string, unknown>,
  merges: (string | [string, string])[],
  prefix: string | null | undefined,
  source: string,
): void {
  const has = (t: string) => Object.hasOwn(vocab, t);
  for (let i = 0; i < merges.length; i++) {
    const m = merges[i];
    let pair: [string, string];
    if (typeof m === "string") {
      const parts = m.split(" ");
      if (parts.length !== 2 || !parts[0] || !parts[1]) {
        throw new Error(
          `${source}: model.merges[${i}] ${JSON.stringify(m)} is not two tokens separated by ` +
            `one space`,
        );
      }
      pair = [parts[0], parts[1]];
    } else pair = m;
    const where = `${source}: model.merges[${i}] ${JSON.stringify(pair.join(" "))}`;
    for (const part of pair) {
      if (!has(part)) throw new Error(`${where}: ${JSON.stringify(part)} is not in the vocabulary`);
    }
    const [a, b] = pair;
    const merged = a + (prefix && b.startsWith(prefix) ? b.slice(prefix.length) : b);
    if (!has(merged)) {
      throw new Error(
        `${where}: the merged token ${JSON.stringify(merged)} is not in the vocabulary`,
      );
    }
  }
}

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
    for (const stage of STAGES) {
      if (!(stage in (json as object))) {
        throw new Error(`${source}: field ${stage}: missing (null when unused)`);
      }
    }
    const model = (json as { model: { vocab: Record<string, unknown> } }).model;
    checkMerges(
      model.vocab,
      r.data.model.merges,
      r.data.model.continuing_subword_prefix,
      source,
    );
    try {
      this.#tok = new Tokenizer({ ...(json as object), added_tokens: r.data.added_tokens }, config);
    } catch (e) {
      // The package's own words, with the file's name in our style.
      throw new Error(`${source}: ${(e as Error).message}`);
    }
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
