import assert from "node:assert/strict";
import { randomF32 } from "../../kernels/testing/mod.ts";
import { encodeSafetensors, parseSafetensors } from "../safetensors.ts";
import { decodeAdapters, encodeAdapters, loadAdapters, saveAdapters } from "./io.ts";
import { createAdapter } from "./registry.ts";
import { randomizeParams } from "./testing.ts";

function sampleSet() {
  const w = randomF32(12 * 8, 3);
  const set = {
    "layers.0.attention.wq": createAdapter(
      { kind: "moka", components: [[2, 3], [4, 2]] },
      12,
      8,
      1,
    ),
    "layers.0.attention.wk": createAdapter(
      { kind: "lora", r: 2, alpha: 4, dropout: 0.1 },
      12,
      8,
      2,
    ),
    "layers.0.attention.wv": createAdapter({ kind: "dora", r: 2, alpha: 4 }, 12, 8, 3, w),
    "layers.1.feed_forward.w1": createAdapter(
      { kind: "lokr", r: 1, alpha: 1, decomposeBoth: true },
      12,
      8,
      4,
    ),
    "layers.1.feed_forward.w3": createAdapter({ kind: "krona", a: [4, 4] }, 12, 8, 5),
  };
  Object.values(set).forEach((a, i) => randomizeParams(a, 10 + i));
  return set;
}

