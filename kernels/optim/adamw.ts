/**
 * AdamW (Loshchilov & Hutter; PyTorch's `torch.optim.AdamW` update order) on the GPU, one dispatch
 * per parameter tensor, with its float64 CPU twin:
 *   p ← p − lr·λ·p                      (decoupled weight decay)
 *   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
 *   p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)
 */
import { grid1d, uniformLayout } from "../runtime/launch.ts";
import type { Batch } from "../runtime/batch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";

/** Hyper-parameters of one AdamW step. */
export interface AdamWStep {
  /** Learning rate of this step (after any schedule). */
  lr: number;
  /** β1 (default 0.9). */
  beta1?: number;
  /** β2 (default 0.999). */
  beta2?: number;
  /** ε (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay λ (default 0). */
  weightDecay?: number;
  /** 1-based step number t (for the bias corrections). */
  step: number;
  /** Multiplies the gradient first (global-norm clipping; 1/accumulation). Default 1. */
  gradScale?: number;
}

function resolve(s: AdamWStep) {
  const r = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, gradScale: 1, ...s };
  if (!(r.step >= 1) || !Number.isInteger(r.step)) {
    throw new RangeError(`adamw: step=${r.step} must be ≥ 1`);
  }
  return r;
}

const PARAMS = uniformLayout(
  "P",
  [
    ["n", "u32"],
    ["lr", "f32"],
    ["beta1", "f32"],
    ["beta2", "f32"],
    ["eps", "f32"],
    ["decay", "f32"],
    ["bc1", "f32"],
    ["sqrtBc2", "f32"],
    ["oneMinusBeta1", "f32"],
    ["oneMinusBeta2", "f32"],
    ["gradScale", "f32"],
  ] as const,
);

const ADAMW_WGSL = /* wgsl */ `
${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = p.gradScale * grad[i];
  var w = param[i] * (1.0 - p.lr * p.decay);
  // 1−β arrives from the host: 1.0 − f32(0.999) in f32 is off by 1.3e-5 relative.
  let mi = p.beta1 * m[i] + p.oneMinusBeta1 * g;
  let vi = p.beta2 * v[i] + p.oneMinusBeta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = w - (p.lr / p.bc1) * mi / (sqrt(vi) / p.sqrtBc2 + p.eps);
}`;

/** Record one AdamW update of `param` in place (m, v: zero-initialised state of the same size). */
export async function adamwStep(
  rt: GpuRuntime,
  batch: Batch,
  t: { param: GpuTensor; grad: GpuTensor; m: GpuTensor; v: GpuTensor },
  step: AdamWStep,
): Promise<void> {
  const s = resolve(step);
  const n = t.param.size;
  for (const [k, x] of Object.entries(t)) {
    if (x.size !== n) throw new RangeError(`adamw: ${k} has ${x.size} elements, param ${n}`);
  }
  const pipeline = await rt.pipelines.get(ADAMW_WGSL, "optim/adamw");
  const uniform = batch.uniform(PARAMS.pack({
    n,
    lr: s.lr,
    beta1: s.beta1,
    beta2: s.beta2,
    eps: s.eps,
    decay: s.weightDecay,
    bc1: 1 - s.beta1 ** s.step,
    sqrtBc2: Math.sqrt(1 - s.beta2 ** s.step),
    oneMinusBeta1: 1 - s.beta1,
    oneMinusBeta2: 1 - s.beta2,
    gradScale: s.gradScale,
  }));
  batch.dispatch(
    pipeline,
    [uniform, t.param.binding, t.grad.binding, t.m.binding, t.v.binding],
    grid1d(rt, n),
  );
}

/** The same update in float64 on host arrays (in place). */
export function adamwStepCpu(
  t: {
    param: Float64Array | Float32Array;
    grad: ArrayLike<number>;
    m: Float64Array | Float32Array;
    v: Float64Array | Float32Array;
  },
  step: AdamWStep,
): void {
  const s = resolve(step);
  const bc1 = 1 - s.beta1 ** s.step;
  const sqrtBc2 = Math.sqrt(1 - s.beta2 ** s.step);
  for (let i = 0; i < t.param.length; i++) {
    const g = s.gradScale * t.grad[i];
    const w = t.param[i] * (1 - s.lr * s.weightDecay);
    t.m[i] = s.beta1 * t.m[i] + (1 - s.beta1) * g;
    t.v[i] = s.beta2 * t.v[i] + (1 - s.beta2) * g * g;
    t.param[i] = w - (s.lr / bc1) * t.m[i] / (Math.sqrt(t.v[i]) / sqrtBc2 + s.eps);
  }
}
