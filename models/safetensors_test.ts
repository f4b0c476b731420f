import assert from "node:assert/strict";
import {
  assertFinite,
  decodeToF32,
  encodeElements,
  encodeSafetensors,
  parseSafetensors,
  planShards,
  SafetensorsReader,
  SafetensorsWriter,
} from "./safetensors.ts";

/** Safetensors bytes with a hand-written header (declarations that the writer would refuse). */
function rawFile(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

Deno.test("safetensors: the streaming writer gives encodeSafetensors' bytes; misuse leaves no file", async () => {
  const a = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i) * 1e3);
  const b = Float32Array.from({ length: 5 }, (_, i) => 1 / (i + 3));
  const tensors = [
    { name: "a", shape: [3, 4], data: a, dtype: "BF16" as const },
    { name: "b", shape: [5], data: b, dtype: "F16" as const },
  ];
  const dir = await Deno.makeTempDir();
  const path = `${dir}/x.safetensors`;
  const w = await SafetensorsWriter.create(path, tensors, { format: "pt" });
  const aBytes = encodeElements(a, "BF16");
  await w.write("a", aBytes.subarray(0, 10)); // in pieces
  await w.write("a", aBytes.subarray(10));
  await w.write("b", encodeElements(b, "F16"));
  await w.finish();
  const bytes = await Deno.readFile(path);
  assert.deepEqual(bytes, encodeSafetensors(tensors, { format: "pt" }));
  const f = parseSafetensors(bytes);
  // BF16 keeps 8 bits of mantissa: round to nearest even.
  f.tensor("a").forEach((v, i) => assert.ok(Math.abs(v - a[i]) <= Math.abs(a[i]) * 2 ** -8));

  const bad = await SafetensorsWriter.create(`${dir}/y.safetensors`, tensors);
  await assert.rejects(bad.write("b", new Uint8Array(10)), /got bytes of "b", expected "a"/);
  await bad.write("a", aBytes);
  await assert.rejects(bad.finish(), /"b" was not written in full/);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["x.safetensors"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: shards are filled in order and named as Hugging Face names them", () => {
  const plan = [8, 8, 20, 4].map((n, i) => ({ name: `t${i}`, shape: [n], dtype: "F32" as const }));
  const shards = planShards(plan, 64);
  assert.deepEqual(shards.map((s) => [s.file, s.tensors.map((t) => t.name)]), [
    ["model-00001-of-00003.safetensors", ["t0", "t1"]],
    ["model-00002-of-00003.safetensors", ["t2"]],
    ["model-00003-of-00003.safetensors", ["t3"]],
  ]);
  assert.equal(planShards(plan, 1e9)[0].file, "model.safetensors");
});

Deno.test("safetensors: a 1 KB file declaring F32[20000, 20000] is refused at once, naming file, tensor and sizes", async () => {
  const header = {
    __metadata__: { format: "pt" },
    "model.embed_tokens.weight": { dtype: "F32", shape: [20000, 20000], data_offsets: [0, 1000] },
  };
  const bytes = rawFile(header, 1000);
  assert.ok(bytes.length < 1200);
  const message =
    /big\.safetensors: tensor "model\.embed_tokens\.weight": F32\[20000, 20000\] declares 1600000000 bytes, the file's data section holds only 1000/;
  const t0 = performance.now();
  assert.throws(() => parseSafetensors(bytes, "big.safetensors"), message);
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/big.safetensors`, bytes);
  await assert.rejects(SafetensorsReader.open(`${dir}/big.safetensors`), message);
  assert.ok(performance.now() - t0 < 1000, "refused before any allocation");
  // Positive control: the same tensor at a size the file holds.
  const ok = rawFile({
    "model.embed_tokens.weight": { dtype: "F32", shape: [10, 25], data_offsets: [0, 1000] },
  }, 1000);
  assert.equal(
    parseSafetensors(ok, "ok.safetensors").tensor("model.embed_tokens.weight").length,
    250,
  );
  const reader = await SafetensorsReader.open(`${dir}/big.safetensors`).catch(() => null);
  assert.equal(reader, null);
  await Deno.writeFile(`${dir}/ok.safetensors`, ok);
  const r = await SafetensorsReader.open(`${dir}/ok.safetensors`);
  assert.equal((await r.tensor("model.embed_tokens.weight")).length, 250);
  r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: dimensions past 2^31, inexact products and offsets outside the file are refused by name", () => {
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ w: { dtype: "F16", shape: [2 ** 32, 0], data_offsets: [0, 0] } }, 0),
        "d.st",
      ),
    /d\.st: tensor "w": dimension 0 is 4294967296 \(at most 2\^31\)/,
  );
  // 2^124 elements: the declared size is reported exactly, not as a rounded double.
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({
          w: { dtype: "BF16", shape: [2 ** 31, 2 ** 31, 2 ** 31, 2 ** 31], data_offsets: [0, 8] },
        }, 8),
        "p.st",
      ),
    new RegExp(`p\\.st: tensor "w": BF16\\[.*\\] declares ${2n ** 125n} bytes`),
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ w: { dtype: "F32", shape: [1], data_offsets: [0, 1e15] } }, 4),
        "o.st",
      ),
    /o\.st: tensor "w" ends at byte 1000000000000000 of a 4-byte data section/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ w: { dtype: "F32", shape: [1], data_offsets: [4, 0] } }, 4),
        "r.st",
      ),
    /r\.st: tensor "w": offsets \[4, 0\]/,
  );
  // Positive controls: empty tensors and a 0 next to a large dimension.
  const empty = parseSafetensors(
    rawFile({ e: { dtype: "F32", shape: [2 ** 31, 0], data_offsets: [0, 0] } }, 0),
    "e.st",
  );
  assert.equal(empty.tensor("e").length, 0);
});

Deno.test("safetensors: assertFinite names the file, the tensor, the count and the first bad value", () => {
  const ok = new Float32Array([0, -1.5, 3.4e38, -3.4e38, 1e-45]);
  assert.equal(assertFinite(ok, "a.st", "w"), ok);
  assert.throws(
    () => assertFinite(new Float32Array([1, NaN, 2, NaN]), "a.st", "layers.0.B"),
    /a\.st: tensor "layers\.0\.B" holds 2 non-finite values of 4 \(first: NaN at index 1\)/,
  );
  assert.throws(
    () => assertFinite(new Float32Array([1, 2, -Infinity]), "a.st", "m"),
    /a\.st: tensor "m" holds 1 non-finite value of 3 \(first: -Infinity at index 2\)/,
  );
  // Stored as F16 and BF16: NaN and Inf survive the widening and are caught alike.
  for (const dtype of ["F16", "BF16"] as const) {
    const raw = encodeElements(new Float32Array([1, Infinity, NaN]), dtype);
    assert.throws(
      () => assertFinite(decodeToF32(raw, dtype), "h.st", dtype),
      /2 non-finite values/,
    );
  }
});
