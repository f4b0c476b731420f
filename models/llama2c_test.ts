import assert from "node:assert/strict";
import { defaultModelPath } from "../testing/paths.ts";
import { llama2cLayout, loadLlama2c, parseLlama2c } from "./llama2c.ts";

Deno.test("llama2c: stories260K loads with the README's dimensions", async () => {
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  assert.deepEqual(ckpt.config, {
    dim: 64,
    hiddenDim: 172,
    layers: 5,
    heads: 8,
    kvHeads: 4,
    vocab: 512,
    seqLen: 512,
    sharedClassifier: true,
  });
  assert.equal(ckpt.layers[4].wk.length, 32 * 64);
  assert.equal(ckpt.classifier, ckpt.tokenEmbedding);
  assert.ok(ckpt.layers[0].wq.some((x) => x !== 0));
});

Deno.test("llama2c: truncated, padded, corrupt and foreign files are rejected", async () => {
  const bytes = await Deno.readFile(defaultModelPath("stories260K.bin"));
  assert.throws(
    () => parseLlama2c(bytes.subarray(0, bytes.length - 4), "s.bin"),
    /s\.bin: .* \(truncated\)/,
  );
  const padded = new Uint8Array(bytes.length + 4);
  padded.set(bytes);
  assert.throws(() => parseLlama2c(padded, "s.bin"), /trailing data/);
  const nan = bytes.slice();
  new DataView(nan.buffer).setFloat32(28 + 4 * 100, NaN, true);
  assert.throws(() => parseLlama2c(nan, "s.bin"), /tokenEmbedding\[100\] is NaN/);
  const header = bytes.slice(0, 28);
  new DataView(header.buffer).setInt32(12, 7, true); // heads = 7
  assert.throws(() => parseLlama2c(header, "s.bin"), /need dim % heads = 0/);
  assert.throws(
    () => parseLlama2c(new TextEncoder().encode('{"not": "a model"}\n1234567890'), "x.json"),
    /x\.json: header field/,
  );
  assert.equal(llama2cLayout(parseLlama2c(bytes).config).at(-1)!.count, 0, "shared classifier");
});
