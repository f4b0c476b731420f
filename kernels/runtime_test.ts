import { planArena, TensorArena } from "./runtime/arena.ts";
import assert from "node:assert/strict";
import { acquireGpu, GpuUnavailableError } from "./runtime/device.ts";
import { bucketSize } from "./runtime/buffer_pool.ts";
import { GpuRuntime } from "./runtime/runtime.ts";
import { randomF32, testRuntime } from "./testing/mod.ts";
import { matmul } from "./matmul/matmul.ts";

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

Deno.test("device: asking for a backend this process does not use says how to fix it", async () => {
  await testRuntime(); // the backend is pinned by now
  const started = Deno.env.get("DENO_WEBGPU_BACKEND");
  assert.ok(started, "acquireGpu pins DENO_WEBGPU_BACKEND");
  const other = started === "gl" ? "vulkan" : "gl";
  await assert.rejects(
    acquireGpu({ backend: other }),
    new RegExp(`run with DENO_WEBGPU_BACKEND=${other}`),
  );
});

Deno.test(
  "device: the native backend is pinned before the first adapter request, so EGL never loads",
  {
    ignore: Deno.build.os !== "linux",
  },
  async () => {
    // A fresh process with DENO_WEBGPU_BACKEND unset. Through acquireGpu, libEGL (whose thread
    // teardown corrupts the heap, tools/repro/egl_thread_exit.ts) must stay out; a bare
    // navigator.gpu request in the same setting loads it: the negative control.
    const probe = async (viaAcquire: boolean) => {
      const code = viaAcquire
        ? `import { acquireGpu } from "${new URL("./runtime/device.ts", import.meta.url)}";
         const gpu = await acquireGpu();
         console.log(JSON.stringify({ backend: gpu.backend, xdg: Deno.env.get("XDG_RUNTIME_DIR") ?? null,
           egl: Deno.readTextFileSync("/proc/self/maps").includes("libEGL") }));`
        : `await navigator.gpu.requestAdapter();
         console.log(JSON.stringify({ egl: Deno.readTextFileSync("/proc/self/maps").includes("libEGL") }));`;
      const env = { ...Deno.env.toObject() };
      delete env.DENO_WEBGPU_BACKEND;
      delete env.XDG_RUNTIME_DIR;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-config", code],
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, stderr);
      return { ...JSON.parse(new TextDecoder().decode(out.stdout)), stderr };
    };
    const pinned = await probe(true);
    assert.equal(pinned.backend, "vulkan");
    assert.equal(pinned.egl, false, "libEGL must not be loaded");
    assert.ok(pinned.xdg, "a private XDG_RUNTIME_DIR is set");
    assert.doesNotMatch(pinned.stderr, /XDG_RUNTIME_DIR/, "Mesa prints no warning");
    const bare = await probe(false);
    assert.equal(bare.egl, true, "negative control: Deno's default loads EGL");
  },
);

Deno.test("batch: recycled scratch serves later dispatches of the same batch, in order", async () => {
  const rt = await testRuntime();
  const n = 64;
  const a = rt.upload(randomF32(n * n, 7), [n, n]);
  const b = rt.upload(randomF32(n * n, 8), [n, n]);
  const c1 = rt.empty([n, n]);
  const c2 = rt.empty([n, n]);
  const inUse = rt.pool.stats.inUseBytes;
  const batch = rt.batch();
  // s = a·b, c1 = s·b; then the same buffer as t = b·a, c2 = t·a.
  const s = batch.scratch([n, n]);
  await matmul(rt, a, b, { m: n, n, k: n }, { out: s, batch });
  await matmul(rt, s, b, { m: n, n, k: n }, { out: c1, batch });
  batch.recycle(s);
  const t = batch.scratch([n, n]);
  assert.equal(t.buffer, s.buffer, "the recycled buffer is reused");
  // One scratch buffer (16 KiB) plus the dispatches' small uniform buffers, not two.
  const held = rt.pool.stats.inUseBytes - inUse;
  assert.ok(held >= bucketSize(4 * n * n) && held < 2 * bucketSize(4 * n * n), `${held}`);
  await matmul(rt, b, a, { m: n, n, k: n }, { out: t, batch });
  await matmul(rt, t, a, { m: n, n, k: n }, { out: c2, batch });
  batch.recycle(t);
  assert.throws(() => batch.recycle(t), /not a scratch tensor/);
  await batch.submit();
  assert.equal(rt.pool.stats.inUseBytes, inUse, "scratch goes back to the pool");
  const ref = async (x: typeof a, y: typeof a) => {
    const xy = await matmul(rt, x, y, { m: n, n, k: n });
    return await rt.read(await matmul(rt, xy, y, { m: n, n, k: n }));
  };
  const [r1, r2] = [await ref(a, b), await ref(b, a)];
  const [o1, o2] = [await rt.read(c1), await rt.read(c2)];
  for (let i = 0; i < n * n; i++) {
    assert.ok(Math.abs(o1[i] - r1[i]) <= 1e-4 * (1 + Math.abs(r1[i])));
    assert.ok(Math.abs(o2[i] - r2[i]) <= 1e-4 * (1 + Math.abs(r2[i])));
  }
});

