import assert from "node:assert/strict";
import { defaultModelPath } from "../../testing/paths.ts";
import { loadModelReference } from "../llama/reference.ts";
import { ByteFallbackTokenizer, Llama2cTokenizer, loadLlama2cTokenizer } from "./llama2c.ts";

Deno.test("tokenizer: tok512 decodes the reference story and round-trips text", async () => {
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), 512);
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const story = tok.decode(ref.greedyIds);
  assert.ok(story.startsWith("Once upon a time, there was a little girl named Lily."), story);
  for (const text of [story, "Hello, wörld! 🙂 tabs\tand\nnewlines", "a"]) {
    const ids = tok.encode(text, { bos: true });
    assert.equal(ids[0], 1);
    assert.equal(tok.decode(ids.slice(1)), text);
  }
  // Merges happen: far fewer ids than bytes for English.
  assert.ok(tok.encode(story).length < new TextEncoder().encode(story).length / 2);
  // Byte fallback for a code point outside the vocabulary: 🙂 is 4 bytes → ids 3 + byte.
  const emoji = tok.encode("🙂");
  assert.deepEqual(emoji.slice(-4), [0xf0 + 3, 0x9f + 3, 0x99 + 3, 0x82 + 3]);
});

Deno.test("tokenizer: truncated or mismatched files are rejected", async () => {
  const bytes = await Deno.readFile(defaultModelPath("tok512.bin"));
  assert.throws(
    () => Llama2cTokenizer.parse(bytes.subarray(0, 3000), 512, "t.bin"),
    /t\.bin: ends inside token/,
  );
  assert.throws(
    () => Llama2cTokenizer.parse(bytes, 500, "t.bin"),
    /bytes after token 499 \(wrong vocabulary size\?\)/,
  );
});

Deno.test("tokenizer: without tokenizer.bin the byte-fallback encoding is used and round-trips", async () => {
  const tok = await loadLlama2cTokenizer("/nonexistent/tok512.bin", 512);
  assert.ok(tok instanceof ByteFallbackTokenizer);
  assert.deepEqual(tok.encode("Hé", { bos: true }), [1, 0x48 + 3, 0xc3 + 3, 0xa9 + 3]);
  assert.equal(tok.decode(tok.encode("Hé 🙂")), "Hé 🙂");
  assert.ok(
    (await loadLlama2cTokenizer(defaultModelPath("tok512.bin"), 512)) instanceof Llama2cTokenizer,
  );
});

/** llama2.c's encode loop as run.c writes it: rescan every pair, merge the first best. */
function rescanEncode(tok: Llama2cTokenizer, text: string): number[] {
  const latin1 = new TextDecoder("latin1");
  const lookup = new Map<string, number>();
  tok.pieces.forEach((p, id) => {
    if (!lookup.has(latin1.decode(p))) lookup.set(latin1.decode(p), id);
  });
  const ids = [1, lookup.get(" ")!];
  for (const ch of text) {
    const bytes = new TextEncoder().encode(ch);
    const id = lookup.get(latin1.decode(bytes));
    if (id !== undefined) ids.push(id);
    else for (const b of bytes) ids.push(b + 3);
  }
  for (;;) {
    let best = -Infinity;
    let at = -1;
    let bestId = -1;
    for (let i = 1; i + 1 < ids.length; i++) {
      const id = lookup.get(
        latin1.decode(tok.pieces[ids[i]]) + latin1.decode(tok.pieces[ids[i + 1]]),
      );
      if (id !== undefined && tok.scores[id] > best) [best, at, bestId] = [tok.scores[id], i, id];
    }
    if (at < 0) return ids;
    ids.splice(at, 2, bestId);
  }
}

Deno.test("tokenizer: the heap-ordered merges give llama2.c's rescan result on 300 random texts", async () => {
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), 512);
  const alphabet = "aaeeiioouu tnsrhldcmfpgwybvk.,!?'\n  ThSATé🙂";
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let k = 0; k < 300; k++) {
    const chars = [...alphabet];
    const text = Array.from(
      { length: 1 + Math.floor(rand() * 120) },
      () => chars[Math.floor(rand() * chars.length)],
    ).join("");
    assert.deepEqual(
      tok.encode(text, { bos: true }),
      rescanEncode(tok, text),
      JSON.stringify(text),
    );
  }
  // Ties between equal-scoring pairs go to the leftmost, as the rescan does.
  const repeated = "aaaa aaaa the the the";
  assert.deepEqual(tok.encode(repeated, { bos: true }), rescanEncode(tok, repeated));
});

Deno.test("tokenizer: a text of 300k tokens encodes and decodes without overflowing the stack", async () => {
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), 512);
  // Bytes no merge joins: one id per byte, 300k ids through encode's and decode's loops.
  const text = "\u00ff".repeat(150000);
  const ids = tok.encode(text, { bos: true, eos: true });
  assert.ok(ids.length > 300000);
  assert.equal(ids.at(-1), 2);
  assert.equal(tok.decode(ids), text);
});
