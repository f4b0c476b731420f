import assert from "node:assert/strict";
import {
  encodeElements,
  encodeSafetensors,
  parseSafetensors,
  planShards,
  SafetensorsWriter,
} from "./safetensors.ts";

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
