import assert from "node:assert/strict";
import { defaultModelPath } from "../../testing/paths.ts";
import { loadModelReference } from "../llama/reference.ts";
import { bytesToUnicode } from "./byte_level.ts";
import { HfTokenizer, llama2cToTokenizerJson } from "./hf.ts";
import { Llama2cTokenizer } from "./llama2c.ts";

Deno.test("hf tokenizer: tok512 as a LLaMA-2-style tokenizer.json encodes exactly like llama2.c", async () => {
  const l2c = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), 512);
  const hf = new HfTokenizer(llama2cToTokenizerJson(l2c), { bos_token: "<s>", eos_token: "</s>" });
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const story = l2c.decode(ref.greedyIds);
  for (
    const text of [
      story,
      "Hello, wörld! 🙂",
      "Lily and Ben played in the park.",
      "  two  spaces",
      "a",
    ]
  ) {
    assert.deepEqual(hf.encode(text, { bos: true }), l2c.encode(text, { bos: true }), text);
    assert.equal(hf.decode(hf.encode(text)), text);
  }
  assert.equal(hf.bosId, 1);
  assert.equal(hf.eosId, 2);
});

Deno.test("hf tokenizer: byte-level BPE (LLaMA-3 style) applies ranked merges and round-trips bytes", () => {
  const map = bytesToUnicode();
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[map.get(b)!] = b;
  const extra = ["Ġt", "he", "Ġthe", "Ġc", "at"];
  extra.forEach((t, i) => vocab[t] = 256 + i);
  const json = {
    version: "1.0",
    added_tokens: [
      {
        id: 300,
        content: "<|begin_of_text|>",
        special: true,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      },
      {
        id: 301,
        content: "<|end_of_text|>",
        special: true,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      },
    ],
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
      vocab,
      merges: ["Ġ t", "h e", "Ġt he", "Ġ c", "a t"],
    },
  };
  const tok = new HfTokenizer(json);
  // "the cat": "the" has no Ġ (no merge t+he exists) → t, he; " cat" → Ġc, at.
  assert.deepEqual(tok.encode("the cat"), [vocab["t"], 257, 259, 260]);
  assert.deepEqual(tok.encode(" the"), [258]);
  assert.deepEqual(tok.encode("x", { bos: true, eos: true }), [300, vocab["x"], 301]);
  for (const text of ["the cat sat", "ünïcödé 🙂", "tabs\tand\nnewlines"]) {
    assert.equal(tok.decode(tok.encode(text)), text);
  }
  assert.throws(
    () => new HfTokenizer({ model: { type: "Unigram", vocab: {} } }, {}, "t.json"),
    /t\.json: model type Unigram/,
  );
  assert.throws(() => new HfTokenizer({ nope: 1 }, {}, "t.json"), /t\.json: field model/);
});

Deno.test("hf tokenizer: a 160k-id tokenizer.json loads without overflowing the stack", async () => {
  const map = bytesToUnicode();
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[map.get(b)!] = b;
  for (let i = 256; i < 160000; i++) vocab[`t${i}`] = i;
  const special = (id: number, content: string) => ({ id, content, special: true });
  const json = {
    version: "1.0",
    added_tokens: [special(160000, "<s>"), special(160001, "</s>")],
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel" },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: [],
    },
  };
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  const tok = await HfTokenizer.load(dir);
  assert.equal(tok.size, 160002);
  assert.deepEqual(tok.encode("hi", { bos: true }), [160000, 104, 105]);
  await Deno.remove(dir, { recursive: true });
});
