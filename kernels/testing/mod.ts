/**
 * Helpers shared by the kernel tests: seeded random data, error norms, the test GPU.
 *
 * A kernel test that cannot get an adapter must fail with the reason, never skip: `testRuntime`
 * throws the acquisition error as is.
 */
import { GpuRuntime } from "../runtime/runtime.ts";
import { sharedGpu } from "../runtime/device.ts";
import type { KernelVariantRequest } from "../runtime/variants.ts";
import { rng } from "../cpu/random.ts";

export { rng };

const runtimes = new Map<string, Promise<GpuRuntime>>();

/**
 * The process-wide runtime for tests, one per variant request (`{ target: "gpu" }` runs the GPU
 * kernel family on a CPU adapter); throws (failing the test) when WebGPU is unavailable.
 */
export function testRuntime(kernels: KernelVariantRequest = {}): Promise<GpuRuntime> {
  const key = JSON.stringify([kernels.target, kernels.subgroups, kernels.f16]);
  let runtime = runtimes.get(key);
  if (!runtime) {
    runtime = sharedGpu().then((gpu) => new GpuRuntime(gpu, { kernels }));
    runtimes.set(key, runtime);
  }
  return runtime;
}

/** `n` values uniform in [-1, 1) from `seed`; never all zero. */
export function randomF32(n: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 2 * next() - 1;
  return out;
}

/** ‖out − ref‖₂ / ‖ref‖₂ in float64; NaN anywhere in `out` gives Infinity. */
export function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new RangeError(`length ${out.length} vs ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) return Infinity;
    const d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Relative tolerance per dtype for kernels compared with a float64 reference. */
export const TOLERANCE = { f32: 1e-5, f16: 2e-3 } as const;
