import assert from "node:assert/strict";
import { relativeError } from "../kernels/testing/mod.ts";
import { type AdapterSet, loadAdapters, saveAdapters } from "./adapters/io.ts";
import { type AdapterConfig, createAdapter } from "./adapters/registry.ts";
import { randomizeParams } from "./adapters/testing.ts";
import { loadHfLlama, openHfSource, permuteRope } from "./hf.ts";
import type { LlamaWeights } from "./llama/weights.ts";
import { fromLlama2c, linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "./llama/config.ts";
import { type CpuAdapters, CpuLlama } from "./llama/cpu/model.ts";
import { hostSource } from "./llama/source.ts";
import { randomCheckpoint, TINY_CONFIG } from "./llama/testing.ts";
import { TARGET_MODULES, type TargetModule } from "./llama_shapes.ts";
import { writeMergedHf } from "./merged.ts";
import { exportPeft, importPeft, loadPeft, moduleDims, savePeft } from "./peft.ts";
import { encodeSafetensors, parseSafetensors } from "./safetensors.ts";
import { writeSyntheticHf } from "./synthetic.ts";

/** A tiny Hugging Face model (rotate_half RoPE, GQA) written as F32 files. */
const HF_TINY: LlamaConfig = {
  ...fromLlama2c({ ...TINY_CONFIG, vocab: 300 }),
  ropeTheta: 500000,
  ropeLayout: "half",
};
const IDS = [1, 17, 250, 3, 99, 42, 7, 280];

async function tinyHfFolder(): Promise<{ dir: string; weights: LlamaWeights }> {
  const dir = await Deno.makeTempDir();
  await writeSyntheticHf(dir, { config: HF_TINY, specials: "llama2" }, {
    seed: 9,
    dtype: "F32",
    shardBytes: 40_000,
  });
  return { dir, weights: (await loadHfLlama(dir)).weights };
}

const weightOf = (w: LlamaWeights, key: string) => {
  const [l, m] = key.split(".");
  return w.layers[Number(l)][LLAMA2C_WEIGHT[m as TargetModule]];
};

/** Adapters of `spec(key)` on `keys`, with random (nonzero) parameters. */
function makeAdapters(
  c: LlamaConfig,
  w: LlamaWeights,
  keys: string[],
  spec: (key: string) => unknown,
): AdapterSet {
  const out: AdapterSet = {};
  keys.forEach((key, i) => {
    const [dIn, dOut] = linearDims(c, key.split(".")[1] as TargetModule);
    const a = createAdapter(spec(key), dIn, dOut, i, weightOf(w, key));
    randomizeParams(a, 300 + i);
    out[key] = a;
  });
  return out;
}

const ALL_KEYS = [0, 1].flatMap((l) => TARGET_MODULES.map((m) => `${l}.${m}`));
const cpuAdapters = (set: AdapterSet): CpuAdapters =>
  new Map(Object.entries(set).map(([k, a]) => [k, { adapter: a, params: a.paramsF64() }]));

function assertSameAdapters(got: AdapterSet, want: AdapterSet) {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const [key, a] of Object.entries(want)) {
    const b = got[key];
    const { init: _i, ...ca } = a.config as AdapterConfig & { init?: string };
    const { init: _j, ...cb } = b.config as AdapterConfig & { init?: string };
    assert.deepEqual(cb, ca, `${key} config`);
    for (const s of a.specs()) {
      assert.deepEqual(b.params[s.name], a.params[s.name], `${key}.${s.name}`);
    }
  }
}

