/**
 * GPU variants of RMSNorm forward and backward: one workgroup per row.
 *
 * The CPU-adapter kernels (`ops.ts`) give each row to one invocation, which walks it twice. On a
 * GPU that is a few hundred invocations for a training step's rows (a few percent of the device)
 * and strided loads (each lane in its own row). Here a workgroup of 256 owns a row: its invocations
 * read consecutive vec4s (coalesced), reduce the row's sum of squares (forward) or ⟨w⊙dy, x⟩
 * (backward) through a fixed tree in workgroup memory, so the result is the same run to run, then
 * write the row the same way. The float64 twins are `kernels/llama/cpu/rmsnorm.ts`.
 */
import type { Batch } from "../runtime/batch.ts";
import { grid1d, uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";

/** Invocations per row. */
const WG = 256;

const P = uniformLayout(
  "P",
  [["rows", "u32"], ["dim", "u32"], ["eps", "f32"], ["accumulate", "u32"]] as const,
);

// Row index from a 2-D grid (rows past 65,535 fold into y), the tree, and element access that
// reads vec4s where the width allows.
function prologue(vec: boolean, bindings: string): string {
  const t = vec ? "vec4<f32>" : "f32";
  return `${P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
${bindings.replaceAll("ELEM", t)}
var<workgroup> red: array<f32, ${WG}>;

// The sum of every invocation's v, in a fixed order; all invocations get it.
fn rowSum(li: u32, v: f32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride /= 2u) {
    if (li < stride) { red[li] += red[li + stride]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier(); // red is reused by the next call
  return total;
}`;
}

const MAIN = `@compute @workgroup_size(${WG})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; } // uniform: the whole workgroup leaves
`;

function forwardWgslUncached(vec: boolean): string {
  const n = vec ? "p.dim / 4u" : "p.dim";
  const sq = vec ? "dot(v, v)" : "v * v";
  return `${
    prologue(
      vec,
      `@group(0) @binding(1) var<storage, read> x: array<ELEM>;
@group(0) @binding(2) var<storage, read> w: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> y: array<ELEM>;
@group(0) @binding(4) var<storage, read_write> inv: array<f32>;`,
    )
  }
${MAIN}
  let n = ${n};
  let o = row * n;
  var ss = 0.0;
  for (var k = li; k < n; k += ${WG}u) { let v = x[o + k]; ss += ${sq}; }
  let s = inverseSqrt(rowSum(li, ss) / f32(p.dim) + p.eps);
  if (li == 0u) { inv[row] = s; }
  for (var k = li; k < n; k += ${WG}u) { y[o + k] = x[o + k] * s * w[k]; }
}`;
}

function backwardWgslUncached(vec: boolean): string {
  const n = vec ? "p.dim / 4u" : "p.dim";
  const d = vec ? "dot(w[k] * dy[o + k], x[o + k])" : "w[k] * dy[o + k] * x[o + k]";
  const zero = vec ? "vec4<f32>(0.0)" : "0.0";
  return `${
    prologue(
      vec,
      `@group(0) @binding(1) var<storage, read> x: array<ELEM>;
@group(0) @binding(2) var<storage, read> w: array<ELEM>;
@group(0) @binding(3) var<storage, read> inv: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<ELEM>;
@group(0) @binding(5) var<storage, read_write> dx: array<ELEM>;`,
    )
  }
${MAIN}
  let n = ${n};
  let o = row * n;
  let s = inv[row];
  var part = 0.0;
  for (var k = li; k < n; k += ${WG}u) { part += ${d}; }
  let c = s * s * s * rowSum(li, part) / f32(p.dim);
  for (var k = li; k < n; k += ${WG}u) {
    var prev = ${zero};
    if (p.accumulate != 0u) { prev = dx[o + k]; }
    dx[o + k] = prev + s * w[k] * dy[o + k] - c * x[o + k];
  }
}`;
}

/** The forward's WGSL (memoised); `vec`: rows read as vec4 (dim % 4 = 0). */
export const rmsnormForwardGpuWgsl: (vec: boolean) => string = memoWgsl(forwardWgslUncached);
/** The backward's WGSL (memoised). */
export const rmsnormBackwardGpuWgsl: (vec: boolean) => string = memoWgsl(backwardWgslUncached);

async function record(
  rt: GpuRuntime,
  batch: Batch,
  code: string,
  label: string,
  rows: number,
  dim: number,
  eps: number,
  accumulate: boolean,
  buffers: GpuTensor[],
): Promise<void> {
  const pipeline = await rt.pipelines.get(code, label);
  batch.dispatch(
    pipeline,
    [
      batch.uniform(P.pack({ rows, dim, eps, accumulate: accumulate ? 1 : 0 })),
      ...buffers.map((t) => t.binding),
    ],
    grid1d(rt, rows, 1),
    label,
  );
}

/** y = x/rms(x)⊙w per row, inv[r] = 1/rms: a workgroup per row. Shapes checked by the caller. */
export async function rmsnormForwardGpu(
  rt: GpuRuntime,
  batch: Batch,
  a: { y: GpuTensor; inv: GpuTensor; x: GpuTensor; w: GpuTensor; eps: number },
): Promise<void> {
  const dim = a.w.size;
  const vec = dim % 4 === 0;
  await record(
    rt,
    batch,
    rmsnormForwardGpuWgsl(vec),
    `llama/rmsnorm-gpu${vec ? "/v4" : ""}`,
    a.inv.size,
    dim,
    a.eps,
    false,
    [a.x, a.w, a.y, a.inv],
  );
}

/** dx (+)= the RMSNorm backward: a workgroup per row. Shapes checked by the caller. */
export async function rmsnormBackwardGpu(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    dx: GpuTensor;
    x: GpuTensor;
    w: GpuTensor;
    inv: GpuTensor;
    dy: GpuTensor;
    accumulate: boolean;
  },
): Promise<void> {
  const dim = a.w.size;
  const vec = dim % 4 === 0;
  await record(
    rt,
    batch,
    rmsnormBackwardGpuWgsl(vec),
    `llama/rmsnorm-bwd-gpu${vec ? "/v4" : ""}`,
    a.inv.size,
    dim,
    0,
    a.accumulate,
    [a.x, a.w, a.inv, a.dy, a.dx],
  );
}
