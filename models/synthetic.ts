/**
 * Synthetic checkpoints of real shapes: a Hugging Face folder (`config.json`, BF16 safetensors
 * shards with `model.safetensors.index.json`, `tokenizer.json` and `tokenizer_config.json`) with
 * seeded random weights in the exact tensor names and layouts of a LLaMA model, written tensor by
 * tensor in chunks so that an 8B model never sits in memory. What models of the paper's size do to
 * memory, loading and kernels can then be tested where the real weights cannot be downloaded.
 *
 * The tokenizer is byte-level BPE (LLaMA-3's kind): merges learned from a small English corpus (so
 * prompts take a realistic number of tokens), then filled with merges of existing tokens up to the
 * shape's vocabulary size, special tokens where LLaMA-2 (first ids) or LLaMA-3 (last ids) keep them.
 */
import { hfConfigJson, hfTensorShapes } from "./hf.ts";
import type { LlamaConfig } from "./llama/config.ts";
import { LLAMA2_7B, LLAMA3_8B, type LlamaShape, MID_0_2B, TINYLLAMA_1B } from "./llama_shapes.ts";
import { plannedBytes, type SafetensorsDType, writeShardedSafetensors } from "./safetensors.ts";
import { bytesToUnicode } from "./tokenizer/byte_level.ts";

/** A shape to synthesize: the architecture and where its tokenizer keeps special tokens. */
export interface SyntheticShape {
  /** Architecture (as config.json will state it). */
  config: LlamaConfig;
  /** `llama2`: <unk>, <s>, </s> at ids 0–2; `llama3`: <|begin_of_text|> … in the last 256 ids. */
  specials: "llama2" | "llama3";
}

function shape(s: LlamaShape, extra: Partial<LlamaConfig>, specials: SyntheticShape["specials"]) {
  return {
    config: {
      dim: s.hidden,
      hiddenDim: s.intermediate,
      layers: s.layers,
      heads: s.heads,
      kvHeads: s.kvHeads,
      vocab: s.vocab,
      seqLen: 2048,
      sharedClassifier: false,
      ropeTheta: 10000,
      normEps: 1e-5,
      ropeLayout: "half" as const,
      ...extra,
    },
    specials,
  };
}

/** The named shapes (`deno task synth --shape NAME`), as their published config.json files say. */
export const SYNTHETIC_SHAPES: Record<string, SyntheticShape> = {
  [MID_0_2B.name]: shape(MID_0_2B, {}, "llama2"),
  [TINYLLAMA_1B.name]: shape(TINYLLAMA_1B, {}, "llama2"),
  [LLAMA2_7B.name]: shape(LLAMA2_7B, { seqLen: 4096 }, "llama2"),
  [LLAMA3_8B.name]: shape(LLAMA3_8B, { seqLen: 8192, ropeTheta: 500000 }, "llama3"),
};

/** Options of {@link writeSyntheticHf}. */
export interface SyntheticOptions {
  /** Seed of every weight (default 0). */
  seed?: number;
  /** Largest shard in bytes (default 2 GiB); several shards get an index. */
  shardBytes?: number;
  /** Stored element type (default BF16, as published LLaMA checkpoints). */
  dtype?: SafetensorsDType;
  /** Text the tokenizer's merges are learned from (default: a built-in English sample). */
  corpus?: string;
  /** Called as bytes are written. */
  progress?: (done: number, total: number) => void;
}

const BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2 };
const CHUNK_ELEMENTS = 1 << 22; // 8 MiB of BF16 per write

