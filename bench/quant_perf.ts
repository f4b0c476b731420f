/**
 * 4-bit kernel measurements for `deno task perf`: matrix-vector (decode) and batched (prefill)
 * products against a 4096×4096 weight, each format timed against the f32 weight run through the
 * same kernel family in the same run. `deno task perf` adds each GB/s and GFLOP/s figure's
 * fraction of the device's measured roofline beside it.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import {
  type GpuQuantWeight,
  quantMatmul,
  uploadF32Weight,
  uploadQuantized,
} from "../kernels/quant/qmatmul.ts";
import { quantizeNf4 } from "../kernels/quant/nf4.ts";
import { quantizeInt4 } from "../kernels/quant/int4.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { gflops, gpuTimestampMs, median, sig3, timeMs } from "./timing.ts";

// A 32-layer LLaMA decode step submits 224 matvecs at once; 32 per batch keeps the ~11.5 ms
// submit round trip to a small share of the wall time, as in decoding.
const MATVECS_PER_BATCH = 32;

/** Run the 4-bit measurements; `log` gets progress lines. */
export async function quantPerf(
  rt: GpuRuntime,
  log: (msg: string) => void,
  dim = 4096,
  tokens = 64,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  log(`4-bit: quantizing a ${dim}×${dim} weight (NF4, int4 g128) ...`);
  const w = randomF32(dim * dim, 11).map((v) => v * 0.05);
  const weights: [string, GpuQuantWeight][] = [
    ["f32", uploadF32Weight(rt, w, dim, dim)],
    ["nf4", uploadQuantized(rt, quantizeNf4(w, dim, dim))],
    ["int4", uploadQuantized(rt, quantizeInt4(w, dim, dim, 128))],
  ];
  const x1 = rt.upload(randomF32(dim, 12), [1, dim]);
  const xb = rt.upload(randomF32(tokens * dim, 13), [tokens, dim]);
  const y1 = rt.empty([1, dim]);
  const yb = rt.empty([tokens, dim]);
  // The VM's speed drifts by up to 2× within a minute, so the formats take turns: every round
  // times each format once, and a ratio is the median of the per-round ratios.
  const ROUNDS = 7;
  const vecWall: Record<string, number[]> = {};
  const vecGpu: Record<string, number[]> = {};
  for (const [name, gw] of weights) {
    await quantMatmul(rt, x1, gw, { out: y1 }); // compile and warm up
    vecWall[name] = [];
    vecGpu[name] = [];
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, gw] of weights) {
      // Many matvecs per submit, as a decode step records all its layers at once.
      const t0 = performance.now();
      const batch = rt.batch();
      for (let i = 0; i < MATVECS_PER_BATCH; i++) await quantMatmul(rt, x1, gw, { out: y1, batch });
      await batch.submit();
      vecWall[name].push((performance.now() - t0) / MATVECS_PER_BATCH);
      const gpu = await gpuTimestampMs(
        rt,
        (b) => quantMatmul(rt, x1, gw, { out: y1, batch: b }),
        1,
      );
      if (gpu !== null) vecGpu[name].push(gpu);
    }
  }
  const mat: Record<string, number> = {};
  for (const [name, gw] of weights) {
    const vec = median(vecWall[name]);
    mat[name] = await timeMs(() => quantMatmul(rt, xb, gw, { out: yb }).then(() => {}), 3);
    if (vecGpu[name].length) {
      const gpuMs = median(vecGpu[name]);
      out[`${name}_matvec_gpu_timestamp_ms_${dim}`] = sig3(gpuMs);
      // Weight + input + output bytes over the GPU time alone: comparable with the roofline's
      // copy bandwidth (timed the same way), unlike the wall time's per-submit overhead.
      out[`${name}_matvec_gpu_timestamp_gbps_${dim}`] = sig3(
        (gw.bytes + 4 * 2 * dim) / gpuMs / 1e6,
      );
    }
    const gbps = (gw.bytes + 4 * 2 * dim) / vec / 1e6;
    log(
      `  ${name}: matvec ${vec.toFixed(2)} ms (${gbps.toFixed(2)} GB/s of weight+io; rounds ` +
        `${vecWall[name].map((t) => t.toFixed(1)).join(" ")}), ${tokens}-token matmul ` +
        `${mat[name].toFixed(1)} ms`,
    );
    out[`${name}_weight_bytes_${dim}`] = gw.bytes;
    out[`${name}_bits_per_weight`] = sig3((8 * gw.bytes) / (dim * dim));
    out[`${name}_matvec_ms_${dim}`] = sig3(vec);
    out[`${name}_matvec_gbps_${dim}`] = sig3(gbps);
    out[`${name}_matmul${tokens}_gflops_${dim}`] = sig3(gflops(2 * tokens * dim * dim, mat[name]));
  }
  const perRound = (times: Record<string, number[]>, name: string) =>
    median(times.f32.map((f, i) => f / times[name][i]));
  for (const name of ["nf4", "int4"]) {
    out[`${name}_vs_f32_matvec_${dim}`] = sig3(perRound(vecWall, name));
    if (vecGpu[name].length === ROUNDS && vecGpu.f32.length === ROUNDS) {
      out[`${name}_vs_f32_matvec_gpu_timestamp_${dim}`] = sig3(perRound(vecGpu, name));
    }
    out[`${name}_vs_f32_matmul${tokens}_${dim}`] = sig3(mat.f32 / mat[name]);
  }
  for (const [, gw] of weights) gw.release();
  return out;
}