Deno.test("tensor: rows() views bind at their offset; misaligned offsets are refused", async () => {
  const rt = await testRuntime();
  const x = rt.upload(randomF32(8 * 64, 9), [8, 64]); // 256-byte rows
  const host = await rt.read(x);
  const rows = x.rows(3, 2);
  assert.deepEqual(rows.shape, [2, 64]);
  assert.deepEqual([...await rt.read(rows)], [...host.subarray(3 * 64, 5 * 64)]);
  const y = rt.upload(randomF32(8 * 12, 10), [8, 12]); // 48-byte rows: 16 rows per 256 bytes
  assert.throws(() => y.rows(1, 2), /byte offset 48 is not a multiple of 256/);
  assert.throws(() => x.rows(7, 2), /rows\(7, 2\) of a tensor with 8 rows/);
});

Deno.test("batch: dispatches with equal parameters share one uniform buffer, others do not", async () => {
  const rt = await testRuntime();
  const batch = rt.batch();
  const p1 = batch.uniform(new Uint32Array([4, 5, 6, 7]));
  const p2 = batch.uniform(new Uint32Array([4, 5, 6, 7]).buffer);
  const p3 = batch.uniform(new Uint32Array([4, 5, 6, 8]));
  // A view into a larger buffer is keyed by its own bytes only.
  const p4 = batch.uniform(new Uint32Array([9, 4, 5, 6, 7]).subarray(1));
  assert.equal(p1, p2);
  assert.equal(p1, p4);
  assert.notEqual(p1, p3);
  // Chunks of one matmul (same sizes, different row windows) each get their own correct result.
  const n = 64;
  const a = rt.upload(randomF32(2 * n * n, 11), [2 * n, n]);
  const b = rt.upload(randomF32(n * n, 12), [n, n]);
  const c = rt.empty([2 * n, n]);
  for (const start of [0, n]) {
    await matmul(rt, a.rows(start, n), b, { m: n, n, k: n }, { out: c.rows(start, n), batch });
  }
  await batch.submit();
  const whole = await rt.read(await matmul(rt, a, b, { m: 2 * n, n, k: n }));
  assert.deepEqual([...await rt.read(c)], [...whole]);
});

Deno.test("arena: groups stay in one buffer, views sit at bindable offsets and do not overlap", async () => {
  // 3 + 70 floats align to 64 + 128; a 256-float buffer takes the first group, not the second.
  const plan = planArena([[[3], [7, 10]], [[100]], [[2, 2]]], 256);
  assert.deepEqual(plan.slots.map((g) => g.map((s) => [s.buffer, s.offset])), [
    [[0, 0], [0, 64]],
    [[1, 0]],
    [[1, 128]],
  ]);
  assert.throws(() => planArena([[[300]]], 256), /group 0 needs 1280 bytes/);
  const rt = await testRuntime();
  const arena = new TensorArena(rt, [[[3], [7, 10]], [[100]]]);
  const views = arena.groups.flat();
  views.forEach((v, i) => {
    assert.equal(v.byteOffset % 256, 0);
    rt.write(v, new Float32Array(v.size).fill(i + 1));
  });
  for (const [i, v] of views.entries()) {
    assert.deepEqual(await rt.read(v), new Float32Array(v.size).fill(i + 1));
  }
  // Padding stays zero: the whole buffer holds exactly the written values and zeros.
  const all = await rt.read(arena.buffers[0]) as Float32Array;
  assert.equal(all.reduce((n, x) => n + x, 0), 3 * 1 + 70 * 2 + 100 * 3);
  arena.release();
});
