import assert from "node:assert/strict";
import {
  hfConfigJson,
  hfTensorShapes,
  loadHfLlama,
  openHfSource,
  parseHfConfig,
  permuteRope,
} from "./hf.ts";
import { type Llama2cCheckpoint, loadLlama2c } from "./llama2c.ts";
import { fromLlama2c, type LlamaConfig } from "./llama/config.ts";
import { CpuLlama } from "./llama/cpu/model.ts";
import { loadModelReference } from "./llama/reference.ts";
import { randomCheckpoint, TINY_CONFIG } from "./llama/testing.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { readAllWeights } from "./llama/source.ts";
import {
  decodeToF32,
  encodeSafetensors,
  parseSafetensors,
  type SafetensorsDType,
} from "./safetensors.ts";

/** Write `ckpt` as a HF folder (q/k permuted to rotate_half order), optionally in 2 shards. */
async function writeHf(
  dir: string,
  c: LlamaConfig,
  ckpt: Llama2cCheckpoint,
  dtype: SafetensorsDType,
  shards: number,
) {
  const hs = c.dim / c.heads;
  const tensors: Record<string, Float32Array> = {
    "model.embed_tokens.weight": ckpt.tokenEmbedding,
    "model.norm.weight": ckpt.finalNorm,
  };
  if (!c.sharedClassifier) tensors["lm_head.weight"] = ckpt.classifier;
  ckpt.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    tensors[`${p}.input_layernorm.weight`] = l.attnNorm;
    tensors[`${p}.post_attention_layernorm.weight`] = l.ffnNorm;
    tensors[`${p}.self_attn.q_proj.weight`] = permuteRope(l.wq, c.heads, hs, c.dim, true);
    tensors[`${p}.self_attn.k_proj.weight`] = permuteRope(l.wk, c.kvHeads, hs, c.dim, true);
    tensors[`${p}.self_attn.v_proj.weight`] = l.wv;
    tensors[`${p}.self_attn.o_proj.weight`] = l.wo;
    tensors[`${p}.mlp.gate_proj.weight`] = l.w1;
    tensors[`${p}.mlp.up_proj.weight`] = l.w3;
    tensors[`${p}.mlp.down_proj.weight`] = l.w2;
  });
  const shapes = hfTensorShapes(c);
  const names = Object.keys(tensors);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hfConfigJson(c, "llama2", dtype)));
  const entry = (n: string) => ({ name: n, shape: shapes.get(n)!, data: tensors[n], dtype });
  if (shards === 1) {
    await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(names.map(entry)));
    return;
  }
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
    const part = names.filter((_, i) => i % shards === s);
    part.forEach((n) => weightMap[n] = file);
    await Deno.writeFile(`${dir}/${file}`, encodeSafetensors(part.map(entry)));
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
}

