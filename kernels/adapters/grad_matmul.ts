/**
 * Weight gradients are long contractions over tokens: dW[m, n] = Σ_k L[k, m]·R[k, n] with k in
 * the tens of thousands and m·n small (a 64×64 factor). One matmul would give the whole job to a
 * handful of workgroups; split-K cuts k into slices that run as a batched matmul, then adds the
 * partial results. Slices never straddle a token, so k = tokens·perToken splits on token bounds.
 */
import { matmul } from "../matmul/matmul.ts";
import type { Batch } from "../runtime/batch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { sumSlices } from "./ops.ts";

/** Aim for about this many output tiles in flight: enough for a big GPU, cheap on a CPU. */
const TARGET_SLICES = 32;

/** The largest divisor of `tokens` not above `want` (1 when tokens is prime and large). */
export function sliceCount(tokens: number, want: number): number {
  for (let s = Math.min(want, tokens); s > 1; s--) if (tokens % s === 0) return s;
  return 1;
}

/**
 * out = beta·out + alpha·Σ over tokens (see `layout`), row-major operands. Split-K over tokens
 * when the output is small.
 */
export async function gradMatmul(
  rt: GpuRuntime,
  batch: Batch,
  args: GradMatmulArgs & {
    out: GpuTensor;
    beta?: number;
    /** Cap on the slices (each one m×n partial sum), to bound the scratch memory. */
    maxSlices?: number;
  },
): Promise<void> {
  const { left, right, out, m, n, tokens, alpha = 1, beta = 0 } = args;
  // Only split when the output is too small to fill the device on its own.
  const want = Math.min(
    args.maxSlices ?? Infinity,
    Math.max(1, Math.floor((TARGET_SLICES * 64 * 64) / Math.max(1, m * n))),
  );
  const slices = sliceCount(tokens, Math.min(want, TARGET_SLICES));
  if (slices === 1) {
    await matmul(rt, left, right, { ...sliceSpec(args, 1), alpha, beta }, { out, batch });
    return;
  }
  const partial = batch.scratch([slices, m, n]);
  await matmul(rt, left, right, { ...sliceSpec(args, slices), alpha }, { out: partial, batch });
  await sumSlices(rt, batch, { dst: out, src: partial, slices, beta });
  batch.recycle(partial);
}

/**
 * partial[s] += alpha·(the product over the s-th of `slots` token slices), for a gradient that
 * accumulates over many calls (token chunks): each call spreads its small product over `slots`
 * workgroups, and the caller sums the slots once at the end (`sumSlices`) instead of once per call.
 * When `slots` does not divide this call's tokens, fewer slots take them.
 */
export async function gradMatmulSlots(
  rt: GpuRuntime,
  batch: Batch,
  args: GradMatmulArgs & { partial: GpuTensor; slots: number },
): Promise<void> {
  const { left, right, partial, slots, m, n, tokens, alpha = 1 } = args;
  if (partial.size !== slots * m * n) {
    throw new RangeError(`gradMatmulSlots: partial of ${partial.size}, want ${slots}×${m}×${n}`);
  }
  const used = sliceCount(tokens, slots);
  const out = used === slots ? partial : partial.view([slots, m * n]).rows(0, used);
  await matmul(rt, left, right, { ...sliceSpec(args, used), alpha, beta: 1 }, { out, batch });
}

/** Operands of a gradient product Σ over tokens (see `layout`), row-major. */
export interface GradMatmulArgs {
  /** Left operand (see `layout`). */
  left: GpuTensor;
  /** Right operand (see `layout`). */
  right: GpuTensor;
  /** Rows of the gradient. */
  m: number;
  /** Columns of the gradient. */
  n: number;
  /** Tokens summed over. */
  tokens: number;
  /** Length of each token's contraction. */
  perTokenK: number;
  /** Scale of the product (default 1). */
  alpha?: number;
  /**
   * `stacked` (default): L is [tokens·perTokenK, m] and R [tokens·perTokenK, n], out = Lᵀ·R.
   * `perToken`: L is [tokens, m, perTokenK] and R [tokens, perTokenK, n], out = Σ_t L[t]·R[t]
   * (a batch-reduce matmul: no transposed copy of L is needed).
   */
  layout?: "stacked" | "perToken";
}

/** The batched matmul whose `slices` outputs are the products over equal token slices. */
function sliceSpec(args: GradMatmulArgs, slices: number) {
  const { m, n, tokens, perTokenK } = args;
  return args.layout === "perToken"
    ? { m, n, k: perTokenK, batch: tokens, reduceBatch: tokens / slices }
    : { m, n, k: (tokens * perTokenK) / slices, batch: slices, transA: true };
}
