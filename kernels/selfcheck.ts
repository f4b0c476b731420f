/**
 * Kernel self-check: every matmul kernel family on fresh random inputs vs the CPU reference.
 * Used by `deno task reproduce` before any long run, so a broken adapter fails in seconds.
 */
import { matmulCpu, type MatmulSpec } from "./cpu/matmul.ts";
import { defaultMatmulKernel, GPU_MATMUL, matmul, NAIVE_MATMUL } from "./matmul/matmul.ts";
import { kernelName, type MatmulKernelConfig } from "./matmul/wgsl.ts";
import type { GpuRuntime } from "./runtime/runtime.ts";
import { randomF32, relativeError, TOLERANCE } from "./testing/mod.ts";

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
    defaultMatmulKernel(rt.gpu),
    defaultMatmulKernel(rt.gpu, 17, 17),
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
  return results;
}
