/**
 * Cross-entropy over a vocabulary that is never materialised whole: the logits of a chunk of rows
 * arrive one vocabulary block at a time ([rows, block] buffers), and
 *
 *   1. `ceStats` folds each block into a running max m, sum s = Σ exp(l − m) and the target's logit
 *      (the online log-sum-exp of FlashAttention and Liger's fused linear cross-entropy);
 *   2. `ceFinish` writes loss = log s + m − l_target per row and keeps lse = m + log s;
 *   3. `ceGrad` turns a block of logits into its gradient (softmax − one-hot) / count in place,
 *      which the caller multiplies back through the classifier block.
 *
 * Masked rows (target −1) get loss 0 and a zero gradient. The float64 reference is
 * `kernels/llama/cpu/cross_entropy.ts` on the whole row.
 *
 * `ceStats` has two variants. On CPU adapters one invocation folds a whole row (two passes over
 * its block); on GPUs (`rt.variants.target === "gpu"`) a workgroup folds a row: each invocation
 * reads a strided share of the block once with coalesced loads, keeping its own online (max, sum),
 * and a fixed workgroup-memory tree merges the pairs, so the result is the same run to run.
 * `ceFinish` and `ceGrad` are element-wise with consecutive invocations on consecutive elements,
 * which suits both families.
 */
import type { Batch } from "../runtime/batch.ts";
import { FLAT_INDEX_WGSL, grid1d, launch, uniformLayout } from "../runtime/launch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import type { KernelVariants } from "../runtime/variants.ts";

const MAIN = `@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);`;

// Row r of the chunk is row r0 + r of the step (targets and loss are whole-step buffers).
const PARAMS = uniformLayout(
  "P",
  [
    ["rows", "u32"],
    ["width", "u32"],
    ["v0", "u32"],
    ["r0", "u32"],
    ["first", "u32"],
    ["count", "f32"],
  ] as const,
);

const HEADER = `${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;`;

const STATS_WGSL = `${HEADER}
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> s: array<f32>;
@group(0) @binding(5) var<storage, read_write> tl: array<f32>;
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.rows) { return; }
  var mx = -3.0e38;
  var sum = 0.0;
  var tgt = 0.0;
  if (p.first == 0u) { mx = m[i]; sum = s[i]; tgt = tl[i]; }
  let o = i * p.width;
  var bm = -3.0e38;
  for (var j = 0u; j < p.width; j++) { bm = max(bm, logits[o + j]); }
  let nm = max(mx, bm);
  sum *= exp(mx - nm);
  for (var j = 0u; j < p.width; j++) { sum += exp(logits[o + j] - nm); }
  let t = targets[p.r0 + i];
  if (t >= 0 && u32(t) >= p.v0 && u32(t) < p.v0 + p.width) { tgt = logits[o + u32(t) - p.v0]; }
  m[i] = nm;
  s[i] = sum;
  tl[i] = tgt;
}`;

// Invocations per row of the GPU stats kernel (WebGPU guarantees 256); a power of two for the tree.
const ROW_WG = 256;

// GPU stats: a workgroup per row (rows folded to 2-D past the dispatch limit).
const STATS_GPU_WGSL = `${HEADER}
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> s: array<f32>;
@group(0) @binding(5) var<storage, read_write> tl: array<f32>;
var<workgroup> wm: array<f32, ${ROW_WG}>;
var<workgroup> ws: array<f32, ${ROW_WG}>;

@compute @workgroup_size(${ROW_WG})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let i = wid.x + wid.y * nwg.x;
  if (i >= p.rows) { return; }
  let o = i * p.width;
  // One read per logit: this invocation's share folded online (an exp more only when the max grows).
  var mx = -3.0e38;
  var sum = 0.0;
  for (var j = tid; j < p.width; j += ${ROW_WG}u) {
    let x = logits[o + j];
    if (x > mx) {
      sum = sum * exp(mx - x) + 1.0;
      mx = x;
    } else {
      sum += exp(x - mx);
    }
  }
  wm[tid] = mx;
  ws[tid] = sum;
  // Tree over the pairs: (m₁, s₁) ⊕ (m₂, s₂) = (M, s₁·exp(m₁ − M) + s₂·exp(m₂ − M)).
  for (var h = ${ROW_WG / 2}u; h > 0u; h >>= 1u) {
    workgroupBarrier();
    if (tid < h) {
      let m1 = wm[tid];
      let m2 = wm[tid + h];
      let nm = max(m1, m2);
      ws[tid] = ws[tid] * exp(m1 - nm) + ws[tid + h] * exp(m2 - nm);
      wm[tid] = nm;
    }
  }
  if (tid == 0u) {
    var mx0 = -3.0e38;
    var s0 = 0.0;
    var tgt = 0.0;
    if (p.first == 0u) { mx0 = m[i]; s0 = s[i]; tgt = tl[i]; }
    let nm = max(mx0, wm[0]);
    let t = targets[p.r0 + i];
    if (t >= 0 && u32(t) >= p.v0 && u32(t) < p.v0 + p.width) { tgt = logits[o + u32(t) - p.v0]; }
    m[i] = nm;
    s[i] = s0 * exp(mx0 - nm) + ws[0] * exp(wm[0] - nm);
    tl[i] = tgt;
  }
}`;

