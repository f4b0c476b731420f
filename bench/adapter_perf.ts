/**
 * MoKA measurements for `deno task perf`: forward + backward of a d×d MoKA layer on T tokens by
 * the vec-trick (ΔW never formed) against the dense baseline measured in the same run —
 * materialise ΔW = s·Σ αᵢ Aᵢ⊗Bᵢ, then y += x·ΔWᵀ, dx = dy·ΔW and dΔW = dyᵀ·x. The baseline
 * leaves out projecting dΔW back onto the factors, which only flatters it.
 *
 * The layer runs with its device's default scratch budget (`defaultKronScratchBytes`). On a CPU
 * adapter the same step is also timed, by GPU timestamps, with the GPU kernel family forced
 * (`target: "gpu"`) on the same device, so one run compares both families.
 *
 * Bytes: everything the pool hands out during the step beyond the layer's inputs and outputs
 * (x, dy, y, dx exist for either method): factors, gradients, gate-scaled copies, per-token
 * intermediates and split-K partials for the vec-trick; ΔW, dΔW and the factors for the dense path.
 */
import { kronExpand } from "../kernels/adapters/ops.ts";
import { matmul } from "../kernels/matmul/matmul.ts";
import type { Batch } from "../kernels/runtime/batch.ts";
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../kernels/runtime/tensor.ts";
import type { GpuAdapterLayer } from "../models/adapters/adapter.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { MokaAdapter } from "../models/adapters/moka/layer.ts";
import { defaultKronScratchBytes, gpuPartialBytes } from "../models/adapters/kron_gpu.ts";
import { fusedKronPlan } from "../kernels/adapters/kron_fused.ts";
import { tiledKronSlots, tiledKronWork } from "../kernels/adapters/kron_tiled.ts";
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

/**
 * The H200 model both methods are estimated with: FLOPs at 40 % of 67 TFLOP/s f32, plus DRAM
 * bytes at 4.8 TB/s (no overlap with compute), plus 4 µs per dispatch (launch gap).
 */
export const H200_MODEL = { flops: 0.4 * 67e12, bytesPerS: 4.8e12, dispatchS: 4e-6 } as const;

/** Milliseconds of a step on {@link H200_MODEL}. */
export function h200ModelMs(w: { flops: number; bytes: number; dispatches: number }): number {
  const m = H200_MODEL;
  return 1e3 * (w.flops / m.flops + w.bytes / m.bytesPerS + w.dispatches * m.dispatchS);
}

/**
 * The dense baseline's work: ΔW built component by component (written, then read and written
 * again per further component), y += x·ΔWᵀ, dx = dy·ΔW, dΔW = dyᵀ·x, each operand moved once.
 */
