/**
 * MoKA measurements for `deno task perf`: forward + backward of a d×d MoKA layer on T tokens by
 * the vec-trick (ΔW never formed) against the dense baseline measured in the same run —
 * materialise ΔW = s·Σ αᵢ Aᵢ⊗Bᵢ, then y += x·ΔWᵀ, dx = dy·ΔW and dΔW = dyᵀ·x. The baseline
 * leaves out projecting dΔW back onto the factors, which only flatters it.
 *
 * Bytes: everything the pool hands out during the step beyond the layer's inputs and outputs
 * (x, dy, y, dx exist for either method): factors, gradients, gate-scaled copies, per-token
 * intermediates and split-K partials for the vec-trick; ΔW, dΔW and the factors for the dense path.
 */
import { kronExpand } from "../kernels/adapters/ops.ts";
import { matmul } from "../kernels/matmul/matmul.ts";
import type { Batch } from "../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../kernels/runtime/tensor.ts";
import type { GpuAdapterLayer } from "../models/adapters/adapter.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { MokaAdapter } from "../models/adapters/moka/layer.ts";
import { DEFAULT_KRON_SCRATCH_BYTES } from "../models/adapters/kron_gpu.ts";
import { randomizeParams } from "../models/adapters/testing.ts";
import { gflops, gpuTimestampMs, median, sig3 } from "./timing.ts";

/** A shape set with rank flexibility: three distinct factor shapes, all full rank. */
export const PERF_MOKA_COMPONENTS: [number, number][] = [[64, 64], [32, 32], [128, 128], [64, 64]];

