/**
 * GPU variants of the Kronecker layer's products (`rt.variants.target === "gpu"`).
 *
 * Two things limit the matmul route on a GPU, and neither is FLOPs:
 * - Tile fit. The per-token products are small (32×128, 64×64, 128×32 per token) and the tall
 *   ones are narrow (n = 32); a fixed 64×64 tile leaves half of it idle on two of the three
 *   shapes. {@link gpuProductKernel} picks the workgroup-memory tile (32, 64 or 128 per side)
 *   that covers the output with the least padding, sized from `workgroupStorageBytes`.
 * - Serial reductions. A factor gradient is a few thousand outputs summed over every token: one
 *   or two output tiles, i.e. one or two workgroups, on a device that runs about a thousand at
 *   once. {@link gpuGradSlots} splits the token sum over enough partial-sum slots to fill the
 *   device (bounded by a memory budget and a shortest useful slice), {@link splitGrad} records
 *   the slices, and `sumSlices` adds the slots in a fixed order afterwards: no atomics, so the
 *   result is the same bits on every run.
 */
import { FLAT_INDEX_WGSL, launch, uniformLayout } from "../runtime/launch.ts";
import { matmul } from "../matmul/matmul.ts";
import { type MatmulKernelConfig, workgroupTile } from "../matmul/wgsl.ts";
import type { Batch } from "../runtime/batch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import { type GpuTensor, rowAlignment } from "../runtime/tensor.ts";
import type { KernelVariants } from "../runtime/variants.ts";
import type { GradMatmulArgs } from "./grad_matmul.ts";
import { sliceCount } from "./grad_matmul.ts";

/**
 * Workgroups a product should have in flight to fill a large GPU: about 132 SMs × 8 resident
 * 256-invocation workgroups. WebGPU does not report the SM count; overshooting on a smaller GPU
 * costs only slightly more partial-sum traffic.
 */
export const GPU_FILL_WORKGROUPS = 1024;

/**
 * Shortest contraction (multiply-adds per output) of one gradient slice: below it, writing and
 * re-reading the slot's m×n partial costs more than the slice's own loads.
 */
export const MIN_SLICE_K = 128;

/**
 * Workgroups at which a product counts as occupying the device for the tile choice (about two per
 * SM): beyond it a larger tile's reuse is worth more than more workgroups.
 */
const TILE_FILL_WORKGROUPS = GPU_FILL_WORKGROUPS / 4;

/** Tile edges the GPU products choose from (16 invocations per side × 2, 4 or 8 outputs). */
const TILE_EDGES = [32, 64, 128] as const;

/**
 * The workgroup-memory matmul tile for `batch` products of m×n each: the least padded work, then
 * about two workgroups per SM, then the larger tile (more reuse per staged element).
 * 256 invocations (16×16, the WebGPU minimum limit), BK from `workgroupStorageBytes` (half of it,
 * so two workgroups fit where the limit is the guaranteed 16 KiB).
 */
export function gpuProductKernel(
  v: KernelVariants,
  m: number,
  n: number,
  batch = 1,
): MatmulKernelConfig & { kind: "shared" } {
  let best: { cfg: MatmulKernelConfig & { kind: "shared" }; key: number[] } | null = null;
  for (const bm of TILE_EDGES) {
    for (const bn of TILE_EDGES) {
      const tiles = Math.ceil(m / bm) * Math.ceil(n / bn);
      const padded = tiles * bm * bn;
      const fills = tiles * batch >= TILE_FILL_WORKGROUPS;
      // Ties on padding: bigger tiles when the device is full anyway, more of them when not.
      const key = [padded, fills ? -bm * bn : bm * bn];
      let bk = 32;
      while (bk > 4 && bk * (bm + bn) * 4 > v.workgroupStorageBytes / 2) bk /= 2;
      const cfg = { kind: "shared", tm: bm / 16, tn: bn / 16, wx: 16, wy: 16, bk } as const;
      if (!best || key[0] < best.key[0] || (key[0] === best.key[0] && key[1] < best.key[1])) {
        best = { cfg, key };
      }
    }
  }
  return best!.cfg;
}

/** Output tiles (workgroups per batch entry) of the GPU product kernel for an m×n output. */
export function gpuProductTiles(v: KernelVariants, m: number, n: number): number {
  const t = workgroupTile(gpuProductKernel(v, m, n));
  return Math.ceil(m / t.rows) * Math.ceil(n / t.cols);
}

/**
 * Partial-sum slots for an m×n gradient summed over `tokens` tokens of `perTokenK` each: enough
 * slices that slots × tiles fills the device, each slice at least {@link MIN_SLICE_K} long and
 * whole tokens, and slots·m·n floats within `maxFloats`. 1 means: no split.
 */
export function gpuGradSlots(
  v: KernelVariants,
  args: { m: number; n: number; tokens: number; perTokenK: number; maxFloats: number },
): number {
  const { m, n, tokens, perTokenK, maxFloats } = args;
  const want = Math.ceil(GPU_FILL_WORKGROUPS / gpuProductTiles(v, m, n));
  const byLength = Math.floor(tokens / Math.ceil(MIN_SLICE_K / perTokenK));
  const byMemory = Math.floor(maxFloats / (m * n));
  return Math.max(1, Math.min(want, byLength, byMemory, tokens));
}

/**
 * How `tokens` tokens go into `slots` slots: `used` equal slices of `perSlice` tokens, then, when
 * those do not cover all tokens, `rest` single tokens added into slots 0..rest−1 by a second
 * dispatch. The rest exists only where the split point is a bindable offset; otherwise the
 * slices are the largest divisor of the tokens.
 */