export function denseWork(d: number, tokens: number, r: number) {
  const f = 4;
  const expand = f * d * d * (1 + 2 * (r - 1));
  const products = f * (3 * d * d + tokens * d * 7); // ΔW ×2 read, dΔW written; x, dy, y, dx
  return {
    flops: 3 * 2 * tokens * d * d + r * d * d * 2,
    bytes: expand + products,
    dispatches: r + 3,
  };
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
  const budget = defaultKronScratchBytes(rt);

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
    layer = await moka.toGpu(rt, undefined, { scratchBytes: budget });
  });
  let whole!: GpuAdapterLayer;
  const wholeBytes = await peakBytes((b) => vecStep(whole)(b), async () => {
    whole = await moka.toGpu(rt, undefined, { scratchBytes: Infinity });
  });
  const paramBytes = Object.values(layer.params).reduce((n, t) => n + t.byteLength, 0);

  // Dense baseline: ΔW [d, d] and dΔW [d, d] materialised.
  let dw!: GpuTensor;
  let ddw!: GpuTensor;
  const denseStepOn = (rt: GpuRuntime) => async (batch: Batch) => {
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
  const denseStep = denseStepOn(rt);
  // The dense path also needs the factors (to materialise): count them like the vec-trick does.
  const denseBytes = paramBytes + await peakBytes(denseStep, () => {
    dw = rt.empty([d, d]);
    ddw = rt.empty([d, d]);
    return Promise.resolve();
  });

  // Time: a shared machine's speed can drift by up to 2× within seconds, so the methods take turns and each
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
  const vecProfile = await profileStep(rt, vecStep(layer));
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
  const show = (ms: number[]) => ms.map((t) => t.toFixed(0)).join(" ");
  log(
    `  vec-trick, ${budget / 1024} KiB scratch: ${show(rounds.vec)} ms, ${mib(vecBytes)}, ` +
      `${vecProfile.dispatches} dispatches (${rt.variants.target} kernels)`,
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
  out[`moka_scratch_bytes_budget`] = budget;
  out[`moka_kernels`] = rt.variants.target;
  out[`moka_dispatches_${d}`] = vecProfile.dispatches;
  out[`moka_unchunked_fwd_bwd_ms_${d}`] = sig3(wholeMs);
  out[`moka_unchunked_bytes_${d}`] = wholeBytes;
  out[`moka_unchunked_fwd_bwd_vs_dense_${d}`] = sig3(perRound("whole"));
  out[`moka_bytes_${d}`] = vecBytes;
  out[`moka_dense_bytes_${d}`] = denseBytes;
  out[`moka_bytes_vs_dense_${d}`] = sig3(denseBytes / vecBytes);
  // The weight update itself: factors + gate vs a dense ΔW.
  out[`moka_update_bytes_${d}`] = paramBytes;
  out[`moka_update_bytes_vs_dense_${d}`] = sig3((4 * d * d) / paramBytes);

  // The GPU kernel family on this same device, by GPU timestamps (a CPU adapter's wall time
  // would mostly measure its barriers, which a GPU does not pay for in the same way).
  if (rt.variants.target !== "gpu") {
    const twin = new GpuRuntime(rt.gpu, { kernels: { target: "gpu" } });
    log(
      `GPU kernel family forced on ${rt.gpu.description}: vec-trick and dense, GPU timestamps ...`,
    );
    const gpuLayer = await moka.toGpu(twin, undefined, {
      scratchBytes: defaultKronScratchBytes(twin),
    });
    // The matmul route of the same family, for the tiled route's (the default) gain.
    const matmulLayer = await moka.toGpu(twin, undefined, {
      scratchBytes: defaultKronScratchBytes(twin),
      kernels: "matmul",
    });
    const gVec = await profileStep(twin, vecStep(gpuLayer), 2);
    const gMatmul = await profileStep(twin, vecStep(matmulLayer), 1);
    const gDense = await profileStep(twin, denseStepOn(twin), 2);
    log(
      `  vec-trick tiled ${sig3(gVec.ms)} ms (${gVec.dispatches} dispatches), matmul route ${
        sig3(gMatmul.ms)
      } ms (${gMatmul.dispatches}), dense ${sig3(gDense.ms)} ms; slowest kernels: ${gVec.top}`,
    );
    out[`moka_gpu_kernels_fwd_bwd_gpu_ms_${d}`] = sig3(gVec.ms);
    out[`moka_gpu_kernels_matmul_route_gpu_ms_${d}`] = sig3(gMatmul.ms);
    out[`moka_gpu_kernels_dense_gpu_ms_${d}`] = sig3(gDense.ms);
    out[`moka_gpu_kernels_vs_dense_gpu_timestamp_${d}`] = sig3(gDense.ms / gVec.ms);
    out[`moka_gpu_kernels_dispatches_${d}`] = gVec.dispatches;
    out[`moka_gpu_kernels_matmul_route_dispatches_${d}`] = gMatmul.dispatches;
    // The H200 estimate of the tiled route (exact counts) against the dense path, one model.
    const comps4 = comps.map(([ma, na], i) => ({
      shape: { ma, na, mb: d / ma, nb: d / na },
      a: gpuLayer.params[`A.${i}`],
      b: gpuLayer.params[`B.${i}`],
      da: gpuLayer.grads[`A.${i}`],
      db: gpuLayer.grads[`B.${i}`],
    }));
    const plan = fusedKronPlan(comps4, gpuLayer.grads.gate);
    if (plan) {
      const maxFloats = gpuPartialBytes(defaultKronScratchBytes(twin)) / 4;
      const work = tiledKronWork(
        plan,
        tokens,
        tiledKronSlots(twin.variants, plan, tokens, maxFloats),
      );
      const dense = denseWork(d, tokens, comps.length);
      out[`moka_tiled_gflop_${d}`] = sig3(work.flops / 1e9);
      out[`moka_tiled_dram_mb_${d}`] = sig3(work.bytes / 1e6);
      out[`moka_tiled_dispatches_${d}`] = work.dispatches;
      out[`moka_h200_model_ms_${d}`] = sig3(h200ModelMs(work));
      out[`moka_dense_h200_model_ms_${d}`] = sig3(h200ModelMs(dense));
      out[`moka_h200_model_vs_dense_${d}`] = sig3(h200ModelMs(dense) / h200ModelMs(work));
    }
    matmulLayer.release();
    gpuLayer.release();
  }
  layer.release();
  whole.release();
  for (const t of [x, dy, y, dx, dw, ddw]) t.release();
  return out;
}

/**
 * One profiled step (after `warm` unprofiled ones): its GPU time, dispatch count and its three
 * costliest kernel labels with their share.
 */
async function profileStep(
  rt: GpuRuntime,
  step: (b: Batch) => Promise<void>,
  warm = 0,
): Promise<{ ms: number; dispatches: number; top: string }> {
  for (let i = 0; i < warm; i++) {
    const b = rt.batch();
    await step(b);
    await b.submit();
  }
  const batch = rt.batch({ profile: rt.gpu.hasTimestamps });
  await step(batch);
  await batch.submit();
  const timings = batch.durations();
  const byLabel = new Map<string, number>();
  for (const t of timings) byLabel.set(t.label, (byLabel.get(t.label) ?? 0) + t.ns);
  const total = timings.reduce((n, t) => n + t.ns, 0);
  const top = [...byLabel].sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([label, ns]) => `${label} ${((100 * ns) / total).toFixed(0)}%`).join(", ");
  return { ms: total / 1e6, dispatches: timings.length, top };
}
