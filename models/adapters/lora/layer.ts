/**
 * LoRA layer: parameters `A` [r, dIn] and `B` [dOut, r] (PEFT's lora_A / lora_B weights).
 *   forward   xd = dropout(x);  h = xd·Aᵀ;  y += s·h·Bᵀ
 *   backward  dB = s·dyᵀ·h;  dh = s·dy·B;  dA = dhᵀ·xd;  dx = dropout'(dh·A)
 * The dropout mask is a hash of (seed, index): the backward regenerates it instead of storing it.
 */
import { gradMatmul } from "../../../kernels/adapters/grad_matmul.ts";
import { dropout } from "../../../kernels/adapters/ops.ts";
import { matmul } from "../../../kernels/matmul/matmul.ts";
import type { Batch } from "../../../kernels/runtime/batch.ts";
import type { FrozenMatrix } from "../../../kernels/quant/frozen.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import { dropoutKeep, gaussianArray, hash32, kaimingUniform } from "../../../kernels/cpu/random.ts";
import {
  Adapter,
  type AdapterMath,
  baseBackward,
  baseForward,
  type GpuAdapterLayer,
  gpuLayer,
  type GpuLayerOptions,
  type Params,
  type ParamSpec,
  type PassOptions,
  uploadParams,
} from "../adapter.ts";
import { type LoraConfig, LoraConfigSchema, lowRankScale } from "./config.ts";
import { loraMerged } from "./merge.ts";

/** x with inverted dropout applied (identity outside training or when p = 0). */
export function dropoutCpu(x: Float64Array, p: number, pass: PassOptions = {}): Float64Array {
  if (!pass.train || p === 0) return x;
  const seed = pass.dropoutSeed ?? 0;
  return x.map((v, i) => (dropoutKeep(seed, i, p) ? v / (1 - p) : 0));
}

/** h = x·Aᵀ [tokens, r] and l = h·Bᵀ [tokens, dOut], in float64. */
export function loraProjectCpu(
  a: Float64Array,
  b: Float64Array,
  x: Float64Array,
  tokens: number,
  r: number,
  dIn: number,
  dOut: number,
): { h: Float64Array; l: Float64Array } {
  const h = new Float64Array(tokens * r);
  const l = new Float64Array(tokens * dOut);
  for (let t = 0; t < tokens; t++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < dIn; i++) s += x[t * dIn + i] * a[k * dIn + i];
      h[t * r + k] = s;
    }
    for (let o = 0; o < dOut; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += h[t * r + k] * b[o * r + k];
      l[t * dOut + o] = s;
    }
  }
  return { h, l };
}

/** Backward of l = s·(x·Aᵀ)·Bᵀ given dl: dA, dB and dxd (gradient w.r.t. the dropped input). */
export function loraBackwardCpu(
  a: Float64Array,
  b: Float64Array,
  x: Float64Array,
  h: Float64Array,
  dl: Float64Array,
  scale: number,
  tokens: number,
  r: number,
  dIn: number,
  dOut: number,
): { da: Float64Array; db: Float64Array; dx: Float64Array } {
  const da = new Float64Array(r * dIn);
  const db = new Float64Array(dOut * r);
  const dx = new Float64Array(tokens * dIn);
  const dh = new Float64Array(r);
  for (let t = 0; t < tokens; t++) {
    dh.fill(0);
    for (let o = 0; o < dOut; o++) {
      const g = scale * dl[t * dOut + o];
      for (let k = 0; k < r; k++) {
        db[o * r + k] += g * h[t * r + k];
        dh[k] += g * b[o * r + k];
      }
    }
    for (let k = 0; k < r; k++) {
      for (let i = 0; i < dIn; i++) {
        da[k * dIn + i] += dh[k] * x[t * dIn + i];
        dx[t * dIn + i] += dh[k] * a[k * dIn + i];
      }
    }
  }
  return { da, db, dx };
}

/**
 * GPU backward of l = s·(input·Aᵀ)·Bᵀ given dy and the forward's h = input·Aᵀ: writes dA, dB into
 * `grads` and dx = dh·A (dh = s·dy·B) into `dx`. Shared by LoRA and DoRA.
 */
export async function loraBackwardGpu(
  rt: GpuRuntime,
  batch: Batch,
  t: {
    params: Record<string, GpuTensor>;
    grads: Record<string, GpuTensor>;
    dy: GpuTensor;
    h: GpuTensor;
    input: GpuTensor;
    dx: GpuTensor;
    scale: number;
    tokens: number;
  },
): Promise<void> {
  const { params, grads, dy, h, input, dx, scale, tokens } = t;
  const [r, dIn] = params.A.shape;
  const dOut = params.B.shape[0];
  await gradMatmul(rt, batch, {
    left: dy,
    right: h,
    out: grads.B,
    m: dOut,
    n: r,
    tokens,
    perTokenK: 1,
    alpha: scale,
  });
  const dh = rt.empty([tokens, r]);
  await matmul(rt, dy, params.B, { m: tokens, n: r, k: dOut, alpha: scale }, { out: dh, batch });
  await gradMatmul(rt, batch, {
    left: dh,
    right: input,
    out: grads.A,
    m: r,
    n: dIn,
    tokens,
    perTokenK: 1,
  });
  await matmul(rt, dh, params.A, { m: tokens, n: dIn, k: r }, { out: dx, batch });
  batch.releaseAfter(dh);
}

