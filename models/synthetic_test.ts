import assert from "node:assert/strict";
import { openHfSource } from "./hf.ts";
import { readAllWeights } from "./llama/source.ts";
import { SYNTHETIC_SHAPES, type SyntheticShape, writeSyntheticHf } from "./synthetic.ts";
import { HfTokenizer } from "./tokenizer/hf.ts";

const TINY: SyntheticShape = {
  config: {
    dim: 32,
    hiddenDim: 88,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    vocab: 700,
    seqLen: 64,
    sharedClassifier: false,
    ropeTheta: 500000,
    normEps: 1e-5,
    ropeLayout: "half",
  },
  specials: "llama3",
};

Deno.test("synthetic: a sharded BF16 folder of the shape's layout, seeded, with a full-size tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  const bytes = await writeSyntheticHf(dir, TINY, { seed: 3, shardBytes: 20_000 });
  const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
  const shards = new Set(Object.values(index.weight_map));
  assert.ok(shards.size >= 3, `${shards.size} shards`);
  assert.equal(index.metadata.total_size, bytes);
  const source = await openHfSource(dir);
  assert.deepEqual(source.config, TINY.config);
  assert.equal(source.dtype("0.q"), "BF16");
  const w = await readAllWeights(source);
  source.close();
  const all = [w.tokenEmbedding, w.classifier, ...w.layers.flatMap((l) => Object.values(l))];
  for (const t of all) assert.ok(t.every(Number.isFinite));
  // Linear weights uniform with std 0.02, norms near 1.
  const q = w.layers[1].wq;
  const std = Math.sqrt(q.reduce((s, v) => s + v * v, 0) / q.length);
  assert.ok(Math.abs(std - 0.02) < 0.002, `std ${std}`);
  assert.ok(w.layers[0].attnNorm.every((v) => Math.abs(v - 1) < 0.1));
  // The tokenizer has exactly vocab ids, LLaMA-3's specials at the end, and round-trips text.
  const tok = await HfTokenizer.load(dir);
  assert.equal(tok.size, TINY.config.vocab);
  assert.equal(tok.bosId, TINY.config.vocab - 256);
  const text = "The following are multiple choice questions (with answers) about anatomy.";
  const ids = tok.encode(text);
  assert.ok(ids.length < text.length, "merges learned from the sample compress English");
  assert.equal(tok.decode(ids), text);
  // Same seed, same bytes; another seed, other weights.
  const again = await Deno.makeTempDir();
  await writeSyntheticHf(again, TINY, { seed: 3, shardBytes: 20_000 });
  const other = await Deno.makeTempDir();
  await writeSyntheticHf(other, TINY, { seed: 4, shardBytes: 20_000 });
  for (const f of shards) {
    const name = f as string;
    assert.deepEqual(
      await Deno.readFile(`${again}/${name}`),
      await Deno.readFile(`${dir}/${name}`),
    );
    assert.notDeepEqual(
      await Deno.readFile(`${other}/${name}`),
      await Deno.readFile(`${dir}/${name}`),
    );
  }
  for (const d of [dir, again, other]) await Deno.remove(d, { recursive: true });
});

Deno.test("synthetic: the named shapes are the published configurations", () => {
  const l3 = SYNTHETIC_SHAPES["llama3-8b"].config;
  assert.deepEqual(
    [l3.dim, l3.hiddenDim, l3.layers, l3.heads, l3.kvHeads, l3.vocab, l3.ropeTheta],
    [4096, 14336, 32, 32, 8, 128256, 500000],
  );
  const tl = SYNTHETIC_SHAPES["tinyllama-1.1b"].config;
  assert.deepEqual([tl.dim, tl.hiddenDim, tl.layers, tl.heads, tl.kvHeads], [
    2048,
    5632,
    22,
    32,
    4,
  ]);
  assert.deepEqual(Object.keys(SYNTHETIC_SHAPES), [
    "mid-0.2b",
    "tinyllama-1.1b",
    "llama2-7b",
    "llama3-8b",
  ]);
});