Deno.test("io: save → load round trip is bit-exact for every adapter kind", async () => {
  const set = sampleSet();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/adapters.safetensors`;
  await saveAdapters(path, set);
  const back = await loadAdapters(path);
  assert.deepEqual(Object.keys(back), Object.keys(set));
  for (const [name, a] of Object.entries(set)) {
    const b = back[name];
    assert.deepEqual(b.config, a.config);
    assert.equal(b.dIn, a.dIn);
    for (const [k, v] of Object.entries(a.params)) {
      assert.deepEqual(
        new Uint32Array(b.params[k].buffer),
        new Uint32Array(v.buffer),
        `${name}.${k}`,
      );
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("io: truncated, corrupt, foreign and mismatched files are rejected with the reason", () => {
  const bytes = encodeAdapters(sampleSet());
  assert.throws(
    () => decodeAdapters(bytes.subarray(0, bytes.length - 4), "a.st"),
    /a\.st: .*ends at byte|a\.st: .*bytes after/,
  );
  assert.throws(() => decodeAdapters(bytes.subarray(0, 5), "a.st"), /too short/);
  const garbage = bytes.slice();
  garbage[12] = 0xff;
  assert.throws(() => decodeAdapters(garbage, "a.st"), /a\.st: header is not valid UTF-8 JSON/);

  const meta = (m: Record<string, string>) =>
    encodeSafetensors([{ name: "x.A", shape: [2, 2], data: new Float32Array(4) }], m);
  assert.throws(() => decodeAdapters(meta({}), "b.st"), /not a moka adapter file/);
  assert.throws(
    () => decodeAdapters(meta({ format: "moka-adapters", version: "0" }), "b.st"),
    /version "0", this moka reads version 1/,
  );
  const wrongShape = encodeSafetensors(
    [{ name: "x.A", shape: [3, 4], data: new Float32Array(12) }, {
      name: "x.B",
      shape: [4, 3],
      data: new Float32Array(12),
    }],
    {
      format: "moka-adapters",
      version: "1",
      layers: JSON.stringify({ x: { config: { kind: "lora", r: 2, alpha: 1 }, dIn: 4, dOut: 4 } }),
    },
  );
  assert.throws(
    () => decodeAdapters(wrongShape, "c.st"),
    /c\.st: tensor "x\.A" has shape \[3,4\], the config implies \[2,4\]/,
  );
  const badConfig = encodeSafetensors([], {
    format: "moka-adapters",
    version: "1",
    layers: JSON.stringify({ x: { config: { kind: "lora", r: -2, alpha: 1 }, dIn: 4, dOut: 4 } }),
  });
  assert.throws(
    () => decodeAdapters(badConfig, "d.st"),
    /^Error: d\.st: layer x config: field r: /,
  );
  const stray = encodeSafetensors([{ name: "y.A", shape: [1], data: new Float32Array(1) }], {
    format: "moka-adapters",
    version: "1",
    layers: "{}",
  });
  assert.throws(() => decodeAdapters(stray, "e.st"), /not described by the metadata: y\.A/);
});

Deno.test("safetensors: header validation and F16/BF16 decoding", () => {
  const header = (h: unknown, data: number[]) => {
    const json = new TextEncoder().encode(JSON.stringify(h));
    const out = new Uint8Array(8 + json.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(data, 8 + json.length);
    return out;
  };
  // 1.5 in f16 is 0x3e00; in bf16 0x3fc0. -2 in f16 is 0xc000; in bf16 0xc000.
  const f = parseSafetensors(header({
    h: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
    b: { dtype: "BF16", shape: [2], data_offsets: [4, 8] },
  }, [0x00, 0x3e, 0x00, 0xc0, 0xc0, 0x3f, 0x00, 0xc0]));
  assert.deepEqual([...f.tensor("h")], [1.5, -2]);
  assert.deepEqual([...f.tensor("b")], [1.5, -2]);
  assert.throws(
    () =>
      parseSafetensors(
        header({ a: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }, [0, 0, 0, 0]),
        "f",
      ),
    /f: tensor "a": offsets \[0, 4\] hold 4 bytes, F32\[2\] needs 8/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        header({
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
          b: { dtype: "F32", shape: [1], data_offsets: [2, 6] },
        }, [0, 0, 0, 0, 0, 0]),
        "g",
      ),
    /overlapping/,
  );
  assert.throws(
    () => parseSafetensors(header({ a: { dtype: "I8", shape: [1], data_offsets: [0, 1] } }, [0])),
    /dtype I8/,
  );
});

Deno.test("io: NaN or Inf in an adapter file is refused, naming the file and the tensor", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/adapters.safetensors`;
  // Positive control: the clean twin loads.
  await saveAdapters(path, sampleSet());
  assert.equal(Object.keys(await loadAdapters(path)).length, 5);
  for (const bad of [NaN, Infinity, -Infinity]) {
    const set = sampleSet();
    set["layers.0.attention.wk"].params.B[3] = bad;
    await saveAdapters(path, set);
    await assert.rejects(
      loadAdapters(path),
      new RegExp(
        `adapters\\.safetensors: tensor "layers\\.0\\.attention\\.wk\\.B" holds 1 ` +
          `non-finite value of 16 \\(first: ${bad} at index 3\\)`,
      ),
    );
  }
  const set = sampleSet();
  set["layers.0.attention.wv"].params.magnitude[0] = NaN;
  assert.throws(
    () => decodeAdapters(encodeAdapters(set), "dora.st"),
    /dora\.st: tensor "layers\.0\.attention\.wv\.magnitude" holds 1 non-finite/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("io: a 1 KB file declaring DoRA on 20000 × 20000 is refused at once, before any allocation", () => {
  const file = (dIn: number, dOut: number) =>
    encodeSafetensors([
      { name: "x.A", shape: [2, 2], data: new Float32Array(4) },
      { name: "x.B", shape: [2, 2], data: new Float32Array(4) },
      { name: "x.magnitude", shape: [2], data: new Float32Array([1, 1]) },
    ], {
      format: "moka-adapters",
      version: "1",
      layers: JSON.stringify({ x: { config: { kind: "dora", r: 2, alpha: 4 }, dIn, dOut } }),
    });
  const bytes = file(20000, 20000);
  assert.ok(bytes.length < 1024);
  const rss = Deno.memoryUsage().rss;
  const t0 = performance.now();
  assert.throws(
    () => decodeAdapters(bytes, "huge.st"),
    /huge\.st: layer x declares dora on 20000 → 20000 with 100000 parameters \(100000 so far\), the file holds 10 values in all/,
  );
  assert.ok(performance.now() - t0 < 500, "refused at once");
  assert.ok(Deno.memoryUsage().rss - rss < 256 * 2 ** 20, "nothing large was allocated");
  // Positive control: the same tensors declared at the dims they fit.
  const ok = decodeAdapters(file(2, 2), "ok.st");
  assert.equal(ok.x.dIn, 2);
  // Dims past any model's are refused by the metadata schema, naming the field.
  assert.throws(
    () => decodeAdapters(file(2 ** 21, 2), "wide.st"),
    /^Error: wide\.st: __metadata__\.layers: field x\.dIn: Too big/,
  );
});

Deno.test("io: declared dims are checked against the model's modules before anything is built", async () => {
  const set = sampleSet();
  const bytes = encodeAdapters(set);
  const dims = (layer: string): [number, number] => {
    if (!(layer in set)) throw new Error(`no module ${layer}`);
    return [12, 8];
  };
  // Positive control: the model's dims match.
  assert.equal(Object.keys(decodeAdapters(bytes, "m.st", { dims })).length, 5);
  assert.throws(
    () => decodeAdapters(bytes, "m.st", { dims: () => [12, 16] }),
    /m\.st: layer layers\.0\.attention\.wq declares 12 → 8, the model's module is 12 → 16/,
  );
  assert.throws(
    () => decodeAdapters(bytes, "m.st", { dims: (l) => l.endsWith("w3") ? dims("none") : [12, 8] }),
    /m\.st: layer layers\.1\.feed_forward\.w3: no module none/,
  );
  const dir = await Deno.makeTempDir();
  await saveAdapters(`${dir}/a.safetensors`, set);
  await assert.rejects(
    loadAdapters(`${dir}/a.safetensors`, { dims: () => [8, 12] }),
    /a\.safetensors: layer .* declares 12 → 8, the model's module is 8 → 12/,
  );
  await Deno.remove(dir, { recursive: true });
});
