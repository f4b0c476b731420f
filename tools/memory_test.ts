import assert from "node:assert/strict";
import { SYNTHETIC_SHAPES, writeSyntheticHf } from "../models/synthetic.ts";
import type { LoadMemory } from "./load_memory.ts";
import { MemorySampler } from "./memory.ts";

const MiB = 2 ** 20;

Deno.test("memory sampler: a stage's peak RSS sees what it touched; the pool's share is not unexplained", async () => {
  let poolBytes = 0;
  const mem = new MemorySampler({
    pool: {
      stats: {
        get allocatedBytes() {
          return poolBytes;
        },
      },
    },
  });
  await mem.stage("idle", () => {});
  await mem.stage("alloc", async () => {
    const held = new Uint8Array(96 * MiB).fill(1); // resident, and not the pool's
    await new Promise((r) => setTimeout(r, 100));
    mem.sample();
    held[0] = 2;
  });
  poolBytes = 96 * MiB; // as if the pool held that much (a CPU adapter's buffers)
  await mem.stage("pool", async () => {
    const held = new Uint8Array(96 * MiB).fill(1);
    await new Promise((r) => setTimeout(r, 100));
    held[0] = 2;
  });
  const [idle, alloc, pool] = mem.stages;
  assert.ok(alloc.peakRssBytes - alloc.startRssBytes >= 80 * MiB, JSON.stringify(alloc));
  assert.ok(alloc.unexplainedRssBytes >= idle.unexplainedRssBytes + 80 * MiB);
  assert.ok(pool.peakPoolBytes === 96 * MiB && pool.samples >= 3, JSON.stringify(pool));
  assert.ok(pool.unexplainedRssBytes <= pool.peakRssBytes - 96 * MiB, JSON.stringify(pool));
  assert.deepEqual(Object.keys(mem.fields()), [
    "peak_rss_bytes_idle",
    "unexplained_rss_bytes_idle",
    "peak_rss_bytes_alloc",
    "unexplained_rss_bytes_alloc",
    "peak_rss_bytes_pool",
    "unexplained_rss_bytes_pool",
  ]);
  await assert.rejects(
    mem.stage("outer", () => mem.stage("inner", () => {})),
    /stage "inner" inside stage "outer"/,
  );
});

// Three blocks of LLaMA-3-8B's geometry (4096 × 14336, 8 KV heads) and an 8192-token vocabulary:
// 1.4 GB of BF16 streamed as 8B's are (64 MiB chunks of 8192 rows, several tensors per batch),
// NF4 linear weights. Loading and one forward may take the pool's buffers (host memory on a CPU
// adapter) and at most LOAD_SLACK beside them: the two batches of raw bytes in flight and the
// driver's staging copies of them (4 × 64 MiB), the JS heap's lag in freeing read buffers, the
// forward's shaders. Kept per-conversion uniform buffers, which held freed staging memory
// resident, took 250 MiB more here (and 3.5 GB on the 8B model).
const LOAD_SLACK = 576 * MiB;

Deno.test("loading and one forward hold at most the pool's buffers + 576 MiB of host memory (3 blocks of LLaMA-3-8B shape, NF4)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-load-memory-" });
  try {
    const shape = SYNTHETIC_SHAPES["llama3-8b"];
    await writeSyntheticHf(dir, {
      ...shape,
      config: { ...shape.config, layers: 3, vocab: 8192, seqLen: 256 },
    });
    // A process of its own: its resident set is the load's, not the test runner's.
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        new URL("./load_memory.ts", import.meta.url).pathname,
        dir,
        "--base",
        "nf4",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const m = JSON.parse(new TextDecoder().decode(out.stdout)) as LoadMemory;
    const growth = m.peak_rss_bytes - m.start_rss_bytes;
    const show = (b: number) => `${Math.round(b / MiB)} MiB`;
    assert.ok(m.pool_bytes >= m.weight_bytes, JSON.stringify(m));
    assert.ok(
      growth <= m.pool_bytes + LOAD_SLACK,
      `RSS grew by ${show(growth)} over load and forward: the pool holds ${
        show(m.pool_bytes)
      } (weights ${show(m.weight_bytes)}), ${show(growth - m.pool_bytes)} beside it, over ${
        show(LOAD_SLACK)
      } (${JSON.stringify(m)})`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