Deno.test("peft: LoRA, DoRA and LoKr export → import bit-exactly, per-module ranks in rank_pattern; MoKA and bad folders refused by name", async () => {
  const { dir, weights } = await tinyHfFolder();
  const specs: Record<string, (key: string) => unknown> = {
    lora: (key) =>
      key === "0.up" ? { kind: "lora", r: 3, alpha: 5 } : { kind: "lora", r: 2, alpha: 4 },
    dora: () => ({ kind: "dora", r: 2, alpha: 2, dropout: 0.05, rslora: true }),
    lokr: (key) => ({ kind: "lokr", r: key.endsWith(".q") ? 2 : 1, alpha: 1, decomposeBoth: true }),
  };
  for (const [kind, spec] of Object.entries(specs)) {
    const adapters = makeAdapters(HF_TINY, weights, ALL_KEYS, spec);
    const out = `${dir}/peft-${kind}`;
    await savePeft(out, adapters, HF_TINY, { baseModel: "tiny" });
    const config = JSON.parse(await Deno.readTextFile(`${out}/adapter_config.json`));
    assert.equal(config.peft_type, kind === "lokr" ? "LOKR" : "LORA");
    assert.equal(config.use_dora, kind === "lokr" ? undefined : kind === "dora");
    assert.deepEqual(config.target_modules, TARGET_MODULES.map((m) => `${m}_proj`));
    if (kind === "lora") {
      assert.deepEqual(config.rank_pattern, { "model.layers.0.mlp.up_proj": 3 });
      assert.deepEqual(config.alpha_pattern, { "model.layers.0.mlp.up_proj": 5 });
    }
    const file = parseSafetensors(await Deno.readFile(`${out}/adapter_model.safetensors`));
    const q0 = "base_model.model.model.layers.0.self_attn.q_proj";
    const names = [...file.entries.keys()];
    if (kind === "lokr") {
      // r 2 on q keeps w2 whole (not < max(4, 4)/2); r 1 elsewhere factors it.
      assert.ok(names.includes(`${q0}.lokr_w2`) && names.includes(`${q0}.lokr_w1`));
      const k0 = q0.replace("q_proj", "k_proj");
      assert.ok(names.includes(`${k0}.lokr_w1_a`) && names.includes(`${k0}.lokr_w2_a`));
    } else {assert.ok(
        names.includes(`${q0}.lora_A.weight`) && names.includes(`${q0}.lora_B.weight`),
      );}
    if (kind === "dora") assert.ok(names.includes(`${q0}.lora_magnitude_vector`));
    assertSameAdapters(await loadPeft(out, HF_TINY), adapters);
  }

  // A subset of modules is targeted by exact names, and only those are created on import.
  const subset = makeAdapters(HF_TINY, weights, ["1.v", "0.down"], specs.lora);
  const partial = exportPeft(subset, HF_TINY);
  assert.deepEqual(partial.config.target_modules, [
    "model.layers.0.mlp.down_proj",
    "model.layers.1.self_attn.v_proj",
  ]);
  const file = parseSafetensors(encodeSafetensors(partial.tensors));
  assertSameAdapters(importPeft(partial.config, file, HF_TINY), subset);

  // Refusals, each naming what is wrong.
  const moka = makeAdapters(HF_TINY, weights, ["0.q"], () => ({
    kind: "moka",
    components: [[2, 4], [4, 2]],
  }));
  assert.throws(() => exportPeft(moka, HF_TINY), /0\.q: moka has no PEFT adapter type/);
  assert.throws(
    () => importPeft({ ...partial.config, peft_type: "IA3" }, file, HF_TINY, "x"),
    /x\/adapter_config\.json: field peft_type: .*LORA or LOKR/,
  );
  assert.throws(
    () => importPeft({ ...partial.config, bias: "all" }, file, HF_TINY, "x"),
    /field bias/,
  );
  const missing = parseSafetensors(encodeSafetensors(partial.tensors.slice(1)));
  assert.throws(
    () => importPeft(partial.config, missing, HF_TINY, "x"),
    /x: missing base_model\.model\.model\.layers\.0\.mlp\.down_proj\.lora_A\.weight/,
  );
  assert.throws(
    () => importPeft({ ...partial.config, r: 4, rank_pattern: {} }, file, HF_TINY, "x"),
    /lora_A\.weight has shape \[2,24\], r = 4 .* implies \[4,24\]/,
  );
  assert.throws(
    () => importPeft({ ...partial.config, target_modules: ["v_proj"] }, file, HF_TINY, "x"),
    /x: no tensors for targeted module model\.layers\.0\.self_attn\.v_proj/,
  );
  const wide = { ...HF_TINY, hiddenDim: 32 };
  assert.throws(
    () => exportPeft(subset, wide),
    /0\.down: adapter is 24 → 16, the model's down is 32 → 16/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("peft: on a llama2.c (interleaved RoPE) model, q/k LoRA and DoRA rows are written in Hugging Face order; LoKr on q is refused", () => {
  const c = fromLlama2c(TINY_CONFIG);
  const w = randomCheckpoint(TINY_CONFIG, 8);
  const dora = makeAdapters(c, w, ["0.q", "1.k", "1.v"], () => ({ kind: "dora", r: 2, alpha: 4 }));
  const peft = exportPeft(dora, c);
  const byName = new Map(peft.tensors.map((t) => [t.name, t.data]));
  const k1 = "base_model.model.model.layers.1.self_attn.k_proj";
  const hs = c.dim / c.heads;
  assert.deepEqual(
    byName.get(`${k1}.lora_B.weight`),
    permuteRope(dora["1.k"].params.B, c.kvHeads, hs, 2, true),
  );
  assert.deepEqual(
    byName.get(`${k1}.lora_magnitude_vector`),
    permuteRope(dora["1.k"].params.magnitude, c.kvHeads, hs, 1, true),
  );
  assert.deepEqual(
    byName.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"),
    dora["1.v"].params.B,
  );
  const back = importPeft(peft.config, parseSafetensors(encodeSafetensors(peft.tensors)), c);
  assertSameAdapters(back, dora);
  const lokr = makeAdapters(c, w, ["0.q"], () => ({ kind: "lokr", r: 1, alpha: 1 }));
  assert.throws(() => exportPeft(lokr, c), /0\.q: LoKr on q\/k of an interleaved-RoPE/);
});

/** Independent reference merges, written from PEFT's definitions (not the kit's adapters). */
function loraMerged(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  r: number,
  dIn: number,
  scale: number,
) {
  const out = Float64Array.from(w);
  const dOut = w.length / dIn;
  for (let o = 0; o < dOut; o++) {
    for (let i = 0; i < dIn; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += b[o * r + k] * a[k * dIn + i];
      out[o * dIn + i] += scale * s;
    }
  }
  return out;
}

function kron(x: Float64Array, xr: number, xc: number, y: Float64Array, yr: number, yc: number) {
  const out = new Float64Array(xr * yr * xc * yc);
  for (let i = 0; i < xr; i++) {
    for (let j = 0; j < xc; j++) {
      for (let k = 0; k < yr; k++) {
        for (let l = 0; l < yc; l++) {
          out[(i * yr + k) * (xc * yc) + j * yc + l] = x[i * xc + j] * y[k * yc + l];
        }
      }
    }
  }
  return out;
}

Deno.test("peft: a folder written by hand with PEFT's names (BF16, old DoRA key) loads and computes PEFT's forward", async () => {
  const { dir, weights } = await tinyHfFolder();
  const rnd = (n: number, seed: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 131 + i * 7.3) * 0.3);
  const p = (l: number, part: string) =>
    `base_model.model.model.layers.${l}.${
      ["q", "k", "v", "o"].includes(part) ? "self_attn" : "mlp"
    }.${part}_proj`;
  const cases = [
    {
      // LoRA r 2, α 16 on q and v of every layer (scale 8).
      config: {
        peft_type: "LORA",
        r: 2,
        lora_alpha: 16,
        lora_dropout: 0.1,
        target_modules: ["q_proj", "v_proj"],
        bias: "none",
        task_type: "CAUSAL_LM",
        use_dora: false,
        fan_in_fan_out: false,
        modules_to_save: null,
      },
      modules: ["q", "v"],
      tensors: (l: number, m: string, dIn: number, dOut: number) => ({
        [`${p(l, m)}.lora_A.weight`]: [[2, dIn], rnd(2 * dIn, l * 10 + dIn)],
        [`${p(l, m)}.lora_B.weight`]: [[dOut, 2], rnd(2 * dOut, l * 10 + dOut + 1)],
      }),
      merge(w: Float32Array, t: Record<string, Float32Array>, l: number, m: string, dIn: number) {
        return loraMerged(
          w,
          t[`${p(l, m)}.lora_A.weight`],
          t[`${p(l, m)}.lora_B.weight`],
          2,
          dIn,
          8,
        );
      },
    },
    {
      // DoRA r 2, α 2, saved by an older PEFT (magnitude key ending in .weight), on o only.
      config: {
        peft_type: "LORA",
        r: 2,
        lora_alpha: 2,
        target_modules: ".*\\.o_proj",
        use_dora: true,
      },
      modules: ["o"],
      tensors: (l: number, m: string, dIn: number, dOut: number) => ({
        [`${p(l, m)}.lora_A.weight`]: [[2, dIn], rnd(2 * dIn, l + 3)],
        [`${p(l, m)}.lora_B.weight`]: [[dOut, 2], rnd(2 * dOut, l + 4)],
        [`${p(l, m)}.lora_magnitude_vector.weight`]: [[dOut], rnd(dOut, l + 5).map((v) => 1 + v)],
      }),
      merge(w: Float32Array, t: Record<string, Float32Array>, l: number, m: string, dIn: number) {
        const v = loraMerged(
          w,
          t[`${p(l, m)}.lora_A.weight`],
          t[`${p(l, m)}.lora_B.weight`],
          2,
          dIn,
          1,
        );
        const mag = t[`${p(l, m)}.lora_magnitude_vector.weight`];
        for (let o = 0; o < mag.length; o++) {
          const row = v.subarray(o * dIn, (o + 1) * dIn);
          const norm = Math.hypot(...row);
          row.forEach((x, i) => row[i] = (mag[o] * x) / norm);
        }
        return v;
      },
    },
    {
      // LoKr r 1, α 3 on the MLP: w1 whole, w2 low-rank (r < max(out_k, in_n)/2).
      config: {
        peft_type: "LOKR",
        r: 1,
        alpha: 3,
        target_modules: ["gate_proj", "up_proj", "down_proj"],
        rank_dropout: 0,
        module_dropout: 0,
        decompose_both: false,
        decompose_factor: -1,
      },
      modules: ["gate", "up", "down"],
      tensors: (l: number, m: string, dIn: number, dOut: number) => {
        const [outL, outK] = dOut === 24 ? [4, 6] : [4, 4];
        const [inM, inN] = dIn === 24 ? [4, 6] : [4, 4];
        return {
          [`${p(l, m)}.lokr_w1`]: [[outL, inM], rnd(outL * inM, l + dOut)],
          [`${p(l, m)}.lokr_w2_a`]: [[outK, 1], rnd(outK, l + dOut + 1)],
          [`${p(l, m)}.lokr_w2_b`]: [[1, inN], rnd(inN, l + dOut + 2)],
        };
      },
      merge(w: Float32Array, t: Record<string, Float32Array>, l: number, m: string, dIn: number) {
        const dOut = w.length / dIn;
        const [outL, outK] = dOut === 24 ? [4, 6] : [4, 4];
        const [inM, inN] = dIn === 24 ? [4, 6] : [4, 4];
        const w2 = kron(
          Float64Array.from(t[`${p(l, m)}.lokr_w2_a`]),
          outK,
          1,
          Float64Array.from(t[`${p(l, m)}.lokr_w2_b`]),
          1,
          inN,
        );
        const d = kron(Float64Array.from(t[`${p(l, m)}.lokr_w1`]), outL, inM, w2, outK, inN);
        return Float64Array.from(w, (x, i) => x + 3 * d[i]);
      },
    },
  ];
  for (const [n, c] of cases.entries()) {
    const entries: { name: string; shape: number[]; data: Float32Array; dtype: "BF16" }[] = [];
    for (let l = 0; l < HF_TINY.layers; l++) {
      for (const m of c.modules) {
        const [dIn, dOut] = linearDims(HF_TINY, m as TargetModule);
        for (const [name, [shape, data]] of Object.entries(c.tensors(l, m, dIn, dOut))) {
          entries.push({
            name,
            shape: shape as number[],
            data: data as Float32Array,
            dtype: "BF16",
          });
        }
      }
    }
    const folder = `${dir}/hand-${n}`;
    await Deno.mkdir(folder);
    await Deno.writeTextFile(`${folder}/adapter_config.json`, JSON.stringify(c.config));
    const bytes = encodeSafetensors(entries);
    await Deno.writeFile(`${folder}/adapter_model.safetensors`, bytes);
    const adapters = await loadPeft(folder, HF_TINY);
    // The oracle: the base with each module's W replaced by PEFT's merged weight, from the values
    // the file stores (BF16).
    const stored = parseSafetensors(bytes);
    const t = Object.fromEntries(entries.map((e) => [e.name, stored.tensor(e.name)]));
    const merged = { ...weights, layers: weights.layers.map((x) => ({ ...x })) };
    for (let l = 0; l < HF_TINY.layers; l++) {
      for (const m of c.modules) {
        const [dIn] = linearDims(HF_TINY, m as TargetModule);
        const key = LLAMA2C_WEIGHT[m as TargetModule];
        merged.layers[l][key] = Float32Array.from(c.merge(weights.layers[l][key], t, l, m, dIn));
      }
    }
    const want = new CpuLlama(HF_TINY, merged).forward(IDS).logits;
    const got = new CpuLlama(HF_TINY, weights).forward(IDS, cpuAdapters(adapters)).logits;
    const err = relativeError(got, want);
    assert.ok(err < 1e-6, `${c.config.peft_type} case ${n}: relative error ${err}`);
    const base = new CpuLlama(HF_TINY, weights).forward(IDS).logits;
    assert.ok(relativeError(base, want) > 1e-3, `case ${n}: the adapter changes the model`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("merged export: a Hugging Face checkpoint whose logits equal base + adapters; KronA on q is A⊗B added to q_proj in HF row order", async () => {
  const { dir, weights } = await tinyHfFolder();
  const source = await openHfSource(dir);
  const adapters = makeAdapters(
    HF_TINY,
    weights,
    ["0.q", "1.k", "1.up", "0.down"],
    (key) =>
      key === "0.q"
        ? { kind: "krona", a: [4, 4], scale: 0.5 }
        : key === "0.down"
        ? { kind: "dora", r: 2, alpha: 4 }
        : { kind: "moka", components: [[2, 4], [4, 2]] },
  );
  const out = `${dir}/merged`;
  await writeMergedHf(source, adapters, out, { baseDir: dir, shardBytes: 30_000 });
  source.close();
  const index = JSON.parse(await Deno.readTextFile(`${out}/model.safetensors.index.json`));
  assert.ok(new Set(Object.values(index.weight_map)).size > 1, "sharded");
  assert.equal(
    await Deno.readTextFile(`${out}/tokenizer.json`),
    await Deno.readTextFile(`${dir}/tokenizer.json`),
  );
  const loaded = await loadHfLlama(out);
  assert.deepEqual(loaded.config, HF_TINY);
  const want = new CpuLlama(HF_TINY, weights).forward(IDS, cpuAdapters(adapters)).logits;
  const got = new CpuLlama(loaded.config, loaded.weights).forward(IDS).logits;
  assert.ok(relativeError(got, want) < 1e-5, `logits: ${relativeError(got, want)}`);
  // Unadapted tensors are copied bit for bit.
  assert.deepEqual(loaded.weights.tokenEmbedding, weights.tokenEmbedding);
  assert.deepEqual(loaded.weights.layers[1].wq, weights.layers[1].wq);
  // q_proj = W_q + s·(A ⊗ B) in the file's own row order, from the factors directly.
  const { A, B } = adapters["0.q"].params;
  const d = kron(Float64Array.from(A), 4, 4, Float64Array.from(B), 4, 4);
  const wq = Float64Array.from(weights.layers[0].wq, (x, i) => x + 0.5 * d[i]);
  assert.ok(relativeError(loaded.weights.layers[0].wq, wq) < 1e-7);

  // A llama2.c source (interleaved RoPE): the export is in HF order and computes the same.
  const c = fromLlama2c({ ...TINY_CONFIG, vocab: 300 });
  const w = randomCheckpoint({ ...TINY_CONFIG, vocab: 300 }, 12);
  const lora = makeAdapters(c, w, ["0.q", "1.k", "0.v"], () => ({ kind: "lora", r: 2, alpha: 4 }));
  const out2 = `${dir}/merged-llama2c`;
  await writeMergedHf(hostSource(c, w), lora, out2, { dtype: "F32" });
  const back = await loadHfLlama(out2);
  assert.equal(back.config.ropeLayout, "half");
  const want2 = new CpuLlama(c, w).forward(IDS, cpuAdapters(lora)).logits;
  const got2 = new CpuLlama(back.config, back.weights).forward(IDS).logits;
  assert.ok(relativeError(got2, want2) < 1e-5, `llama2.c source: ${relativeError(got2, want2)}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("peft: NaN in adapter_model.safetensors is refused, naming the file and tensor; moduleDims checks a moka file's dims", async () => {
  const c = HF_TINY;
  const w = randomCheckpoint({ ...TINY_CONFIG, vocab: 300 }, 3);
  const weights = { layers: w.layers } as unknown as LlamaWeights;
  const set = makeAdapters(c, weights, ["0.q", "1.up"], () => ({ kind: "lora", r: 2, alpha: 4 }));
  const peft = exportPeft(set, c);
  const file = (poison: boolean) => {
    const tensors = peft.tensors.map((t) => ({ ...t, data: t.data.slice() }));
    if (poison) tensors[1].data[0] = NaN;
    return parseSafetensors(encodeSafetensors(tensors));
  };
  // Positive control.
  assert.equal(Object.keys(importPeft(peft.config, file(false), c, "p")).length, 2);
  assert.throws(
    () => importPeft(peft.config, file(true), c, "p"),
    new RegExp(
      `p/adapter_model\\.safetensors: tensor "${
        peft.tensors[1].name.replaceAll(".", "\\.")
      }" holds 1 non-finite value`,
    ),
  );
  // A moka adapter file is checked against the model's module dims as it loads.
  const dir = await Deno.makeTempDir();
  await saveAdapters(`${dir}/a.safetensors`, set);
  assert.equal(
    Object.keys(await loadAdapters(`${dir}/a.safetensors`, { dims: moduleDims(c) })).length,
    2,
  );
  const small = { ...c, layers: 1 };
  await assert.rejects(
    loadAdapters(`${dir}/a.safetensors`, { dims: moduleDims(small) }),
    /a\.safetensors: layer 1\.up: the model has 1 layers/,
  );
  await Deno.remove(dir, { recursive: true });
});
