/**
 * Kernel self-check: every matmul kernel family, and the frozen NF4 products in the variants this
 * runtime records (decode, prefill and training shapes, forward and backward), on fresh random
 * inputs vs the CPU reference. Used by `deno task reproduce` before any long run, so a broken
 * adapter fails in seconds.
 */
import { matmulCpu, type MatmulSpec } from "./cpu/matmul.ts";
import { defaultMatmulKernel, GPU_MATMUL, matmul, NAIVE_MATMUL } from "./matmul/matmul.ts";
import { kernelName, type MatmulKernelConfig } from "./matmul/wgsl.ts";
import type { GpuRuntime } from "./runtime/runtime.ts";
import { randomF32, relativeError, TOLERANCE } from "./testing/mod.ts";
import { dequantizeNf4, quantizeNf4 } from "./quant/nf4.ts";
import {
  quantGemvFor,
  quantMatmul,
  quantMatmulBackward,
  quantTileFor,
  uploadQuantized,
} from "./quant/qmatmul.ts";
import { gemvName } from "./quant/gemv.ts";
import { tileName } from "./quant/tiled.ts";

/** One row of the self-check. */
export interface SelfCheckResult {
  /** Kernel name, e.g. `register-16x16-wg8x8`. */
  kernel: string;
  /** The problem that was run. */
  spec: MatmulSpec;
  /** ‖gpu − cpu‖ / ‖cpu‖. */
  relativeError: number;
  /** The f32 tolerance it was held to. */
  tolerance: number;
  /** relativeError < tolerance. */
  ok: boolean;
}

/** Run each kernel on a few odd-sized problems with a fresh random `seed`. */
export async function selfCheck(rt: GpuRuntime, seed = Date.now()): Promise<SelfCheckResult[]> {
  const kernels: MatmulKernelConfig[] = [
    NAIVE_MATMUL,
    defaultMatmulKernel(rt.variants),
    defaultMatmulKernel(rt.variants, 17, 17),
    GPU_MATMUL,
  ];
  const specs: MatmulSpec[] = [
    { m: 67, n: 45, k: 129 },
    { m: 33, n: 64, k: 68, transB: true, batch: 2, broadcastB: true },
    { m: 20, n: 31, k: 9, transA: true, alpha: 0.5, beta: 1 },
  ];
  const results: SelfCheckResult[] = [];
  for (const kernel of kernels) {
    for (const spec of specs) {
      const batch = spec.batch ?? 1;
      const aData = randomF32(batch * spec.m * spec.k, seed++);
      const bData = randomF32((spec.broadcastB ? 1 : batch) * spec.k * spec.n, seed++);
      const cData = randomF32(batch * spec.m * spec.n, seed++);
      const a = rt.upload(aData, [aData.length]);
      const b = rt.upload(bData, [bData.length]);
      const c = rt.upload(cData, [cData.length]);
      await matmul(rt, a, b, spec, { out: c, kernel });
      const got = await rt.read(c);
      const ref = new Float64Array(cData);
      matmulCpu(aData, bData, ref, spec);
      const err = relativeError(got, ref);
      results.push({
        kernel: kernelName(kernel),
        spec,
        relativeError: err,
        tolerance: TOLERANCE.f32,
        ok: err < TOLERANCE.f32,
      });
      for (const t of [a, b, c]) t.release();
    }
  }
  results.push(...await frozenCheck(rt, seed));
  return results;
}

/** The frozen NF4 products as the runtime's variants run them: 1, 3 and 37 tokens of 130 → 45. */
async function frozenCheck(rt: GpuRuntime, seed: number): Promise<SelfCheckResult[]> {
  const [rows, cols] = [45, 130];
  const q = quantizeNf4(randomF32(rows * cols, seed++), rows, cols);
  const dense = dequantizeNf4(q);
  const w = uploadQuantized(rt, q);
  const results: SelfCheckResult[] = [];
  const record = (kernel: string, spec: MatmulSpec, got: ArrayLike<number>, ref: Float64Array) => {
    const err = relativeError(got, ref);
    results.push({
      kernel,
      spec,
      relativeError: err,
      tolerance: TOLERANCE.f32,
      ok: err < TOLERANCE.f32,
    });
  };
  for (const tokens of [1, 3, 37]) {
    const gemv = quantGemvFor(rt, tokens);
    const tile = quantTileFor(rt, tokens, rows);
    const name = gemv ? `gemv-${gemvName(gemv)}` : tile ? `tiled-${tileName(tile)}` : "cpu-adapter";
    const xData = randomF32(tokens * cols, seed++);
    const x = rt.upload(xData, [tokens, cols]);
    const y = await quantMatmul(rt, x, w);
    const spec = { m: tokens, n: rows, k: cols, transB: true };
    const yRef = new Float64Array(tokens * rows);
    matmulCpu(xData, dense, yRef, spec);
    record(`nf4-${name}`, spec, await rt.read(y), yRef);
    const bTile = quantTileFor(rt, Math.max(tokens, 8), cols);
    const dyData = randomF32(tokens * rows, seed++);
    const dy = rt.upload(dyData, [tokens, rows]);
    const dx = await quantMatmulBackward(rt, dy, w);
    const bSpec = { m: tokens, n: cols, k: rows };
    const dxRef = new Float64Array(tokens * cols);
    matmulCpu(dyData, dense, dxRef, bSpec);
    record(
      `nf4-bwd-${bTile ? `tiled-${tileName(bTile)}` : "cpu-adapter"}`,
      bSpec,
      await rt.read(dx),
      dxRef,
    );
    for (const t of [x, y, dy, dx]) t.release();
  }
  w.release();
  return results;
}
