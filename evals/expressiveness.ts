/**
 * Expressiveness at matched parameter budgets: fit a target update T of a d×d layer with each
 * adapter by gradient descent on the GPU and report ‖ΔW − T‖_F / ‖T‖_F against trainable
 * parameters. The layer is fed the identity (d tokens, one per input feature), so the layer output
 * is W'ᵀ and the loss ½‖x·W'ᵀ − (W0 + T)ᵀ‖² is exactly the Frobenius fit of the merged weight.
 * Every adapter trains through its own GPU forward/backward kernels and AdamW.
 *
 * This is the paper's claim in miniature: Kronecker mixtures vs low rank at equal size.
 */
import { FrozenMatrix } from "../kernels/quant/frozen.ts";
import { difference } from "../kernels/adapters/ops.ts";
import { adamwStep } from "../kernels/optim/adamw.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../kernels/runtime/tensor.ts";
import type { GpuAdapterLayer } from "../models/adapters/adapter.ts";
import { lokrTrainableParams } from "../models/adapters/lokr/config.ts";
import { proposeMokaShapes } from "../models/adapters/moka/shapes.ts";
import {
  type AdapterConfig,
  createAdapter,
  parseAdapterConfig,
  trainableParams,
} from "../models/adapters/registry.ts";

/** One adapter configuration sized to a budget. */
export interface BudgetedAdapter {
  /** Series name in tables and plots. */
  family: string;
  /** The config. */
  config: AdapterConfig;
  /** Its exact trainable-parameter count on the layer. */
  params: number;
}

function divisors(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1).filter((k) => n % k === 0);
}

/**
 * For each family, the configuration with the most trainable parameters not above `budget` on a
 * d×d layer (left out when none fits). MoKA: up to `maxComponents` distinct shapes from
 * {@link proposeMokaShapes}; MoKA_s: the smallest identity blocks (largest Bs) that fit; LoKr:
 * PEFT's layout over (factor, r); DoRA with the exact (not detached) norm gradient, since this is
 * a fit, not a memory-bound fine-tune.
 */
export function adaptersForBudget(d: number, budget: number, maxComponents = 8): BudgetedAdapter[] {
  const out: BudgetedAdapter[] = [];
  const add = (family: string, raw: unknown) => {
    const config = parseAdapterConfig(raw);
    const params = trainableParams(config, d, d);
    if (params <= budget) out.push({ family, config, params });
  };
  const r = Math.floor(budget / (2 * d));
  if (r >= 1) add("LoRA", { kind: "lora", r, alpha: r });
  const rDora = Math.floor((budget - d) / (2 * d));
  if (rDora >= 1) add("DoRA", { kind: "dora", r: rDora, alpha: rDora, detachNorm: false });
  // MoKA: the number of components (up to `maxComponents`, distinct shapes) that uses most of
  // the budget; divisibility leaves gaps a single shape set cannot fill.
  let bestMoka: { a: [number, number][]; params: number } | null = null;
  for (let r = 1; r <= maxComponents; r++) {
    try {
      const shapes = proposeMokaShapes(d, d, budget - r, r);
      const params = shapes.reduce((n, s) => n + s.params, r);
      if (!bestMoka || params > bestMoka.params) bestMoka = { a: shapes.map((s) => s.a), params };
    } catch { /* this many distinct shapes do not fit */ }
  }
  if (bestMoka) {
    add("MoKA", { kind: "moka", components: bestMoka.a });
    add("MoKA (frozen gate)", { kind: "moka", components: bestMoka.a, gate: "frozen" });
  }
  // MoKA_s: identity blocks k (B is (d/k)²); the `components` cheapest-first distinct k that fit.
  const ks = divisors(d).filter((k) => k > 1).sort((a, b) => a - b);
  const chosen: number[] = [];
  let used = 4;
  for (const k of ks) {
    if (chosen.length === 4) break;
    if (used + (d / k) ** 2 <= budget) {
      chosen.push(k);
      used += (d / k) ** 2;
    }
  }
  if (chosen.length) {
    add("MoKA_s", {
      kind: "moka",
      components: chosen.map((k) => [k, k]),
      identityA: true,
      zeroInit: "B",
    });
  }
  try {
    const [one] = proposeMokaShapes(d, d, budget, 1);
    add("KronA", { kind: "krona", a: one.a });
  } catch { /* nothing fits */ }
  let best: { factor: number; r: number; params: number } | null = null;
  for (const factor of [-1, ...divisors(d).filter((f) => f > 1 && f < d)]) {
    for (let rk = 1; rk <= d; rk *= 2) {
      const cfg = {
        kind: "lokr" as const,
        r: rk,
        alpha: rk,
        decomposeBoth: false,
        decomposeFactor: factor,
      };
      const p = lokrTrainableParams(cfg, d, d);
      if (p <= budget && (!best || p > best.params)) best = { factor, r: rk, params: p };
    }
  }
  if (best) add("LoKr", { kind: "lokr", r: best.r, alpha: best.r, decomposeFactor: best.factor });
  return out;
}

