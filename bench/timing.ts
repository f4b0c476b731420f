/**
 * Timing helpers shared by `deno task perf` and `deno bench`: the same methodology for our kernels
 * and for the peers they are compared with.
 */

import type { Batch } from "../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Wall-clock milliseconds of `run` (which must resolve when the GPU is done): one warm-up call
 * (pipeline compilation, first-touch allocation), then the median of `reps` calls, stopping early
 * once `budgetMs` is spent so slow baselines cannot stall the run.
 */
export async function timeMs(
  run: () => Promise<void>,
  reps = 5,
  budgetMs = 20_000,
): Promise<number> {
  await run();
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
    if (performance.now() - start > budgetMs) break;
  }
  return median(times);
}

/** GFLOP/s of `flops` floating-point operations done in `ms` milliseconds. */
export function gflops(flops: number, ms: number): number {
  return flops / ms / 1e6;
}

/** Round to 3 significant digits for reports. */
export function sig3(x: number): number {
  return Number(x.toPrecision(3));
}

/**
 * Nominal fp32 peak of this CPU, for the "floor" beside each llvmpipe number:
 * cores × MHz × 2 FMA units × lanes × 2 flops, with lanes = 8 (llvmpipe emits 256-bit code).
 * The clock comes from `MOKA_CPU_MHZ` or /proc/cpuinfo (Deno wants --allow-all for /proc);
 * returns null when neither is available.
 */
export function cpuPeakGflops(lanes = 8): number | null {
  try {
    const fromEnv = Deno.env.get("MOKA_CPU_MHZ");
    const mhz = fromEnv !== undefined
      ? Number(fromEnv)
      : Number(/cpu MHz\s*:\s*([\d.]+)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1]);
    const cores = navigator.hardwareConcurrency;
    if (!Number.isFinite(mhz) || !cores) return null;
    return (cores * mhz * 2 * lanes * 2) / 1000;
  } catch {
    return null;
  }
}

/**
 * Median GPU time of `record` over `reps` profiled submits: the sum of its dispatches' timestamp
 * durations, in milliseconds (null when the adapter has no `timestamp-query`).
 */
export async function gpuTimestampMs(
  rt: GpuRuntime,
  record: (batch: Batch) => Promise<unknown>,
  reps = 2,
): Promise<number | null> {
  if (!rt.gpu.hasTimestamps) return null;
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const batch = rt.batch({ profile: true });
    await record(batch);
    await batch.submit();
    times.push(batch.durations().reduce((n, t) => n + t.ns, 0) / 1e6);
  }
  return median(times);
}
