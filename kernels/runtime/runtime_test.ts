import assert from "node:assert/strict";
import { acquireGpu, GpuUnavailableError } from "./device.ts";
import { bucketSize } from "./buffer_pool.ts";
import { GpuRuntime } from "./runtime.ts";
import { randomF32, testRuntime } from "../testing/mod.ts";
import { matmul } from "../matmul/matmul.ts";

Deno.test("runtime: an adapter is available (CI must have one: this test never skips)", async () => {
  const rt = await testRuntime();
  assert.ok(rt.gpu.description.length > 0);
  assert.equal(rt.gpu.lostReason, null);
});

Deno.test("runtime: f32, f16 and u32 tensors round-trip through the GPU bit-exactly", async () => {
  const rt = await testRuntime();
  const f32 = randomF32(1001, 3);
  assert.deepEqual(await rt.read(rt.upload(f32, [7, 143])), f32);
  const u32 = new Uint32Array(257).map((_, i) => (i * 2654435761) >>> 0);
  assert.deepEqual(await rt.read(rt.upload(u32, [257])), u32);
  if (rt.gpu.hasF16) {
    const f16 = Float16Array.from(randomF32(33, 4)); // odd length: padded to a whole word
    assert.deepEqual(await rt.read(rt.upload(f16, [3, 11])), f16);
  }
});

Deno.test("runtime: bad uploads name the problem", async () => {
  const rt = await testRuntime();
  assert.throws(
    () => rt.upload(new Float32Array(5), [2, 3]),
    /5 values do not fill shape \[2, 3\]/,
  );
  assert.throws(() => rt.empty([2, -1]), /dims must be integers >= 0/);
  const t = rt.empty([4]);
  assert.throws(() => rt.write(t, new Uint32Array(4)), /u32 data into a f32 tensor/);
  t.release();
  await assert.rejects(rt.read(t), /tensor was released/);
});

Deno.test("buffer pool: buckets, reuse and accounting", async () => {
  assert.equal(bucketSize(1), 256);
  assert.equal(bucketSize(257), 512);
  assert.equal(bucketSize(3 << 20), 4 << 20);
  assert.equal(bucketSize((65 << 20) + 1), 66 << 20);
  const rt = new GpuRuntime((await testRuntime()).gpu);
  const a = rt.empty([1000]);
  const created = rt.pool.stats.created;
  a.release();
  const b = rt.empty([900]); // same 4 KiB bucket: reused, nothing new created
  assert.equal(b.buffer, a.buffer);
  assert.equal(rt.pool.stats.created, created);
  assert.equal(rt.pool.stats.inUseBytes, 4096);
  b.release();
  assert.throws(() => rt.pool.release(b.buffer), /released twice/);
});

Deno.test("pipeline cache: same source compiles once; WGSL errors carry the line", async () => {
  const rt = new GpuRuntime((await testRuntime()).gpu);
  const code = `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1) fn main() { x[0] = 1.0; }`;
  const p1 = await rt.pipelines.get(code, "one");
  const p2 = await rt.pipelines.get(code, "one");
  assert.equal(p1, p2);
  assert.equal(rt.pipelines.size, 1);
  await assert.rejects(
    rt.pipelines.get("@compute @workgroup_size(1) fn main() { let y: f32 = nope; }", "broken"),
    /WGSL compile error in kernel "broken":\n {2}line 1/,
  );
  assert.equal(rt.pipelines.size, 1); // the failure is not cached
});

Deno.test("batch: many dispatches in one submit, with GPU timestamps per dispatch", async () => {
  const rt = await testRuntime();
  const n = 33;
  const a = rt.upload(randomF32(n * n, 5), [n, n]);
  const b = rt.upload(randomF32(n * n, 6), [n, n]);
  const c = rt.empty([n, n]);
  rt.fill(c, 0);
  const batch = rt.batch({ profile: true });
  for (let i = 0; i < 3; i++) {
    await matmul(rt, a, b, { m: n, n, k: n, beta: 1 }, { out: c, batch });
  }
  assert.equal(batch.dispatchCount, 3);
  await batch.submit();
  const once = rt.empty([n, n]);
  await matmul(rt, a, b, { m: n, n, k: n }, { out: once });
  const [tripled, single] = [await rt.read(c), await rt.read(once)];
  for (let i = 0; i < n * n; i++) assert.ok(Math.abs(tripled[i] - 3 * single[i]) < 1e-4);
  const timings = batch.durations();
  if (rt.gpu.hasTimestamps) {
    assert.equal(timings.length, 3);
    for (const t of timings) {
      assert.match(t.label, /^matmul\//);
      assert.ok(t.ns >= 0 && Number.isFinite(t.ns));
    }
  }
  await assert.rejects(batch.submit(), /submitted twice/);
});

Deno.test("device: a lost device gives a clear error instead of silent garbage", async () => {
  const rt = new GpuRuntime(await acquireGpu());
  rt.device.destroy();
  await rt.device.lost;
  await new Promise((r) => setTimeout(r, 0)); // let the lost handler run
  assert.match(String(rt.gpu.lostReason), /WebGPU device lost/);
  assert.throws(() => rt.empty([4]), GpuUnavailableError);
  assert.throws(() => rt.batch(), /device lost.*acquireGpu/);
});

Deno.test("device: asking for a backend Deno was not started with says how to fix it", async () => {
  const started = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "auto";
  const other = started === "gl" ? "vulkan" : "gl";
  await assert.rejects(
    acquireGpu({ backend: other }),
    new RegExp(`run with DENO_WEBGPU_BACKEND=${other}`),
  );
});