/** Hyper-parameters of one fit. */
export interface FitOptions {
  /** Adam steps. */
  steps: number;
  /** Peak learning rate (cosine decay to 0 after a 5 % warm-up). */
  lr: number;
  /** Init seed. */
  seed: number;
  /** Steps recorded per GPU submit (fewer round trips). */
  stepsPerSubmit?: number;
}

/** Result of fitting one adapter to one target. */
export interface FitResult {
  /** Adapter family. */
  family: string;
  /** Config used. */
  config: AdapterConfig;
  /** Trainable parameters. */
  params: number;
  /** Final ‖ΔW − T‖/‖T‖. */
  relError: number;
  /** [step, relative error] every ~10 % of the run. */
  curve: [number, number][];
  /** Wall seconds. */
  seconds: number;
}

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = m[i * cols + j];
  return out;
}

function frobenius(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

/**
 * Fit W0 + ΔW ≈ W0 + T with `adapter` on the GPU. `w0` and `target` are [d, d] (target is T, not
 * W0 + T).
 */
export async function fitTarget(
  rt: GpuRuntime,
  entry: BudgetedAdapter,
  w0: Float32Array,
  target: Float32Array,
  d: number,
  options: FitOptions,
): Promise<FitResult> {
  const started = performance.now();
  const adapter = createAdapter(entry.config, d, d, options.seed, w0);
  const eye = new Float32Array(d * d);
  for (let i = 0; i < d; i++) eye[i * d + i] = 1;
  const goal = transpose(Float32Array.from(w0, (w, i) => w + target[i]), d, d);
  const tensors: GpuTensor[] = [];
  const keep = (t: GpuTensor) => (tensors.push(t), t);
  const x = keep(rt.upload(eye, [d, d]));
  const base = keep(rt.upload(transpose(w0, d, d), [d, d])); // x·W0ᵀ with x = I
  const wanted = keep(rt.upload(goal, [d, d]));
  const w0Gpu = keep(rt.upload(w0, [d, d]));
  const y = keep(rt.empty([d, d]));
  const dy = keep(rt.empty([d, d]));
  const dx = keep(rt.empty([d, d]));
  let layer: GpuAdapterLayer | null = null;
  const w0Frozen = FrozenMatrix.wrapF32(rt, w0Gpu);
  try {
    layer = await adapter.toGpu(rt, w0Frozen);
    const state = Object.entries(layer.grads).map(([name, grad]) => ({
      param: layer!.params[name],
      grad,
      m: keep(rt.upload(new Float32Array(grad.size), grad.shape)),
      v: keep(rt.upload(new Float32Array(grad.size), grad.shape)),
    }));
    const targetNorm = frobenius(target);
    const curve: [number, number][] = [];
    const perSubmit = options.stepsPerSubmit ?? 10;
    const warmup = Math.max(1, Math.round(0.05 * options.steps));
    const lrAt = (step: number) =>
      step <= warmup
        ? (options.lr * step) / warmup
        : 0.5 * options.lr * (1 + Math.cos((Math.PI * (step - warmup)) / (options.steps - warmup)));
    const measure = async (step: number) => {
      const b = rt.batch();
      b.copy(base.buffer, 0, y.buffer, 0, y.byteLength);
      await layer!.forward(b, x, y, d);
      await difference(rt, b, { dst: dy, a: y, b: wanted });
      await b.submit();
      const err = frobenius(await rt.read(dy)) / targetNorm;
      curve.push([step, err]);
      return err;
    };
    await measure(0);
    const every = Math.max(perSubmit, Math.round(options.steps / 10 / perSubmit) * perSubmit);
    for (let step = 1; step <= options.steps;) {
      const b = rt.batch();
      for (let k = 0; k < perSubmit && step <= options.steps; k++, step++) {
        b.copy(base.buffer, 0, y.buffer, 0, y.byteLength);
        await layer.forward(b, x, y, d, { train: true });
        await difference(rt, b, { dst: dy, a: y, b: wanted });
        const dyBase = await layer.backward(b, x, dy, dx, d);
        void dyBase; // W0 is frozen: only the adapter's gradients matter here
        for (const s of state) await adamwStep(rt, b, s, { lr: lrAt(step), step });
      }
      await b.submit();
      if ((step - 1) % every === 0 && step - 1 < options.steps) await measure(step - 1);
    }
    const relError = await measure(options.steps);
    return {
      family: entry.family,
      config: entry.config,
      params: entry.params,
      relError,
      curve,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    layer?.release();
    w0Frozen.release();
    for (const t of tensors) t.release();
  }
}