/** A fast seeded generator (xorshift32) for bulk weights; never 0. */
function xorshift(seed: number): () => number {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/** `n` values uniform with standard deviation `std` around `mean`, as stored bytes. */
function randomChunk(
  n: number,
  next: () => number,
  std: number,
  mean: number,
  dtype: SafetensorsDType,
): Uint8Array {
  const half = std * Math.sqrt(3); // a uniform on [−h, h] has std h/√3
  if (dtype === "BF16") {
    // Each 32-bit draw gives two values through a table of 65,536 evenly spaced bf16 values.
    const table = bf16Table(mean, half);
    const out = new Uint16Array(n + (n & 1));
    const pairs = new Uint32Array(out.buffer);
    for (let i = 0; i < pairs.length; i++) {
      const r = next();
      pairs[i] = table[r & 0xffff] | (table[r >>> 16] << 16);
    }
    return new Uint8Array(out.buffer, 0, 2 * n);
  }
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = mean + half * (next() * (2 / 4294967296) - 1);
  if (dtype === "F32") return new Uint8Array(f.buffer);
  return new Uint8Array(Float16Array.from(f).buffer);
}

const tables = new Map<string, Uint16Array>();

/** bf16 bits of mean + half·(2k/65536 − 1) for k = 0..65535. */
function bf16Table(mean: number, half: number): Uint16Array {
  const key = `${mean},${half}`;
  let t = tables.get(key);
  if (!t) {
    const f = Float32Array.from({ length: 65536 }, (_, k) => mean + half * ((2 * k) / 65536 - 1));
    const words = new Uint32Array(f.buffer);
    t = Uint16Array.from(words, (w) => w >>> 16);
    tables.set(key, t);
  }
  return t;
}

/**
 * Write a synthetic Hugging Face folder for `shape` into `dir` (created if missing). Returns the
 * bytes of weights written. Tensors are written in chunks: memory stays at a few MiB.
 */
export async function writeSyntheticHf(
  dir: string,
  shape: SyntheticShape,
  options: SyntheticOptions = {},
): Promise<number> {
  const c = shape.config;
  const dtype = options.dtype ?? "BF16";
  const seed = options.seed ?? 0;
  const shardBytes = options.shardBytes ?? 2 * 2 ** 30;
  const plan = [...hfTensorShapes(c)].map(([name, shape]) => ({ name, shape, dtype }));
  const order = new Map(plan.map((t, i) => [t.name, i]));
  const total = await writeShardedSafetensors(dir, plan, shardBytes, function* (t) {
    const n = plannedBytes(t) / BYTES[dtype];
    const next = xorshift(seed * 1000003 + order.get(t.name)!);
    const norm = t.name.endsWith("norm.weight");
    for (let at = 0; at < n; at += CHUNK_ELEMENTS) {
      const m = Math.min(CHUNK_ELEMENTS, n - at);
      yield randomChunk(m, next, norm ? 0.05 : 0.02, norm ? 1 : 0, dtype);
    }
  }, options.progress);
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify(hfConfigJson(c, shape.specials, dtype), null, 2),
  );
  const tok = syntheticTokenizer(c.vocab, shape.specials, options.corpus ?? ENGLISH_SAMPLE);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tok.json));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ bos_token: tok.bos, eos_token: tok.eos }, null, 2),
  );
  return total;
}

/** GPT-2/LLaMA-3's pre-tokenizer split (contractions, letters, digits, punctuation, spaces). */
const SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * A byte-level BPE tokenizer.json of exactly `vocab` ids: merges learned from `corpus` (most
 * frequent pair first, ties by text), then merges of existing tokens chosen by a seeded generator
 * until the vocabulary is full; specials as `style` says.
 */