/**
 * The `ceStats` kernel these variants record: one invocation per row on CPU adapters, one
 * workgroup per row on GPUs. `perRow` tells how it is dispatched.
 */
export function ceStatsKernel(
  v: KernelVariants,
): { code: string; label: string; perRow: "invocation" | "workgroup" } {
  return v.target === "gpu"
    ? { code: STATS_GPU_WGSL, label: "llama/ce-stats-gpu", perRow: "workgroup" }
    : { code: STATS_WGSL, label: "llama/ce-stats", perRow: "invocation" };
}

const FINISH_WGSL = `${HEADER}
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read> tl: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.rows) { return; }
  let lse = m[i] + log(s[i]);
  m[i] = lse;
  var l = 0.0;
  if (targets[p.r0 + i] >= 0) { l = lse - tl[i]; }
  loss[p.r0 + i] = l;
}`;

const GRAD_WGSL = `${HEADER}
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;
${FLAT_INDEX_WGSL}
${MAIN}
  if (i >= p.rows * p.width) { return; }
  let r = i / p.width;
  let j = i - r * p.width;
  let t = targets[p.r0 + r];
  var g = 0.0;
  if (t >= 0) {
    g = exp(logits[i] - lse[r]);
    if (u32(t) == p.v0 + j) { g -= 1.0; }
    g /= p.count;
  }
  logits[i] = g;
}`;

/** A chunk of rows of the step: their logits block and where they sit. */
export interface CeChunk {
  /** Logits [rows, width] of vocabulary entries [v0, v0 + width) for rows [r0, r0 + rows). */
  logits: GpuTensor;
  /** Rows in the chunk. */
  rows: number;
  /** Width of the vocabulary block. */
  width: number;
  /** First vocabulary entry of the block. */
  v0: number;
  /** First row of the chunk within the step. */
  r0: number;
}

function fields(c: CeChunk, first: boolean, count = 1): ArrayBuffer {
  return PARAMS.pack({
    rows: c.rows,
    width: c.width,
    v0: c.v0,
    r0: c.r0,
    first: first ? 1 : 0,
    count,
  });
}

function check(c: CeChunk, targets: GpuTensor, state: GpuTensor[]): void {
  if (
    c.logits.size !== c.rows * c.width || c.r0 + c.rows > targets.size ||
    state.some((t) => t.size < c.rows)
  ) {
    throw new RangeError(
      `cross-entropy chunk: [${c.rows}, ${c.width}] logits of ${c.logits.size}, rows from ${c.r0} ` +
        `of ${targets.size} targets`,
    );
  }
}

/**
 * Fold one vocabulary block into the running max `m`, sum `s` and target logit `tl` ([rows]);
 * `first` starts them afresh. `kernel` defaults to {@link ceStatsKernel} of `rt.variants`.
 */
export async function ceStats(
  rt: GpuRuntime,
  batch: Batch,
  a: { chunk: CeChunk; targets: GpuTensor; m: GpuTensor; s: GpuTensor; tl: GpuTensor },
  first: boolean,
  kernel: { code: string; label: string; perRow: "invocation" | "workgroup" } = ceStatsKernel(
    rt.variants,
  ),
): Promise<void> {
  const { chunk, targets, m, s, tl } = a;
  check(chunk, targets, [m, s, tl]);
  const buffers = [chunk.logits, targets, m, s, tl];
  if (kernel.perRow === "invocation") {
    await launch(rt, batch, kernel, fields(chunk, first), buffers, chunk.rows);
    return;
  }
  const pipeline = await rt.pipelines.get(kernel.code, kernel.label);
  batch.dispatch(
    pipeline,
    [batch.uniform(fields(chunk, first)), ...buffers.map((t) => t.binding)],
    grid1d(rt, chunk.rows, 1),
  );
}

/** loss[r0 + r] = log s + m − tl (0 where masked); `m` becomes the row's log-sum-exp. */
export async function ceFinish(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    rows: number;
    r0: number;
    targets: GpuTensor;
    m: GpuTensor;
    s: GpuTensor;
    tl: GpuTensor;
    loss: GpuTensor;
  },
): Promise<void> {
  const { rows, r0, targets, m, s, tl, loss } = a;
  if (r0 + rows > loss.size || loss.size !== targets.size) {
    throw new RangeError(`cross-entropy finish: rows [${r0}, ${r0 + rows}) of ${loss.size}`);
  }
  const chunk: CeChunk = { logits: loss, rows, width: 0, v0: 0, r0 };
  await launch(rt, batch, { code: FINISH_WGSL, label: "llama/ce-finish" }, fields(chunk, false), [
    targets,
    m,
    s,
    tl,
    loss,
  ], rows);
}

/** In place: a block of logits becomes (softmax − one-hot) / count; masked rows become 0. */
export async function ceGrad(
  rt: GpuRuntime,
  batch: Batch,
  a: { chunk: CeChunk; targets: GpuTensor; lse: GpuTensor; count: number },
): Promise<void> {
  const { chunk, targets, lse, count } = a;
  check(chunk, targets, [lse]);
  if (!(count > 0)) throw new RangeError(`cross-entropy: count ${count}`);
  await launch(
    rt,
    batch,
    { code: GRAD_WGSL, label: "llama/ce-grad" },
    fields(chunk, false, count),
    [targets, lse, chunk.logits],
    chunk.rows * chunk.width,
  );
}