Deno.test("hf: stories260K written in HF layout loads back in rotate_half layout and gives reference.json's logits", async () => {
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const dir = await Deno.makeTempDir();
  await writeHf(dir, fromLlama2c(ckpt.config), ckpt, "F32", 1);
  const { config, weights } = await loadHfLlama(dir);
  assert.equal(config.sharedClassifier, true);
  assert.equal(config.ropeLayout, "half");
  const c = config, hs = c.dim / c.heads;
  // Rows stay in the file's rotate_half order; the model rotates (j, j + hs/2) pairs instead.
  assert.deepEqual(
    weights.layers[3].wk,
    permuteRope(ckpt.layers[3].wk, c.kvHeads, hs, c.dim, true),
  );
  const worstAgainstReference = (layout: "half" | "interleaved") => {
    const { logits } = new CpuLlama({ ...config, ropeLayout: layout }, weights).forward(
      ref.teacherIds,
    );
    let worst = 0;
    ref.teacherLogits.forEach((row, t) =>
      row.forEach((v, j) => worst = Math.max(worst, Math.abs(v - logits[t * 512 + j])))
    );
    return worst;
  };
  const worst = worstAgainstReference("half");
  assert.ok(worst < 1e-3, `max |Δlogit| ${worst}`);
  // Negative control: the same rows rotated as interleaved pairs are a different model.
  assert.ok(worstAgainstReference("interleaved") > 0.1);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("hf: sharded BF16 and F16 checkpoints with a separate lm_head; bad folders are rejected", async () => {
  const c = { ...fromLlama2c(TINY_CONFIG), ropeTheta: 500000, normEps: 1e-6 };
  const ckpt = randomCheckpoint(TINY_CONFIG, 4);
  for (const dtype of ["BF16", "F16"] as const) {
    const dir = await Deno.makeTempDir();
    await writeHf(dir, c, ckpt, dtype, 2);
    const { config, weights } = await loadHfLlama(dir);
    assert.equal(config.ropeTheta, 500000);
    assert.equal(config.normEps, 1e-6);
    // Each weight is the original rounded to the dtype (relative step 2^-8 for bf16, 2^-11 for f16).
    const tol = dtype === "BF16" ? 2 ** -8 : 2 ** -11;
    const wq = permuteRope(ckpt.layers[1].wq, c.heads, c.dim / c.heads, c.dim, true);
    weights.layers[1].wq.forEach((v, i) =>
      assert.ok(Math.abs(v - wq[i]) <= tol * Math.abs(wq[i]) + 1e-7)
    );
    assert.notEqual(weights.classifier, weights.tokenEmbedding);
    await Deno.remove(dir, { recursive: true });
  }
  const dir = await Deno.makeTempDir();
  await writeHf(dir, c, ckpt, "F32", 1);
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  const file = parseSafetensors(bytes);
  const tensors = [...file.entries.keys()].filter((n) => n !== "model.layers.1.mlp.up_proj.weight")
    .map((n) => ({ name: n, shape: file.entries.get(n)!.shape, data: file.tensor(n) }));
  await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(tensors));
  await assert.rejects(loadHfLlama(dir), /missing tensor model\.layers\.1\.mlp\.up_proj\.weight/);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 8));
  await assert.rejects(loadHfLlama(dir), /model\.safetensors: .*(truncated|ends at)/);
  assert.throws(
    () => parseHfConfig('{"hidden_size": 64}', "c.json"),
    /c\.json: field intermediate_size/,
  );
  assert.throws(
    () =>
      parseHfConfig(
        JSON.stringify({
          hidden_size: 64,
          intermediate_size: 8,
          num_hidden_layers: 1,
          num_attention_heads: 6,
          vocab_size: 9,
        }),
      ),
    /do not fit/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("hf: streaming reads equal the whole-file decode bit for bit (F32, F16, BF16, sharded); lying or truncated shards are refused by name", async () => {
  const c = { ...fromLlama2c(TINY_CONFIG), ropeTheta: 500000, normEps: 1e-6 };
  const ckpt = randomCheckpoint(TINY_CONFIG, 6);
  for (const [dtype, shards] of [["F32", 1], ["F16", 2], ["BF16", 3]] as const) {
    const dir = await Deno.makeTempDir();
    await writeHf(dir, c, ckpt, dtype, shards);
    // The oracle: every file read whole and decoded.
    const whole = new Map<string, Float32Array>();
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".safetensors")) continue;
      const f = parseSafetensors(await Deno.readFile(`${dir}/${e.name}`));
      for (const name of f.entries.keys()) whole.set(name, f.tensor(name));
    }
    const source = await openHfSource(dir);
    const streamed = await readAllWeights(source);
    const l1 = "model.layers.1";
    assert.deepEqual(streamed.layers[1].w3, whole.get(`${l1}.mlp.up_proj.weight`));
    assert.deepEqual(streamed.layers[1].wq, whole.get(`${l1}.self_attn.q_proj.weight`));
    assert.deepEqual(streamed.tokenEmbedding, whole.get("model.embed_tokens.weight"));
    assert.deepEqual(streamed.classifier, whole.get("lm_head.weight"));
    // Partial row reads, also across heads of k.
    const kRows = await source.readRows("0.k", 3, 4);
    const kAll = streamed.layers[0].wk;
    assert.deepEqual(decodeToF32(kRows.bytes, kRows.dtype), kAll.subarray(3 * c.dim, 7 * c.dim));
    assert.equal(source.dtype("0.q"), dtype);
    source.close();
    await Deno.remove(dir, { recursive: true });
  }
  // A truncated shard and a shard whose header lies about its offsets, named in the error.
  const dir = await Deno.makeTempDir();
  await writeHf(dir, c, ckpt, "BF16", 2);
  const shard = `${dir}/model-00002-of-00002.safetensors`;
  const bytes = await Deno.readFile(shard);
  await Deno.writeFile(shard, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(
    openHfSource(dir),
    /model-00002-of-00002\.safetensors: .*(truncated|ends at)/,
  );
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const first = Object.keys(header).find((k) => k !== "__metadata__")!;
  header[first].data_offsets = [2, header[first].data_offsets[1] + 2];
  const lying = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + lying.length + bytes.length - 8 - headerLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(lying.length), true);
  out.set(lying, 8);
  out.set(bytes.subarray(8 + headerLen), 8 + lying.length);
  await Deno.writeFile(shard, out);
  await assert.rejects(
    openHfSource(dir),
    /model-00002-of-00002\.safetensors: tensor .*(hole|overlapping|bytes after)/,
  );
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{ not json");
  await assert.rejects(openHfSource(dir), /model\.safetensors\.index\.json: not JSON/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("hf: config.json fields past sane maxima are refused at once, naming the file and field", async () => {
  const base = {
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 512,
  };
  // Positive control.
  assert.equal(parseHfConfig(JSON.stringify(base), "ok.json").layers, 2);
  const t0 = performance.now();
  for (
    const [field, value] of [
      ["num_hidden_layers", 1e8],
      ["hidden_size", 2 ** 17],
      ["num_attention_heads", 4096],
      ["num_key_value_heads", 4096],
      ["vocab_size", 2 ** 23],
      ["max_position_embeddings", 2 ** 23],
      ["intermediate_size", 2 ** 21],
    ] as const
  ) {
    assert.throws(
      () => parseHfConfig(JSON.stringify({ ...base, [field]: value }), "m/config.json"),
      new RegExp(`m/config\\.json: field ${field}: .*(<=|too big)`, "i"),
      field,
    );
  }
  // Through the folder loader: refused before any tensor list is sized from it.
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...base, num_hidden_layers: 1e8 }),
  );
  await assert.rejects(openHfSource(dir), /config\.json: field num_hidden_layers/);
  assert.ok(performance.now() - t0 < 1000);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("hf: a config implying more tensors than the files hold, and a bad index, name the file", async () => {
  const c = { ...fromLlama2c(TINY_CONFIG), ropeTheta: 10000, normEps: 1e-5 };
  const ckpt = randomCheckpoint(TINY_CONFIG, 5);
  const dir = await Deno.makeTempDir();
  await writeHf(dir, c, ckpt, "F32", 2);
  // Positive control.
  (await openHfSource(dir)).close();
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...config, num_hidden_layers: 1000 }),
  );
  const ends = c.sharedClassifier ? 2 : 3; // embed, norm (and lm_head)
  await assert.rejects(
    openHfSource(dir),
    new RegExp(
      `missing tensor model\\.layers\\.${c.layers}\\..* \\(config\\.json implies ` +
        `${9000 + ends} tensors, the safetensors files hold ${9 * c.layers + ends}\\)`,
    ),
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  const index = `${dir}/model.safetensors.index.json`;
  const good = await Deno.readTextFile(index);
  await Deno.writeTextFile(index, good.slice(0, 40));
  await assert.rejects(openHfSource(dir), /model\.safetensors\.index\.json: not JSON/);
  await Deno.writeTextFile(index, JSON.stringify({ weight_map: ["a", "b"] }));
  await assert.rejects(
    openHfSource(dir),
    /model\.safetensors\.index\.json: field weight_map: /,
  );
  await Deno.writeTextFile(index, JSON.stringify({ weight_map: { "model.norm.weight": 3 } }));
  await assert.rejects(
    openHfSource(dir),
    /model\.safetensors\.index\.json: field weight_map\.model\.norm\.weight: /,
  );
  await Deno.writeTextFile(index, JSON.stringify({ weight_map: { "model.norm.weight": "../x" } }));
  await assert.rejects(openHfSource(dir), /index\.json: shard name "\.\.\/x" escapes the folder/);
  await Deno.writeTextFile(index, good);
  (await openHfSource(dir)).close();
  await Deno.remove(dir, { recursive: true });
});
