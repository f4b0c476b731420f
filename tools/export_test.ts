import assert from "node:assert/strict";
import { relativeError } from "../kernels/testing/mod.ts";
import { saveAdapters } from "../models/adapters/io.ts";
import type { AdapterSet } from "../models/adapters/io.ts";
import { createAdapter } from "../models/adapters/registry.ts";
import { randomizeParams } from "../models/adapters/testing.ts";
import { loadHfLlama } from "../models/hf.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { fromLlama2c, linearDims, LLAMA2C_WEIGHT } from "../models/llama/config.ts";
import { CpuLlama } from "../models/llama/cpu/model.ts";
import type { TargetModule } from "../models/llama_shapes.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { loadPeft } from "../models/peft.ts";
import { HfTokenizer } from "../models/tokenizer/hf.ts";

async function exportTool(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "tools/export.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("export tool: a run's LoRA file on stories260K → PEFT folder and merged HF checkpoint that compute the same model", async () => {
  const modelPath = defaultModelPath("stories260K.bin");
  const ckpt = await loadLlama2c(modelPath);
  const config = fromLlama2c(ckpt.config);
  const adapters: AdapterSet = {};
  ["0.q", "2.k", "4.up"].forEach((key, i) => {
    const m = key.split(".")[1] as TargetModule;
    const [dIn, dOut] = linearDims(config, m);
    const w = ckpt.layers[Number(key[0])][LLAMA2C_WEIGHT[m]];
    const a = createAdapter({ kind: "lora", r: 4, alpha: 8 }, dIn, dOut, i, w);
    randomizeParams(a, 70 + i);
    adapters[key] = a;
  });
  const dir = await Deno.makeTempDir();
  await saveAdapters(`${dir}/adapters.safetensors`, adapters);

  const peft = await exportTool(
    "--adapters",
    `${dir}/adapters.safetensors`,
    "--peft",
    "--out",
    `${dir}/peft`,
  );
  assert.equal(peft.code, 0, peft.stderr);
  const back = await loadPeft(`${dir}/peft`, config);
  for (const [key, a] of Object.entries(adapters)) assert.deepEqual(back[key].params, a.params);

  const merged = await exportTool("--adapters", `${dir}/peft`, "--merge", "--out", `${dir}/merged`);
  assert.equal(merged.code, 0, merged.stderr);
  const hf = await loadHfLlama(`${dir}/merged`);
  const ids = [1, 403, 407, 261, 378, 24, 300];
  const cpuAdapters = new Map(
    Object.entries(adapters).map(([k, a]) => [k, { adapter: a, params: a.paramsF64() }]),
  );
  const want = new CpuLlama(config, ckpt).forward(ids, cpuAdapters).logits;
  const got = new CpuLlama(hf.config, hf.weights).forward(ids).logits;
  assert.ok(relativeError(got, want) < 1e-5, `merged logits: ${relativeError(got, want)}`);
  // The llama2.c vocabulary travels as tokenizer.json and encodes alike.
  const tok = await HfTokenizer.load(`${dir}/merged`);
  assert.equal(tok.size, config.vocab);

  const bad = await exportTool("--adapters", `${dir}/adapters.safetensors`, "--out", `${dir}/x`);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /exactly one of --peft, --merge/);
  await Deno.remove(dir, { recursive: true });
});
