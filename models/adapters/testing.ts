/**
 * Shared checks for adapter tests: the float64 reference against central finite differences, and
 * the GPU layer against the reference on fresh random inputs.
 */
import { matmul } from "../../kernels/matmul/matmul.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import { randomF32, relativeError } from "../../kernels/testing/mod.ts";
import type { Adapter, AdapterMath, F64Params, GpuLayerOptions, PassOptions } from "./adapter.ts";

/** Give every parameter random non-zero values (a zero factor would hide half the gradient). */
export function randomizeParams(adapter: Adapter<{ kind: string }>, seed: number): void {
  const p = { ...adapter.params };
  let k = 0;
  for (const [name, v] of Object.entries(p)) {
    const r = randomF32(v.length, seed * 977 + k++);
    // Magnitudes stay positive so DoRA's m/‖·‖ stays away from a sign flip.
    p[name] = name === "magnitude" ? r.map((x) => 1 + Math.abs(x)) : r;
  }
  adapter.setParams(p);
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Max over parameters (and x) of ‖analytic − finite difference‖/‖finite difference‖ for
 * L = ⟨dy, forward⟩, central differences with step `eps` in float64. `surrogate` replaces the
 * differentiated function where the backward deliberately stops a gradient.
 */
export function finiteDifferenceError(
  adapter: Adapter<{ kind: string }>,
  tokens: number,
  seed: number,
  pass: PassOptions = {},
  options: { eps?: number; surrogate?: (p: F64Params, w: Float64Array) => AdapterMath } = {},
): { worst: number; name: string } {
  const { dIn, dOut } = adapter;
  const eps = options.eps ?? 1e-6;
  const w = Float64Array.from(randomF32(dOut * dIn, seed + 1));
  const x = Float64Array.from(randomF32(tokens * dIn, seed + 2));
  const dy = Float64Array.from(randomF32(tokens * dOut, seed + 3));
  const p = adapter.paramsF64();
  const math = adapter.math;
  const { dx, grads } = math.backward(p, w, x, tokens, dy, pass);
  // Differentiate the surrogate when the backward is defined to stop a gradient (DoRA's norm).
  const f = options.surrogate ? options.surrogate(p, w) : math;
  const loss = (pp: F64Params, xx: Float64Array) => dot(dy, f.forward(pp, w, xx, tokens, pass));
  let worst = 0;
  let worstName = "";
  const compare = (
    name: string,
    analytic: Float64Array,
    perturb: (i: number, d: number) => number,
  ) => {
    const fd = new Float64Array(analytic.length);
    for (let i = 0; i < analytic.length; i++) {
      fd[i] = (perturb(i, eps) - perturb(i, -eps)) / (2 * eps);
    }
    const err = relativeError(analytic, fd);
    if (err > worst || !Number.isFinite(err)) {
      worst = err;
      worstName = name;
    }
  };
  for (const s of adapter.specs().filter((s) => s.trainable)) {
    const g = grads[s.name];
    if (!g) throw new Error(`${adapter.config.kind}: no gradient for ${s.name}`);
    compare(s.name, g, (i, d) => {
      const q = { ...p, [s.name]: Float64Array.from(p[s.name]) };
      q[s.name][i] += d;
      return loss(q, x);
    });
  }
  compare("x", dx, (i, d) => {
    const xx = Float64Array.from(x);
    xx[i] += d;
    return loss(p, xx);
  });
  return { worst, name: worstName };
}

/**
 * Run forward and backward on the GPU and the CPU reference with the same random data; return
 * the relative error of y, dx and every gradient.
 */
export async function gpuVsCpu(
  rt: GpuRuntime,
  adapter: Adapter<{ kind: string }>,
  tokens: number,
  seed: number,
  pass: PassOptions = {},
  layerOptions: GpuLayerOptions = {},
): Promise<Record<string, number>> {
  const { dIn, dOut } = adapter;
  const w32 = randomF32(dOut * dIn, seed + 1);
  const x32 = randomF32(tokens * dIn, seed + 2);
  const dy32 = randomF32(tokens * dOut, seed + 3);
  const w = rt.upload(w32, [dOut, dIn]);
  const x = rt.upload(x32, [tokens, dIn]);
  const dy = rt.upload(dy32, [tokens, dOut]);
  const layer = await adapter.toGpu(rt, w, layerOptions);
  const dx = rt.empty([tokens, dIn]);
  rt.fill(dx, NaN);
  try {
    const fwd = rt.batch();
    const y = await matmul(rt, x, w, { m: tokens, n: dOut, k: dIn, transB: true }, { batch: fwd });
    await layer.forward(fwd, x, y, tokens, pass);
    await fwd.submit();
    const bwd = rt.batch();
    const dyBase = await layer.backward(bwd, x, dy, dx, tokens);
    await matmul(rt, dyBase, w, { m: tokens, n: dIn, k: dOut, beta: 1 }, { out: dx, batch: bwd });
    await bwd.submit();

    const p = adapter.paramsF64();
    const wf = Float64Array.from(w32);
    const xf = Float64Array.from(x32);
    const yRef = adapter.math.forward(p, wf, xf, tokens, pass);
    const ref = adapter.math.backward(p, wf, xf, tokens, Float64Array.from(dy32), pass);
    const errors: Record<string, number> = {
      y: relativeError(await rt.read(y), yRef),
      dx: relativeError(await rt.read(dx), ref.dx),
    };
    for (const [name, g] of Object.entries(layer.grads)) {
      errors[name] = relativeError(await rt.read(g), ref.grads[name]);
    }
    y.release();
    return errors;
  } finally {
    layer.release();
    for (const t of [w, x, dy, dx]) t.release();
  }
}
