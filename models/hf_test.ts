import assert from "node:assert/strict";
import { hfTensorShapes, loadHfLlama, parseHfConfig, permuteRope } from "./hf.ts";
import { type Llama2cCheckpoint, loadLlama2c } from "./llama2c.ts";
import { fromLlama2c, type LlamaConfig } from "./llama/config.ts";
import { CpuLlama } from "./llama/cpu/model.ts";
import { loadModelReference } from "./llama/reference.ts";
import { randomCheckpoint, TINY_CONFIG } from "./llama/testing.ts";
import { defaultModelPath } from "./paths.ts";
import { encodeSafetensors, parseSafetensors, type SafetensorsDType } from "./safetensors.ts";

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
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      model_type: "llama",
      hidden_size: c.dim,
      intermediate_size: c.hiddenDim,
      num_hidden_layers: c.layers,
      num_attention_heads: c.heads,
      num_key_value_heads: c.kvHeads,
      vocab_size: c.vocab,
      max_position_embeddings: c.seqLen,
      rope_theta: c.ropeTheta,
      rms_norm_eps: c.normEps,
      tie_word_embeddings: c.sharedClassifier,
    }),
  );
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

Deno.test("hf: stories260K written in HF layout loads back and gives reference.json's logits", async () => {
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const ref = await loadModelReference(defaultModelPath("reference.json"));
  const dir = await Deno.makeTempDir();
  await writeHf(dir, fromLlama2c(ckpt.config), ckpt, "F32", 1);
  const { config, weights } = await loadHfLlama(dir);
  assert.equal(config.sharedClassifier, true);
  assert.deepEqual(weights.layers[3].wk, ckpt.layers[3].wk, "RoPE permutation undone exactly");
  const { logits } = new CpuLlama(config, weights).forward(ref.teacherIds);
  let worst = 0;
  ref.teacherLogits.forEach((row, t) =>
    row.forEach((v, j) => worst = Math.max(worst, Math.abs(v - logits[t * 512 + j])))
  );
  assert.ok(worst < 1e-3, `max |Δlogit| ${worst}`);
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
    weights.layers[1].wq.forEach((v, i) =>
      assert.ok(Math.abs(v - ckpt.layers[1].wq[i]) <= tol * Math.abs(ckpt.layers[1].wq[i]) + 1e-7)
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