/** FLOPs of MoKA's vec-trick forward + backward (matmuls only; element-wise work is O(T·d)). */
export function mokaFlops(d: number, tokens: number, comps: [number, number][]): number {
  let f = 0;
  for (const [ma, na] of comps) {
    const mb = d / ma;
    const nb = d / na;
    const fwd = ma * na * nb + ma * nb * mb; // W = A'·X, y += W·Bᵀ
    // K = A'ᵀ·dY, dX += K·B, dB = Σ Kᵀ·X, Zt = B·Xᵀ, dA = Σ dY·Zt
    const bwd = na * ma * mb + na * mb * nb + mb * na * nb + mb * nb * na + ma * mb * na;
    f += 2 * tokens * (fwd + bwd);
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

  // Memory: each method's peak pool bytes over one step, beyond x, dy, y, dx. The vec-trick with
  // the default scratch budget (token chunks) and with all tokens at once.
  log(
    `MoKA ${d}×${d}, ${tokens} tokens, components ${JSON.stringify(comps)}: vec-trick fwd+bwd ...`,
  );
  const peakBytes = async (step: (b: Batch) => Promise<void>, setup: () => Promise<unknown>) => {
    const before = pool.stats.inUseBytes;
    pool.resetPeak();
    await setup();
    const b = rt.batch();
    await step(b);
    await b.submit();
    return pool.stats.peakInUseBytes - before;
  };
  const vecStep = (layer: GpuAdapterLayer) => async (batch: Batch) => {
    await layer.forward(batch, x, y, tokens);
    await layer.backward(batch, x, dy, dx, tokens);
  };
  let layer!: GpuAdapterLayer;
  const vecBytes = await peakBytes((b) => vecStep(layer)(b), async () => {
    layer = await moka.toGpu(rt, undefined, { scratchBytes: DEFAULT_KRON_SCRATCH_BYTES });
  });
  let whole!: GpuAdapterLayer;
  const wholeBytes = await peakBytes((b) => vecStep(whole)(b), async () => {
    whole = await moka.toGpu(rt, undefined, { scratchBytes: Infinity });
  });
  const paramBytes = Object.values(layer.params).reduce((n, t) => n + t.byteLength, 0);

  // Dense baseline: ΔW [d, d] and dΔW [d, d] materialised.
  let dw!: GpuTensor;
  let ddw!: GpuTensor;
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
  // The dense path also needs the factors (to materialise): count them like the vec-trick does.
  const denseBytes = paramBytes + await peakBytes(denseStep, () => {
    dw = rt.empty([d, d]);
    ddw = rt.empty([d, d]);
    return Promise.resolve();
  });

  // Time: this VM's speed drifts by up to 2× within seconds, so the methods take turns and each
  // ratio is the median of the per-round ratios.
  log(`timing: vec-trick (chunked, whole) and dense (ΔW + 3 matmuls of ${tokens}×${d}×${d}) ...`);
  const wall = async (step: (b: Batch) => Promise<void>) => {
    const t0 = performance.now();
    const b = rt.batch();
    await step(b);
    await b.submit();
    return performance.now() - t0;
  };
  const rounds = { vec: [] as number[], whole: [] as number[], dense: [] as number[] };
  for (let r = 0; r < 4; r++) {
    const times = {
      vec: await wall(vecStep(layer)),
      whole: await wall(vecStep(whole)),
      dense: await wall(denseStep),
    };
    if (r === 0) continue; // warm-up: compiles and first touches
    for (const k of ["vec", "whole", "dense"] as const) rounds[k].push(times[k]);
  }
  const perRound = (k: "vec" | "whole") =>
    median(rounds.dense.map((dense, i) => dense / rounds[k][i]));
  const vecMs = median(rounds.vec);
  const wholeMs = median(rounds.whole);
  const denseMs = median(rounds.dense);
  const vecGpu = await gpuTimestampMs(rt, vecStep(layer));
  const denseGpu = await gpuTimestampMs(rt, denseStep);
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
  const show = (ms: number[]) => ms.map((t) => t.toFixed(0)).join(" ");
  log(
    `  vec-trick, ${DEFAULT_KRON_SCRATCH_BYTES / 1024} KiB scratch: ${show(rounds.vec)} ms, ${
      mib(vecBytes)
    }`,
  );
  log(`  vec-trick, all tokens at once: ${show(rounds.whole)} ms, ${mib(wholeBytes)}`);
  log(`  dense: ${show(rounds.dense)} ms, ${mib(denseBytes)}`);

  const vecFlops = mokaFlops(d, tokens, comps);
  const denseFlops = 3 * 2 * tokens * d * d + comps.length * d * d * 2;
  out[`moka_components_${d}`] = JSON.stringify(comps);
  out[`moka_fwd_bwd_ms_${d}`] = sig3(vecMs);
  out[`moka_dense_fwd_bwd_ms_${d}`] = sig3(denseMs);
  out[`moka_fwd_bwd_vs_dense_${d}`] = sig3(perRound("vec"));
  if (vecGpu && denseGpu) out[`moka_fwd_bwd_vs_dense_gpu_timestamp_${d}`] = sig3(denseGpu / vecGpu);
  out[`moka_fwd_bwd_gflop_${d}`] = sig3(vecFlops / 1e9);
  out[`moka_dense_fwd_bwd_gflop_${d}`] = sig3(denseFlops / 1e9);
  out[`moka_fwd_bwd_gflops_${d}`] = sig3(gflops(vecFlops, vecMs));
  out[`moka_dense_fwd_bwd_gflops_${d}`] = sig3(gflops(denseFlops, denseMs));
  // The speed ratio is the FLOP ratio (its ceiling at equal efficiency) times the vec-trick's
  // GFLOP/s over the dense path's: small-K per-token products against K = 4096 GEMMs.
  out[`moka_flop_ratio_vs_dense_${d}`] = sig3(denseFlops / vecFlops);
  out[`moka_gflops_vs_dense_${d}`] = sig3((denseMs * vecFlops) / (vecMs * denseFlops));
  out[`moka_scratch_bytes_budget`] = DEFAULT_KRON_SCRATCH_BYTES;
  out[`moka_unchunked_fwd_bwd_ms_${d}`] = sig3(wholeMs);
  out[`moka_unchunked_bytes_${d}`] = wholeBytes;
  out[`moka_unchunked_fwd_bwd_vs_dense_${d}`] = sig3(perRound("whole"));
  out[`moka_bytes_${d}`] = vecBytes;
  out[`moka_dense_bytes_${d}`] = denseBytes;
  out[`moka_bytes_vs_dense_${d}`] = sig3(denseBytes / vecBytes);
  // The weight update itself: factors + gate vs a dense ΔW.
  out[`moka_update_bytes_${d}`] = paramBytes;
  out[`moka_update_bytes_vs_dense_${d}`] = sig3((4 * d * d) / paramBytes);
  layer.release();
  whole.release();
  for (const t of [x, dy, y, dx, dw, ddw]) t.release();
  return out;
}
