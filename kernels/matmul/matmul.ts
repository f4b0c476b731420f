/**
 * Host side of the dense matmul: picks a kernel, checks operands, records the dispatch.
 */
import {
  checkMatmulOperands,
  type FullMatmulSpec,
  type MatmulSpec,
  resolveMatmulSpec,
} from "../cpu/matmul.ts";
import type { Batch } from "../runtime/batch.ts";
import { isCpuAdapter, type KernelVariants } from "../runtime/variants.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import {
  kernelName,
  type MatmulKernelConfig,
  matmulWgsl,
  vec4Layout,
  workgroupTile,
} from "./wgsl.ts";

/** The baseline kernel every benchmark ratio is measured against. */
export const NAIVE_MATMUL: MatmulKernelConfig = { kind: "naive", wx: 8, wy: 8 };

/**
 * Default for CPU adapters (llvmpipe, SwiftShader, WARP) on large outputs: the barrier-free
 * register kernel with a 16×16 block per invocation (one gathered element feeds 16 FMAs).
 * Chosen by `deno task perf --sweep` on llvmpipe/AVX2; see README "Performance".
 */
export const CPU_ADAPTER_MATMUL: MatmulKernelConfig = {
  kind: "register",
  tm: 16,
  tn: 16,
  wx: 8,
  wy: 8,
};

/** CPU adapters, outputs under 256×256: smaller blocks so edge tiles waste less work. */
export const CPU_ADAPTER_MATMUL_SMALL: MatmulKernelConfig = {
  kind: "register",
  tm: 8,
  tn: 8,
  wx: 8,
  wy: 8,
};

/** Default for real GPUs: workgroup-memory tiling, 64×64 tile, 4×4 per invocation. */
export const GPU_MATMUL: MatmulKernelConfig = {
  kind: "shared",
  tm: 4,
  tn: 4,
  wx: 16,
  wy: 16,
  bk: 16,
};

export { isCpuAdapter };

/**
 * GPUs, outputs of at least 512 × 512: 128 × 128 per workgroup, 8 × 8 per invocation in vec4
 * chunks (64 multiply-adds per 4 vec4 reads of workgroup memory).
 */
export const GPU_MATMUL_LARGE: MatmulKernelConfig = {
  kind: "shared",
  tm: 8,
  tn: 8,
  wx: 16,
  wy: 16,
  bk: 8,
};

/** The kernel `matmul` uses for these variants (`rt.variants`), for an m×n output, when none is given. */
export function defaultMatmulKernel(v: KernelVariants, m = 1024, n = 1024): MatmulKernelConfig {
  if (v.target === "gpu") return m >= 512 && n >= 512 ? GPU_MATMUL_LARGE : GPU_MATMUL;
  // Tall outputs 33–64 wide (the per-token Kronecker products over many tokens): a 16×16 block
  // would leave half of a 128-wide tile idle. 16×8 ran 1.5–2× faster at [32768, 64] (k = 64).
  if (n > 32 && n <= 64 && m >= 256) return { kind: "register", tm: 16, tn: 8, wx: 8, wy: 8 };
  if (m * n >= 256 * 256) return CPU_ADAPTER_MATMUL;
  // Narrow outputs (e.g. the per-token 128×32 products of Kronecker factors): shape the 64-lane
  // workgroup's tile to the output so no half of it idles.
  if (n <= 32 && m >= 128) return { ...CPU_ADAPTER_MATMUL_SMALL, wx: 4, wy: 16 };
  if (m <= 32 && n >= 128) return { ...CPU_ADAPTER_MATMUL_SMALL, wx: 16, wy: 4 };
  return CPU_ADAPTER_MATMUL_SMALL;
}

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Write into this tensor (required when beta ≠ 0). Otherwise a new tensor is returned. */
  out?: GpuTensor;
  /** Kernel family and tile shape; defaults to {@link defaultMatmulKernel}. */
  kernel?: MatmulKernelConfig;
  /** Record into this batch instead of submitting (the caller submits). */
  batch?: Batch;
}

/** Uniform block matching `MATMUL_PARAMS_WGSL`. */
export function matmulParams(s: FullMatmulSpec): ArrayBuffer {
  const buf = new ArrayBuffer(48);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  u[0] = s.m;
  u[1] = s.n;
  u[2] = s.k;
  u[3] = s.broadcastA ? 0 : s.m * s.k;
  u[4] = s.broadcastB ? 0 : s.k * s.n;
  u[5] = s.m * s.n;
  f[6] = s.alpha;
  f[7] = s.beta;
  u[8] = s.reduceBatch;
  return buf;
}

/**
 * C = alpha·op(A)·op(B) + beta·C on the GPU, batched. Operands are f32 tensors whose element
 * counts match `spec` (shape is free: [m,k] or [batch,m,k] are the same bytes).
 * Without `options.batch` the work is submitted and awaited; with it, only recorded.
 */
export async function matmul(
  rt: GpuRuntime,
  a: GpuTensor,
  b: GpuTensor,
  spec: MatmulSpec,
  options: MatmulOptions = {},
): Promise<GpuTensor> {
  const s = resolveMatmulSpec(spec);
  a.check("matmul A", "f32");
  b.check("matmul B", "f32");
  if (s.beta !== 0 && !options.out) {
    throw new Error("matmul: beta ≠ 0 accumulates into C, so options.out must be given");
  }
  const out = options.out ?? rt.empty([s.batch, s.m, s.n], "f32");
  out.check("matmul C", "f32");
  checkMatmulOperands(s, { a: a.size, b: b.size, c: out.size });
  if (out.buffer === a.buffer || out.buffer === b.buffer) {
    throw new Error("matmul: C must not alias A or B");
  }
  const outBatch = s.batch / s.reduceBatch;
  if (outBatch > rt.device.limits.maxComputeWorkgroupsPerDimension) {
    throw new RangeError(`matmul: batch ${outBatch} exceeds the device's dispatch limit`);
  }
  const cfg = options.kernel ?? defaultMatmulKernel(rt.variants, s.m, s.n);
  const layout = { ...vec4Layout(cfg, s), reduce: s.reduceBatch > 1 };
  const label = `matmul/${kernelName(cfg)}${s.transA ? "/tA" : ""}${s.transB ? "/tB" : ""}` +
    `${layout.vecA ? "/vA" : ""}${layout.vecB ? "/vB" : ""}${layout.reduce ? "/reduce" : ""}`;
  const pipeline = await rt.pipelines.get(matmulWgsl(cfg, layout), label);
  const tile = workgroupTile(cfg);
  const batch = options.batch ?? rt.batch();
  const ownBatch = options.batch === undefined;
  if (s.m * s.n * s.batch > 0) {
    batch.dispatch(
      pipeline,
      [batch.uniform(matmulParams(s)), a.binding, b.binding, out.binding],
      [Math.ceil(s.n / tile.cols), Math.ceil(s.m / tile.rows), outBatch],
      label,
    );
  }
  if (ownBatch) await batch.submit();
  return out;
}