export interface SplitGradPlan {
  /** Slots written by the equal slices. */
  used: number;
  /** Tokens per equal slice. */
  perSlice: number;
  /** Tokens after used·perSlice, one per slot. */
  rest: number;
}

/** The {@link SplitGradPlan} for one call; `tokenBytes` are L's and R's bytes per token. */
export function splitGradPlan(tokens: number, slots: number, tokenBytes: number[]): SplitGradPlan {
  const want = Math.max(1, Math.min(slots, tokens));
  const divisor = sliceCount(tokens, want);
  // A divisor of at least half the slots is good enough and needs no second dispatch.
  if (2 * divisor >= want) return { used: divisor, perSlice: tokens / divisor, rest: 0 };
  const perSlice = Math.floor(tokens / want);
  const split = want * perSlice;
  const rest = tokens - split;
  if (split % rowAlignment(...tokenBytes) !== 0) {
    return { used: divisor, perSlice: tokens / divisor, rest: 0 };
  }
  return { used: want, perSlice, rest };
}

/**
 * partial[s] = beta·partial[s] + alpha·(the product over slice s), for the slices of `plan`
 * (default {@link splitGradPlan}); the caller sums the slots with `sumSlices`. `partial` has at
 * least `used` slots of m×n. Records one dispatch, or two when the plan has a rest.
 */
export async function splitGrad(
  rt: GpuRuntime,
  batch: Batch,
  args: GradMatmulArgs & { partial: GpuTensor; slots: number; beta?: number; plan?: SplitGradPlan },
): Promise<void> {
  const { left, right, partial, slots, m, n, tokens, perTokenK, alpha = 1, beta = 0 } = args;
  if (partial.size < slots * m * n) {
    throw new RangeError(`splitGrad: partial of ${partial.size}, want ${slots}×${m}×${n}`);
  }
  const layout = args.layout ?? "stacked";
  const perToken = [left.size / tokens, right.size / tokens];
  const plan = args.plan ?? splitGradPlan(tokens, slots, perToken.map((e) => 4 * e));
  if (plan.used > slots || plan.rest > plan.used) {
    throw new RangeError(`splitGrad: plan ${JSON.stringify(plan)} for ${slots} slots`);
  }
  const kernel = gpuProductKernel(rt.variants, m, n, plan.used);
  const slotRows = partial.view([partial.size / (m * n), m * n]);
  const spec = (count: number, slices: number) =>
    layout === "perToken"
      ? { m, n, k: perTokenK, batch: count, reduceBatch: count / slices }
      : { m, n, k: (count * perTokenK) / slices, batch: slices, transA: true };
  const main = plan.used * plan.perSlice;
  const window = (t: GpuTensor, i: number, start: number, count: number) =>
    start === 0 && count === tokens ? t : t.view([tokens, perToken[i]]).rows(start, count);
  await matmul(
    rt,
    window(left, 0, 0, main),
    window(right, 1, 0, main),
    { ...spec(main, plan.used), alpha, beta },
    { out: slotRows.rows(0, plan.used), batch, kernel },
  );
  if (plan.rest === 0) return;
  await matmul(
    rt,
    window(left, 0, main, plan.rest),
    window(right, 1, main, plan.rest),
    { ...spec(plan.rest, plan.rest), alpha, beta: 1 },
    { out: slotRows.rows(0, plan.rest), batch, kernel },
  );
}

const SUM_SLOTS_GATED_P = uniformLayout(
  "P",
  [["n", "u32"], ["slots", "u32"], ["comp", "u32"], ["r", "u32"], ["scale", "f32"]] as const,
);

// dst = scale·softmax(gate)[comp]·Σ_k src[k]: the slots in index order (the same bits every
// run), the gate weight recomputed per invocation (r is small) with the max subtracted.
const SUM_SLOTS_GATED_WGSL = /* wgsl */ `
${SUM_SLOTS_GATED_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
${FLAT_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  var mx = gate[0];
  for (var j = 1u; j < p.r; j++) { mx = max(mx, gate[j]); }
  var z = 0.0;
  for (var j = 0u; j < p.r; j++) { z += exp(gate[j] - mx); }
  var s = 0.0;
  for (var k = 0u; k < p.slots; k++) { s += src[k * p.n + i]; }
  dst[i] = p.scale * (exp(gate[p.comp] - mx) / z) * s;
}`;

/**
 * dst = scale·softmax(gate)[comp]·Σ over `slots` stacked copies of dst's shape in `src`: a split
 * gradient's slots summed with the gate folded in, one dispatch where `sumSlices` and
 * `gatedAxpy` would take two.
 */
export async function sumSlotsGated(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    dst: GpuTensor;
    src: GpuTensor;
    slots: number;
    gate: GpuTensor;
    comp: number;
    scale?: number;
  },
): Promise<void> {
  const { dst, src, slots, gate, comp, scale = 1 } = args;
  if (src.size !== dst.size * slots) {
    throw new RangeError(`sumSlotsGated: ${src.size} ≠ ${slots}×${dst.size}`);
  }
  await launch(
    rt,
    batch,
    { code: SUM_SLOTS_GATED_WGSL, label: "adapter/sum-slots-gated" },
    SUM_SLOTS_GATED_P.pack({ n: dst.size, slots, comp, r: gate.size, scale }),
    [gate, src, dst],
    dst.size,
  );
}
