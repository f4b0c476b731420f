/**
 * Hostile inputs to the checkpoint, adapter and tokenizer readers: each is refused with one line
 * naming the file (and the tensor or field), before anything large is allocated.
 */
import assert from "node:assert/strict";
import { decodeAdapters, loadAdapters } from "./adapters/io.ts";
import { createAdapter, parseAdapterConfig, parseAdapterSpec } from "./adapters/registry.ts";
import { openHfSource } from "./hf.ts";
import { fromLlama2c } from "./llama/config.ts";
import { TINY_CONFIG } from "./llama/testing.ts";
import { loadPeft, savePeft } from "./peft.ts";
import { encodeSafetensors, parseSafetensors, SafetensorsReader } from "./safetensors.ts";
import { writeSyntheticHf } from "./synthetic.ts";
import { HfTokenizer } from "./tokenizer/hf.ts";

/** Safetensors bytes around a header given as raw text (what a writer would never produce). */
function rawHeaderFile(headerText: string, dataBytes = 0): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

const entry = (begin: number, end: number) =>
  `{"dtype":"F32","shape":[${(end - begin) / 4}],"data_offsets":[${begin},${end}]}`;

/** One line: no newline, no zod JSON (`[{`), the prefix said once. */
function assertOneLine(message: string, prefix: string) {
  assert.ok(!message.includes("\n"), `one line: ${message}`);
  assert.ok(!message.includes("[\n") && !message.includes('"code"'), `no zod JSON: ${message}`);
  assert.equal(message.split(prefix).length - 1, 1, `"${prefix}" once: ${message}`);
}