/** Specs of A [r, dIn] and B [dOut, r], shared by LoRA and DoRA. */
export function lowRankSpecs(r: number, dIn: number, dOut: number): ParamSpec[] {
  return [
    { name: "A", shape: [r, dIn], trainable: true },
    { name: "B", shape: [dOut, r], trainable: true },
  ];
}

/** Fresh A (Kaiming-uniform, or Gaussian with std 1/r) and B = 0, shared by LoRA and DoRA. */
export function lowRankInit(
  c: { r: number; init: "kaiming" | "gaussian" },
  dIn: number,
  dOut: number,
  seed: number,
): Params {
  const n = c.r * dIn;
  return {
    A: c.init === "gaussian"
      ? gaussianArray(n, hash32(seed), 1 / c.r)
      : kaimingUniform(n, dIn, hash32(seed)),
    B: new Float32Array(dOut * c.r),
  };
}

/** Low-rank adapter. */
export class LoraAdapter extends Adapter<LoraConfig> {
  /** Validate `config` (zod) and build with seeded init. */
  static create(config: unknown, dIn: number, dOut: number, seed: number): LoraAdapter {
    return new LoraAdapter(LoraConfigSchema.parse(config), dIn, dOut, { seed });
  }

  /** α/r. */
  get scale(): number {
    return lowRankScale(this.config);
  }

  /** Parameter tensors on this layer (names as saved in files). */
  specs(): ParamSpec[] {
    return lowRankSpecs(this.config.r, this.dIn, this.dOut);
  }

  /** Fresh parameters with ΔW = 0 (seeded). */
  init(seed: number): Params {
    return lowRankInit(this.config, this.dIn, this.dOut, seed);
  }

  /** The float64 reference: forward, backward, merge. */
  get math(): AdapterMath {
    const { dIn, dOut, scale } = this;
    const { r, dropout: p } = this.config;
    return {
      forward(prm, w, x, tokens, pass) {
        const y = baseForward(w, x, tokens, dIn, dOut);
        const { l } = loraProjectCpu(prm.A, prm.B, dropoutCpu(x, p, pass), tokens, r, dIn, dOut);
        for (let i = 0; i < y.length; i++) y[i] += scale * l[i];
        return y;
      },
      backward(prm, w, x, tokens, dy, pass) {
        const xd = dropoutCpu(x, p, pass);
        const { h } = loraProjectCpu(prm.A, prm.B, xd, tokens, r, dIn, dOut);
        const g = loraBackwardCpu(prm.A, prm.B, xd, h, dy, scale, tokens, r, dIn, dOut);
        const dx = dropoutCpu(g.dx, p, pass); // same mask and 1/(1−p): the transpose of dropout
        baseBackward(w, dy, tokens, dIn, dOut, dx);
        return { dx, grads: { A: g.da, B: g.db } };
      },
      merged: (prm, w) => loraMerged(prm.A, prm.B, r, scale, w, dIn, dOut),
    };
  }

  /** Upload and return the GPU layer. */
  async toGpu(
    rt: GpuRuntime,
    _weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer> {
    const { dIn, dOut, scale } = this;
    const { r, dropout: p } = this.config;
    const { params, grads } = uploadParams(rt, this.specs(), this.params, options?.storage);
    let saved: { h: GpuTensor; xd: GpuTensor | null; seed: number } | null = null;
    return await Promise.resolve(gpuLayer(rt, params, grads, {
      additive: true,
      async forward(batch, x, y, tokens, pass: PassOptions = {}) {
        if (saved) { for (const t of [saved.h, saved.xd]) if (t) batch.releaseAfter(t); }
        saved = null;
        const drop = pass.train === true && p > 0;
        const seed = pass.dropoutSeed ?? 0;
        let xd: GpuTensor | null = null;
        if (drop) {
          xd = rt.empty([tokens, dIn]);
          await dropout(rt, batch, { dst: xd, src: x, p, seed });
        }
        const h = rt.empty([tokens, r]);
        await matmul(rt, xd ?? x, params.A, { m: tokens, n: r, k: dIn, transB: true }, {
          out: h,
          batch,
        });
        await matmul(rt, h, params.B, {
          m: tokens,
          n: dOut,
          k: r,
          transB: true,
          alpha: scale,
          beta: 1,
        }, {
          out: y,
          batch,
        });
        if (pass.keep ?? true) saved = { h, xd, seed };
        else for (const t of [h, xd]) if (t) batch.releaseAfter(t);
      },
      async backward(batch, x, dy, dx, tokens): Promise<GpuTensor> {
        if (!saved) throw new Error("lora.backward: run forward on these tokens first");
        const { h, xd, seed } = saved;
        // dx = dropout'(dh·A): the same mask, applied out of place (a buffer can't be both).
        const dxd = xd ? rt.empty([tokens, dIn]) : dx;
        await loraBackwardGpu(rt, batch, {
          params,
          grads,
          dy,
          h,
          input: xd ?? x,
          dx: dxd,
          scale,
          tokens,
        });
        if (xd) await dropout(rt, batch, { dst: dx, src: dxd, p, seed });
        for (const t of [h, xd, xd ? dxd : null]) if (t) batch.releaseAfter(t);
        saved = null;
        return dy;
      },
      cleanup() {
        if (saved) { for (const t of [saved.h, saved.xd]) t?.release(); }
      },
    }));
  }
}
