/**
 * Shared checks for adapter tests: the float64 reference against central finite differences, and
 * the GPU layer against the reference on fresh random inputs.
 */
import {
  frozenDequantize,
  frozenMatmul,
  frozenMatmulBackward,
  FrozenMatrix,
} from "../../kernels/quant/frozen.ts";
import type { StorageFormat } from "../../kernels/quant/qmatmul.ts";
import { quantizeRows } from "../../kernels/quant/quantize.ts";
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

/** Options of {@link gpuVsCpu} beyond the pass and layer options. */
export interface GpuVsCpuOptions {
  /** Storage of the frozen base weight (default f32); the reference uses it dequantized. */
  base?: StorageFormat;
  /** Filled with the pool's growth during forward + backward, in bytes. */
  stats?: { poolGrowth?: number };
  /**
   * Run the forward as the layer's product epilogue, inside the base product's dispatch (an
   * error if the layer offers none for these tokens).
   */
  epilogue?: boolean;
  /**
   * y starts as a random residual the forward adds into (β = 1; additive adapters only), and the
   * reference adds it too. Without it y starts as NaN and must be overwritten.
   */
  residual?: boolean;
}

/**
 * Run forward and backward on the GPU and the CPU reference with the same random data; return
 * the relative error of y, dx and every gradient. The base weight is stored as `base` (quantized
 * on the GPU); the reference computes with what is stored, dequantized.
 */
export async function gpuVsCpu(
  rt: GpuRuntime,
  adapter: Adapter<{ kind: string }>,
  tokens: number,
  seed: number,
  pass: PassOptions = {},
  layerOptions: GpuLayerOptions = {},
  options: GpuVsCpuOptions = {},
): Promise<Record<string, number>> {
  const { dIn, dOut } = adapter;
  const w32 = randomF32(dOut * dIn, seed + 1);
  const x32 = randomF32(tokens * dIn, seed + 2);
  const dy32 = randomF32(tokens * dOut, seed + 3);
  const w = rt.upload(w32, [dOut, dIn]);
  const base = options.base ?? "f32";
  let frozen: FrozenMatrix;
  if (base === "f32") frozen = FrozenMatrix.wrapF32(rt, w);
  else {
    frozen = FrozenMatrix.empty(rt, base, dOut, dIn, { blockSize: 32 });
    const flags = rt.upload(new Uint32Array(1), [1], "u32");
    const b = rt.batch();
    const raw = rt.upload(new Uint32Array(w32.buffer.slice(0)), [w32.length], "u32");
    await quantizeRows(
      rt,
      b,
      { raw, dtype: "F32", rows: dOut },
      frozen.blocks[0].weight,
      0,
      flags,
      0,
    );
    await b.submit();
    for (const t of [raw, flags]) t.release();
  }
  const wStored = await (async () => {
    const b = rt.batch();
    const t = await frozenDequantize(rt, b, frozen);
    await b.submit();
    const out = await rt.read(t) as Float32Array;
    t.release();
    return out;
  })();
  const x = rt.upload(x32, [tokens, dIn]);
  const dy = rt.upload(dy32, [tokens, dOut]);
  const layer = await adapter.toGpu(rt, frozen, layerOptions);
  const dx = rt.empty([tokens, dIn]);
  rt.fill(dx, NaN);
  try {
    const before = rt.pool.stats.inUseBytes;
    rt.pool.resetPeak();
    const y = rt.empty([tokens, dOut]);
    const residual = options.residual ? randomF32(tokens * dOut, seed + 4) : null;
    if (residual) {
      if (!layer.additive) throw new Error("gpuVsCpu: a residual needs an additive adapter");
      rt.write(y, residual);
    } else rt.fill(y, NaN);
    const epilogue = options.epilogue ? layer.epilogue?.(tokens, pass) ?? undefined : undefined;
    if (options.epilogue && !epilogue) throw new Error("gpuVsCpu: the layer offers no epilogue");
    const fwd = rt.batch();
    await frozenMatmul(rt, fwd, x, frozen, { out: y, beta: residual ? 1 : 0, epilogue });
    if (!epilogue) await layer.forward(fwd, x, y, tokens, pass);
    await fwd.submit();
    // Gradients must be overwritten, not accumulated onto what was there.
    for (const g of Object.values(layer.grads)) rt.fill(g, NaN);
    const bwd = rt.batch();
    const dyBase = await layer.backward(bwd, x, dy, dx, tokens);
    await frozenMatmulBackward(rt, bwd, dyBase, frozen, { out: dx, beta: 1 });
    await bwd.submit();
    if (options.stats) options.stats.poolGrowth = rt.pool.stats.peakInUseBytes - before;

    const p = adapter.paramsF64();
    const wf = Float64Array.from(wStored);
    const xf = Float64Array.from(x32);
    const yRef = adapter.math.forward(p, wf, xf, tokens, pass);
    residual?.forEach((r, i) => yRef[i] += r);
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
    frozen.release();
    for (const t of [w, x, dy, dx]) t.release();
  }
}