Deno.test("safetensors hostile: a tensor named twice is refused, naming the file and the name", () => {
  // Positive control.
  parseSafetensors(rawHeaderFile(`{"a":${entry(0, 4)},"b":${entry(4, 8)}}`, 8), "ok.st");
  assert.throws(
    () => parseSafetensors(rawHeaderFile(`{"a":${entry(0, 4)},"a":${entry(4, 8)}}`, 8), "d.st"),
    /^Error: d\.st: tensor "a" appears twice in the header$/,
  );
  // Escaped spellings of one name are one name.
  assert.throws(
    () =>
      parseSafetensors(rawHeaderFile(`{"a":${entry(0, 4)},"\\u0061":${entry(4, 8)}}`, 8), "e.st"),
    /e\.st: tensor "a" appears twice/,
  );
  // Inside an entry and inside __metadata__ as well: the last would win silently.
  assert.throws(
    () =>
      parseSafetensors(
        rawHeaderFile(
          `{"a":{"dtype":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
          4,
        ),
        "f.st",
      ),
    /f\.st: tensor "a": field "dtype" appears twice/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawHeaderFile(`{"__metadata__":{"k":"1","k":"2"},"a":${entry(0, 4)}}`, 4),
        "g.st",
      ),
    /g\.st: __metadata__: key "k" appears twice/,
  );
});

Deno.test("safetensors hostile: __proto__, constructor and prototype are refused as names and keys", () => {
  for (const name of ["__proto__", "constructor", "prototype"]) {
    assert.throws(
      () => parseSafetensors(rawHeaderFile(`{"${name}":${entry(0, 4)}}`, 4), "p.st"),
      new RegExp(`^Error: p\\.st: tensor name "${name}" is reserved`),
      name,
    );
    assert.throws(
      () =>
        parseSafetensors(
          rawHeaderFile(`{"__metadata__":{"${name}":"x"},"a":${entry(0, 4)}}`, 4),
          "m.st",
        ),
      new RegExp(`^Error: m\\.st: __metadata__: key "${name}" is reserved`),
      name,
    );
  }
  assert.equal(Object.getPrototypeOf({}).polluted, undefined);
});

Deno.test("safetensors hostile: NaN/Inf are refused when a tensor is decoded, and in every tensor with { finite: true }", () => {
  const bad = encodeSafetensors([
    { name: "ok", shape: [2], data: new Float32Array([1, 2]) },
    { name: "skipped", shape: [3], data: new Float32Array([0, NaN, Infinity]), dtype: "BF16" },
  ]);
  // The header is sound: a reader that never decodes "skipped" opens it...
  const f = parseSafetensors(bad, "n.st");
  assert.deepEqual([...f.tensor("ok")], [1, 2]);
  // ...but decoding it is refused by name,
  assert.throws(
    () => f.tensor("skipped"),
    /n\.st: tensor "skipped" holds 2 non-finite values of 3 \(first: NaN at index 1\)/,
  );
  // and a whole-container check refuses it at once, whether or not anyone reads it.
  assert.throws(
    () => parseSafetensors(bad, "n.st", { finite: true }),
    /n\.st: tensor "skipped" holds 2 non-finite values of 3 \(first: NaN at index 1\)/,
  );
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    assert.throws(
      () =>
        parseSafetensors(
          encodeSafetensors([{
            name: "t",
            shape: [2],
            data: new Float32Array([1, -Infinity]),
            dtype,
          }]),
          `${dtype}.st`,
          { finite: true },
        ),
      new RegExp(`${dtype}\\.st: tensor "t" holds 1 non-finite value of 2 \\(first: -Infinity`),
    );
  }
  parseSafetensors(
    encodeSafetensors([{
      name: "t",
      shape: [2],
      data: new Float32Array([1, 65504]),
      dtype: "F16",
    }]),
    "ok.st",
    { finite: true },
  );
});

Deno.test("safetensors hostile: a header of 100 MB of whitespace is refused after a bounded read", async () => {
  const size = 100 * 1024 * 1024;
  const header = new Uint8Array(size).fill(0x20);
  header.set(new TextEncoder().encode(`{"a":${entry(0, 4)}`), 0);
  header[size - 1] = 0x7d; // }
  const file = new Uint8Array(8 + size + 4);
  new DataView(file.buffer).setBigUint64(0, BigInt(size), true);
  file.set(header, 8);
  const t0 = performance.now();
  assert.throws(
    () => parseSafetensors(file, "ws.st"),
    /^Error: ws\.st: header holds \d+ bytes of whitespace before byte \d+ \(at most/,
  );
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/ws.safetensors`, file);
  await assert.rejects(
    SafetensorsReader.open(`${dir}/ws.safetensors`),
    /ws\.safetensors: header holds/,
  );
  assert.ok(performance.now() - t0 < 3000, `${performance.now() - t0} ms`);
  // Padding and a pretty-printed header are fine.
  const pretty = JSON.stringify({ a: JSON.parse(entry(0, 4)) }, null, 2) + " ".repeat(7);
  parseSafetensors(rawHeaderFile(pretty, 4), "pretty.st");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors hostile: 200,000 entries in a tiny file are refused before the JSON is parsed", async () => {
  const parts = ['"__metadata__":{}'];
  for (let i = 0; i < 200_000; i++) {
    parts.push(`"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
  }
  const bytes = rawHeaderFile(`{${parts.join(",")}}`, 0);
  const t0 = performance.now();
  assert.throws(
    () => parseSafetensors(bytes, "many.st"),
    /^Error: many\.st: header declares more than \d+ tensors, a 0-byte data section holds at most \d+/,
  );
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/many.safetensors`, bytes);
  await assert.rejects(
    SafetensorsReader.open(`${dir}/many.safetensors`),
    /many\.safetensors: header declares more than/,
  );
  assert.ok(performance.now() - t0 < 1500, `${performance.now() - t0} ms`);
  // Positive control: a few empty tensors beside real ones.
  parseSafetensors(
    rawHeaderFile(`{"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":${entry(0, 4)}}`, 4),
    "few.st",
  );
  await Deno.remove(dir, { recursive: true });
});

/** A byte-level-free BPE tokenizer.json over a tiny vocabulary. */
function tinyTokenizer(merges: string[]): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2, a: 3, b: 4, ab: 5 };
  return {
    version: "1.0",
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    model: { type: "BPE", unk_token: "<unk>", vocab, merges },
  };
}

Deno.test("tokenizer hostile: a merge naming a token outside the vocabulary is refused by file and merge", () => {
  new HfTokenizer(tinyTokenizer(["a b"]), {}, "ok/tokenizer.json");
  assert.throws(
    () => new HfTokenizer(tinyTokenizer(["a b", "a c"]), {}, "m/tokenizer.json"),
    /^Error: m\/tokenizer\.json: model\.merges\[1\] "a c": "c" is not in the vocabulary$/,
  );
  assert.throws(
    () => new HfTokenizer(tinyTokenizer(["b a"]), {}, "m/tokenizer.json"),
    /m\/tokenizer\.json: model\.merges\[0\] "b a": the merged token "ba" is not in the vocabulary/,
  );
  // The pair form newer files use.
  assert.throws(
    () => new HfTokenizer(tinyTokenizer([["a", "zz"]] as unknown as string[]), {}, "p.json"),
    /p\.json: model\.merges\[0\] "a zz": "zz" is not in the vocabulary/,
  );
  assert.throws(
    () => new HfTokenizer(tinyTokenizer(["ab"]), {}, "q.json"),
    /q\.json: model\.merges\[0\] "ab" is not two tokens separated by one space/,
  );
});

Deno.test("tokenizer hostile: without decoder or post_processor the error names the file and field", () => {
  for (const field of ["decoder", "post_processor", "normalizer", "pre_tokenizer"]) {
    const json = tinyTokenizer(["a b"]);
    delete json[field];
    assert.throws(
      () => new HfTokenizer(json, {}, "x/tokenizer.json"),
      new RegExp(`^Error: x/tokenizer\\.json: field ${field}: missing \\(null when unused\\)`),
      field,
    );
  }
  // Whatever the tokenizer package itself throws carries the file's name too.
  const json = tinyTokenizer(["a b"]);
  json.decoder = { type: "NoSuchDecoder" };
  assert.throws(
    () => new HfTokenizer(json, {}, "y/tokenizer.json"),
    /^Error: y\/tokenizer\.json: /,
  );
});

Deno.test("adapter hostile: dims of 1e9 and a negative rank say file: where: what in one line", () => {
  const layers = (l: unknown) =>
    encodeSafetensors([], { format: "moka-adapters", version: "1", layers: JSON.stringify(l) });
  let e = assert.throws(
    () =>
      decodeAdapters(
        layers({ x: { config: { kind: "lora", r: 2, alpha: 1 }, dIn: 1e9, dOut: 4 } }),
        "big.st",
      ),
    /^Error: big\.st: __metadata__\.layers: field x\.dIn: /,
  ) as unknown;
  try {
    decodeAdapters(
      layers({ x: { config: { kind: "lora", r: 2, alpha: 1 }, dIn: 1e9, dOut: 4 } }),
      "big.st",
    );
  } catch (err) {
    e = err;
  }
  assertOneLine((e as Error).message, "big.st");
  try {
    decodeAdapters(
      layers({ x: { config: { kind: "lora", r: -2, alpha: 1 }, dIn: 4, dOut: 4 } }),
      "neg.st",
    );
    assert.fail("accepted");
  } catch (err) {
    const m = (err as Error).message;
    assert.match(m, /^neg\.st: layer x config: field r: /);
    assertOneLine(m, "neg.st");
    assertOneLine(m, "config");
  }
  for (
    const f of [
      () => parseAdapterConfig({ kind: "lora", r: -1, alpha: 1 }),
      () => parseAdapterSpec({ kind: "lora", r: -1, alpha: 1 }),
    ]
  ) {
    try {
      f();
      assert.fail("accepted");
    } catch (err) {
      const m = (err as Error).message;
      assert.match(m, /^adapter config: field r: /);
      assertOneLine(m, "adapter config");
    }
  }
  try {
    parseAdapterSpec({ kind: "lora", r: 2, alpha: 1, modules: { up: { r: -3 } } }, "spec.json");
    assert.fail("accepted");
  } catch (err) {
    const m = (err as Error).message;
    assert.match(m, /^spec\.json: field modules\.up\.r: /);
    assertOneLine(m, "spec.json");
  }
  try {
    createAdapter({ kind: "lora", r: 0, alpha: 1 }, 4, 4, 1);
    assert.fail("accepted");
  } catch (err) {
    assertOneLine((err as Error).message, "adapter config");
  }
});

Deno.test("hf hostile: a shard named by the index that is missing says so, naming both files", async () => {
  const c = { ...fromLlama2c({ ...TINY_CONFIG, vocab: 300 }), ropeLayout: "half" as const };
  const dir = await Deno.makeTempDir();
  await writeSyntheticHf(dir, { config: c, specials: "llama2" }, {
    seed: 3,
    dtype: "F32",
    shardBytes: 20_000,
  });
  (await openHfSource(dir)).close();
  const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
  const shard = Object.values(index.weight_map as Record<string, string>)[0];
  await Deno.remove(`${dir}/${shard}`);
  await assert.rejects(
    openHfSource(dir),
    new RegExp(
      `^NotFound: ${dir}/${shard}: missing \\(named by model\\.safetensors\\.index\\.json\\)$`,
    ),
  );
  await Deno.remove(`${dir}/model.safetensors.index.json`);
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".safetensors")) await Deno.remove(`${dir}/${e.name}`);
  }
  await assert.rejects(
    openHfSource(dir),
    new RegExp(
      `^NotFound: ${dir}/model\\.safetensors: missing \\(no model\\.safetensors\\.index\\.json either\\)$`,
    ),
  );
  await Deno.remove(`${dir}/config.json`);
  await assert.rejects(
    openHfSource(dir),
    new RegExp(
      `^NotFound: ${dir}/config\\.json: missing \\(every Hugging Face model folder has one\\)$`,
    ),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("peft hostile: a missing adapter file says which, and that adapter_config.json names it", async () => {
  const c = { ...fromLlama2c(TINY_CONFIG), ropeLayout: "half" as const };
  const set = {
    "0.q": createAdapter({ kind: "lora", r: 2, alpha: 4 }, c.dim, c.dim, 1),
  };
  const dir = await Deno.makeTempDir();
  await savePeft(dir, set, c);
  await loadPeft(dir, c);
  await Deno.remove(`${dir}/adapter_model.safetensors`);
  await assert.rejects(
    loadPeft(dir, c),
    new RegExp(
      `^NotFound: ${dir}/adapter_model\\.safetensors: missing \\(beside adapter_config\\.json\\)$`,
    ),
  );
  await Deno.remove(`${dir}/adapter_config.json`);
  await assert.rejects(
    loadPeft(dir, c),
    new RegExp(`^NotFound: ${dir}/adapter_config\\.json: missing \\(not a PEFT adapter folder\\)$`),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("adapter hostile: a missing moka adapter file says so by path, still a NotFound", async () => {
  const dir = await Deno.makeTempDir();
  const err = await loadAdapters(`${dir}/none.safetensors`).catch((e) => e);
  assert.ok(err instanceof Deno.errors.NotFound);
  assert.equal(err.message, `${dir}/none.safetensors: missing (named as the adapter file)`);
  await Deno.remove(dir);
});
