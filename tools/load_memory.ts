/**
 * Host memory of loading a Hugging Face LLaMA folder onto the GPU and running one forward, per
 * stage ({@link MemorySampler}), as one JSON object on stdout. `tools/memory_test.ts` runs it in a
 * process of its own, so that the resident set it reports is the load's alone.
 *
 *   deno run --allow-all tools/load_memory.ts DIR [--base nf4] [--tokens 16]
 *
 * Fields: `start_rss_bytes` (the runtime and the opened source, before any weight), `weight_bytes`
 * (the frozen weights' payload), `pool_bytes` (the pool's buffers after the forward, free ones
 * included), `peak_rss_bytes` (load and forward), and `peak_rss_bytes_<stage>` /
 * `unexplained_rss_bytes_<stage>` for `load` and `forward`.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { openHfSource } from "../models/hf.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import type { WeightFormat } from "../models/llama/gpu/weights.ts";
import { currentRss, MemorySampler } from "./memory.ts";

/** What {@link measureLoadMemory} reports, in bytes. */
export interface LoadMemory extends Record<string, number | string> {
  /** Resident set before the load. */
  start_rss_bytes: number;
  /** Frozen weights' payload. */
  weight_bytes: number;
  /** The pool's buffers (in use and free) after the forward. */
  pool_bytes: number;
  /** Highest resident set of the load and the forward. */
  peak_rss_bytes: number;
}

/** Load `dir` with `base` linear weights, run a forward of `tokens` tokens, report memory. */
export async function measureLoadMemory(
  dir: string,
  base: WeightFormat = "nf4",
  tokens = 16,
): Promise<LoadMemory> {
  const rt = await GpuRuntime.create();
  const source = await openHfSource(dir);
  const mem = new MemorySampler({
    pool: rt.pool,
    poolInHost: rt.variants.target === "cpu-adapter",
  });
  const start = currentRss();
  let model: GpuLlama | null = null;
  try {
    model = await mem.stage(
      "load",
      () => GpuLlama.load(rt, source, { base, progress: () => mem.sample() }),
    );
    const m = model;
    await mem.stage("forward", async () => {
      const ids = rt.upload(
        Uint32Array.from({ length: tokens }, (_, i) => 3 + (i * 7919) % (source.config.vocab - 3)),
        [tokens],
      );
      const b = rt.batch();
      const logits = (await m.forward(b, ids, tokens, { logits: [tokens - 1] }))!;
      await b.submit();
      const row = await rt.read(logits) as Float32Array;
      if (!row.every(Number.isFinite)) throw new Error("non-finite logits");
      ids.release();
      logits.release();
    });
    return {
      device: rt.gpu.description,
      start_rss_bytes: start,
      weight_bytes: model.weightBytes,
      pool_bytes: rt.pool.stats.allocatedBytes,
      peak_rss_bytes: Math.max(...mem.stages.map((s) => s.peakRssBytes)),
      ...mem.fields(),
    };
  } finally {
    source.close();
    model?.release();
  }
}

if (import.meta.main) {
  const dir = Deno.args[0];
  const flag = (name: string) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Deno.args[i + 1] : undefined;
  };
  if (!dir || dir.startsWith("--")) {
    console.error(
      "usage: deno run --allow-all tools/load_memory.ts DIR [--base nf4] [--tokens 16]",
    );
    Deno.exit(2);
  }
  const result = await measureLoadMemory(
    dir,
    (flag("base") ?? "nf4") as WeightFormat,
    Number(flag("tokens") ?? 16),
  );
  console.log(JSON.stringify(result));
}