export function syntheticTokenizer(
  vocab: number,
  style: SyntheticShape["specials"],
  corpus: string,
): { json: Record<string, unknown>; bos: string; eos: string } {
  const specials = style === "llama2" ? ["<unk>", "<s>", "</s>"] : [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    ...Array.from(
      { length: 254 },
      (_, i) => `<|reserved_special_token_${i}|>`,
    ),
  ];
  const firstId = style === "llama2" ? specials.length : 0;
  const room = vocab - specials.length - 256;
  if (room < 0) throw new RangeError(`a vocabulary of ${vocab} has no room for 256 bytes`);
  const map = bytesToUnicode();
  const encoder = new TextEncoder();
  const tokens: string[] = [];
  for (let b = 0; b < 256; b++) tokens.push(map.get(b)!);
  const known = new Set(tokens);
  const merges: string[] = [];
  // Word counts of the corpus, each word as a list of byte-level symbols.
  const counts = new Map<string, number>();
  for (const w of corpus.match(SPLIT) ?? []) {
    const s = [...encoder.encode(w)].map((b) => map.get(b)!).join(" ");
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  const words = [...counts].map(([s, n]) => ({ symbols: s.split(" "), n }));
  // Pair counts kept up to date as merges rewrite the words that hold the merged pair.
  const pairs = new Map<string, number>();
  const holders = new Map<string, Set<number>>();
  const tally = (w: number, sign: 1 | -1) => {
    const { symbols, n } = words[w];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const p = `${symbols[i]} ${symbols[i + 1]}`;
      const left = (pairs.get(p) ?? 0) + sign * n;
      if (left > 0) pairs.set(p, left);
      else pairs.delete(p);
      if (sign > 0) {
        let set = holders.get(p);
        if (!set) holders.set(p, set = new Set());
        set.add(w);
      }
    }
  };
  words.forEach((_, w) => tally(w, 1));
  // Learned merges are capped; the rest of the vocabulary is filled below.
  while (merges.length < Math.min(room, 8000)) {
    let best = "";
    let bestCount = 1; // a pair seen once teaches nothing
    for (const [p, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== "" && p < best)) [best, bestCount] = [p, n];
    }
    if (best === "") break;
    const [a, b] = best.split(" ");
    const merged = a + b;
    merges.push(best);
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
    for (const w of holders.get(best) ?? []) {
      tally(w, -1);
      const { symbols } = words[w];
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(symbols[i]);
      }
      words[w].symbols = out;
      tally(w, 1);
    }
    holders.delete(best);
  }
  // Fill: merges of two short existing tokens, seeded, until every id is used.
  const next = xorshift(vocab);
  const short = tokens.filter((t) => [...t].length <= 3);
  while (tokens.length < 256 + room) {
    const a = short[next() % short.length];
    const b = tokens[next() % Math.min(tokens.length, 4096)];
    const merged = a + b;
    if (known.has(merged)) continue;
    known.add(merged);
    tokens.push(merged);
    merges.push(`${a} ${b}`);
    if ([...merged].length <= 3) short.push(merged);
  }
  const vocabMap: Record<string, number> = {};
  tokens.forEach((t, i) => vocabMap[t] = firstId + i);
  const specialIds = style === "llama2"
    ? specials.map((_, i) => i)
    : specials.map((_, i) => vocab - specials.length + i);
  return {
    json: {
      version: "1.0",
      added_tokens: specials.map((content, i) => ({
        id: specialIds[i],
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: null,
      pre_tokenizer: {
        type: "ByteLevel",
        add_prefix_space: false,
        trim_offsets: true,
        use_regex: true,
      },
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        vocab: vocabMap,
        merges,
      },
    },
    bos: specials[style === "llama2" ? 1 : 0],
    eos: specials[style === "llama2" ? 2 : 1],
  };
}

/** A sample of plain English in the styles the kit's prompts use, to learn merges from. */
export const ENGLISH_SAMPLE: string = `
Below is an instruction that describes a task. Write a response that appropriately completes the
request. The following are multiple choice questions (with answers) about high school biology,
college mathematics, world history, computer security, moral scenarios and professional law.
Question: Which of the following statements about the cell membrane is true? Answer: A. It is made
of a double layer of lipids with proteins embedded in it. Please choose the correct answer to the
question: the man wanted to keep his food cold, so he put it in the refrigerator. Answer format:
answer1/answer2/answer3/answer4/answer5. The correct answer is true or false. Solution1 and
solution2 describe two ways to reach the goal; choose the one that makes more sense. Once upon a
time there was a little girl named Lily. She loved to play in the park with her friend Ben. One day
they found a big red ball under a tree, and they were very happy. The sun was shining and the birds
were singing. They played together all day, and when it was time to go home they said goodbye and
promised to come back tomorrow. In mathematics, a function assigns to each element of a set exactly
one element of another set. The derivative of a function measures how the output changes as the
input changes. A prime number is a natural number greater than one that has no positive divisors
other than one and itself. The government of a country is the group of people who make and enforce
the laws. Economic growth depends on investment, education, technology and the institutions that
protect property and contracts. What is the capital of France? Paris is the capital and the most
populous city of France. Water boils at one hundred degrees Celsius at sea level, and it freezes at
zero degrees. The heart pumps blood through the body, and the lungs bring oxygen into the blood.
Students should read the passage carefully and then answer the questions that follow it.
`.repeat(3);
