/**
 * MoKA measurements for `deno task perf`: forward + backward of a d×d MoKA layer on T tokens by
 * the vec-trick (ΔW never formed) against the dense baseline measured in the same run —
 * materialise ΔW = s·Σ αᵢ Aᵢ⊗Bᵢ, then y += x·ΔWᵀ, dx = dy·ΔW and dΔW = dyᵀ·x. The baseline
 * leaves out projecting dΔW back onto the factors, which only flatters it.
 */
import { kronExpand } from "../kernels/adapters/ops.ts";
import { matmul } from "../kernels/matmul/matmul.ts";
import type { Batch } from "../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { MokaAdapter } from "../models/adapters/moka/layer.ts";
import { randomizeParams } from "../models/adapters/testing.ts";
import { gflops, median, sig3, timeMs } from "./timing.ts";

/** A shape set with rank flexibility: three distinct factor shapes, all full rank. */
export const PERF_MOKA_COMPONENTS: [number, number][] = [[64, 64], [32, 32], [128, 128], [64, 64]];

/** FLOPs of MoKA's vec-trick forward + backward (matmuls only; element-wise work is O(T·d)). */
export function mokaFlops(d: number, tokens: number, comps: [number, number][]): number {
  let f = 0;
  for (const [ma, na] of comps) {
    const mb = d / ma;
    const nb = d / na;
    const fwd = 2 * tokens * (mb * na * nb + ma * mb * na); // Zt = B·Xᵀ, Y = A·Ztᵀ
    const bwd = 2 * tokens *
      (ma * mb * nb + na * ma * nb + na * ma * mb + mb * na * nb + ma * mb * na);
    f += fwd + bwd; // H = G·B, dX = Aᵀ·H, K = Aᵀ·G, dB = Kᵀ·X, dA = Gᵀ·Zt
  }
  return f;
}

/** Run the MoKA vs dense measurement; `log` gets progress lines. */
export async function adapterPerf(
  rt: GpuRuntime,
  log: (msg: string) => void,
  d = 4096,
  tokens = 512,
): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = {};
  const comps = PERF_MOKA_COMPONENTS;
  const moka = MokaAdapter.create({ kind: "moka", components: comps }, d, d, 1);
  randomizeParams(moka, 2);
  const x = rt.upload(randomF32(tokens * d, 3), [tokens, d]);
  const dy = rt.upload(randomF32(tokens * d, 4), [tokens, d]);
  const y = rt.empty([tokens, d]);
  const dx = rt.empty([tokens, d]);
  const pool = rt.pool;

  // Vec-trick: parameters, gradients and every intermediate count as its bytes.
  log(
    `MoKA ${d}×${d}, ${tokens} tokens, components ${JSON.stringify(comps)}: vec-trick fwd+bwd ...`,
  );
  const before = pool.stats.inUseBytes;
  pool.resetPeak();
  const layer = await moka.toGpu(rt);
  const vecStep = async (batch: Batch) => {
    await layer.forward(batch, x, y, tokens);
    await layer.backward(batch, x, dy, dx, tokens);
  };
  const vecMs = await timeMs(async () => {
    const b = rt.batch();
    await vecStep(b);
    await b.submit();
  }, 5);
  const vecBytes = pool.stats.peakInUseBytes - before;
  const vecGpu = await profiledMs(rt, vecStep);
  const paramBytes = Object.values(layer.params).reduce((n, t) => n + t.byteLength, 0);
  log(
    `  ${vecMs.toFixed(0)} ms wall${vecGpu ? `, ${vecGpu.toFixed(0)} ms GPU` : ""}, ${
      (vecBytes / 2 ** 20).toFixed(1)
    } MiB`,
  );

  // Dense baseline: ΔW [d, d] and dΔW [d, d] materialised.
  log(`dense baseline: materialise ΔW, 3 matmuls of ${tokens}×${d}×${d} ...`);
  const before2 = pool.stats.inUseBytes;
  pool.resetPeak();
  const dw = rt.empty([d, d]);
  const ddw = rt.empty([d, d]);
  const denseStep = async (batch: Batch) => {
    for (let i = 0; i < comps.length; i++) {
      const [ma, na] = comps[i];
      await kronExpand(rt, batch, {
        w: dw,
        a: layer.params[`A.${i}`],
        b: layer.params[`B.${i}`],
        mb: d / ma,
        nb: d / na,
        rows: d,
        cols: d,
        gate: layer.params.gate,
        comp: i,
        scale: 1,
        beta: i === 0 ? 0 : 1,
      });
    }
    await matmul(rt, x, dw, { m: tokens, n: d, k: d, transB: true, beta: 1 }, { out: y, batch });
    await matmul(rt, dy, dw, { m: tokens, n: d, k: d }, { out: dx, batch });
    await matmul(rt, dy, x, { m: d, n: d, k: tokens, transA: true }, { out: ddw, batch });
  };
  const denseMs = await timeMs(
    async () => {
      const b = rt.batch();
      await denseStep(b);
      await b.submit();
    },
    3,
    60_000,
  );
  // The dense path also needs the factors (to materialise): count them like the vec-trick does.
  const denseBytes = pool.stats.peakInUseBytes - before2 + paramBytes;
  const denseGpu = await profiledMs(rt, denseStep);
  log(
    `  ${denseMs.toFixed(0)} ms wall${denseGpu ? `, ${denseGpu.toFixed(0)} ms GPU` : ""}, ${
      (denseBytes / 2 ** 20).toFixed(1)
    } MiB`,
  );

  const vecFlops = mokaFlops(d, tokens, comps);
  const denseFlops = 3 * 2 * tokens * d * d + comps.length * d * d * 2;
  out[`moka_components_${d}`] = JSON.stringify(comps);
  out[`moka_fwd_bwd_ms_${d}`] = sig3(vecMs);
  out[`moka_dense_fwd_bwd_ms_${d}`] = sig3(denseMs);
  out[`moka_fwd_bwd_vs_dense_${d}`] = sig3(denseMs / vecMs);
  if (vecGpu && denseGpu) out[`moka_fwd_bwd_vs_dense_gpu_timestamp_${d}`] = sig3(denseGpu / vecGpu);
  out[`moka_fwd_bwd_gflop_${d}`] = sig3(vecFlops / 1e9);
  out[`moka_dense_fwd_bwd_gflop_${d}`] = sig3(denseFlops / 1e9);
  out[`moka_fwd_bwd_gflops_${d}`] = sig3(gflops(vecFlops, vecMs));
  out[`moka_dense_fwd_bwd_gflops_${d}`] = sig3(gflops(denseFlops, denseMs));
  out[`moka_bytes_${d}`] = vecBytes;
  out[`moka_dense_bytes_${d}`] = denseBytes;
  out[`moka_bytes_vs_dense_${d}`] = sig3(denseBytes / vecBytes);
  // The weight update itself: factors + gate vs a dense ΔW.
  out[`moka_update_bytes_${d}`] = paramBytes;
  out[`moka_update_bytes_vs_dense_${d}`] = sig3((4 * d * d) / paramBytes);
  layer.release();
  for (const t of [x, dy, y, dx, dw, ddw]) t.release();
  return out;
}

async function profiledMs(
  rt: GpuRuntime,
  record: (b: Batch) => Promise<void>,
): Promise<number | null> {
  if (!rt.gpu.hasTimestamps) return null;
  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    const b = rt.batch({ profile: true });
    await record(b);
    await b.submit();
    times.push(b.durations().reduce((n, t) => n + t.ns, 0) / 1e6);
  }
  return median(times);
}
