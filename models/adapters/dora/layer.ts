/**
 * DoRA layer: `A` [r, dIn], `B` [dOut, r], `magnitude` [dOut]. With V = W + s·B·A, n = ‖V‖ per
 * row, c = m/n and pre = W·x + s·B·A·x:
 *   forward   y = c ⊙ pre
 *   backward  dm = Σ_t dy⊙pre / n;  dyScaled = c⊙dy feeds both the base layer and LoRA's backward;
 *             without detaching, n also carries dV = −(m·dm/n²)⊙V into dA += s·Bᵀ·dV, dB += s·dV·Aᵀ.
 *
 * On the GPU neither V nor W in f32 is ever formed (PEFT materialises V; on an 8B model that is
 * tens of GB). The base stays in its stored format (NF4, int4, ...): ‖V_o‖² = ‖W_o‖² (once, at
 * upload) + 2s·⟨W_o, (BA)_o⟩ + s²‖(BA)_o‖², where the cross term comes from C = A·Wᵀ — a frozen
 * matmul of r rows — and the last from G = A·Aᵀ. The magnitude scales the base and adapter
 * outputs; `pre` is recomputed in the backward rather than kept, so DoRA holds what LoRA holds.
 */
import {
  difference,
  doraBackward,
  doraForward,
  doraNormGrad,
  doraNorms,
  dropout,
} from "../../../kernels/adapters/ops.ts";
import { matmul } from "../../../kernels/matmul/matmul.ts";
import {
  frozenMatmul,
  frozenMatmulBackward,
  type FrozenMatrix,
  frozenRowNorms,
} from "../../../kernels/quant/frozen.ts";
import type { Batch } from "../../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import {
  Adapter,
  type AdapterMath,
  baseBackward,
  baseForward,
  type BaseRowNorms,
  checkLength,
  type F64Params,
  type GpuAdapterLayer,
  gpuLayer,
  type GpuLayerOptions,
  type Params,
  type ParamSpec,
  type PassOptions,
  uploadParams,
} from "../adapter.ts";
import {
  dropoutCpu,
  loraBackwardCpu,
  loraBackwardGpu,
  loraProjectCpu,
  lowRankInit,
  lowRankSpecs,
} from "../lora/layer.ts";
import { loraMerged } from "../lora/merge.ts";
import { type DoraConfig, DoraConfigSchema } from "./config.ts";
import { lowRankScale } from "../lora/config.ts";
import { doraMerged, rowNormsCpu } from "./merge.ts";

/** Weight-decomposed low-rank adapter. */
export class DoraAdapter extends Adapter<DoraConfig> {
  /** Validate `config` (zod) and build; `weight` (the frozen W) initialises the magnitude. */
  static create(
    config: unknown,
    dIn: number,
    dOut: number,
    seed: number,
    weight: Float32Array,
  ): DoraAdapter {
    return new DoraAdapter(DoraConfigSchema.parse(config), dIn, dOut, { seed, weight });
  }

  /** α/r. */
  get scale(): number {
    return lowRankScale(this.config);
  }

  /** Parameter tensors on this layer (names as saved in files). */
  specs(): ParamSpec[] {
    return [
      ...lowRankSpecs(this.config.r, this.dIn, this.dOut),
      { name: "magnitude", shape: [this.dOut], trainable: true },
    ];
  }

  /** Fresh parameters with ΔW = 0 (seeded); the magnitude starts at ‖W_r‖. */
  init(seed: number, weight?: Float32Array | BaseRowNorms): Params {
    if (!weight) throw new Error("dora: the base weight is needed to initialise the magnitude");
    let magnitude: Float32Array;
    if (weight instanceof Float32Array) {
      checkLength("dora init weight", weight.length, this.dIn * this.dOut);
      magnitude = Float32Array.from(rowNormsCpu(Float64Array.from(weight), this.dOut, this.dIn));
    } else {
      checkLength("dora init row norms", weight.rowNorms.length, this.dOut);
      magnitude = Float32Array.from(weight.rowNorms);
    }
    return { ...lowRankInit(this.config, this.dIn, this.dOut, seed), magnitude };
  }

  /** The float64 reference: forward, backward, merge. */
  get math(): AdapterMath {
    return this.#math(null);
  }

  /**
   * The function whose exact gradient the detached backward computes: the norm frozen at
   * (`p0`, `w0`). Finite differences of this check `detachNorm: true`.
   */
  detachedSurrogate(p0: F64Params, w0: Float64Array): AdapterMath {
    const { r } = this.config;
    return this.#math(
      rowNormsCpu(
        loraMerged(p0.A, p0.B, r, this.scale, w0, this.dIn, this.dOut),
        this.dOut,
        this.dIn,
      ),
    );
  }

  #math(frozenNorms: Float64Array | null): AdapterMath {
    const { dIn, dOut, scale } = this;
    const { r, detachNorm, dropout: pDrop } = this.config;
    const parts = (
      p: Record<string, Float64Array>,
      w: Float64Array,
      x: Float64Array,
      tokens: number,
    ) => {
      const norms = frozenNorms ??
        rowNormsCpu(loraMerged(p.A, p.B, r, scale, w, dIn, dOut), dOut, dIn);
      const { h, l } = loraProjectCpu(p.A, p.B, x, tokens, r, dIn, dOut);
      const pre = baseForward(w, x, tokens, dIn, dOut);
      for (let i = 0; i < pre.length; i++) pre[i] += scale * l[i];
      return { norms, h, pre };
    };
    // NVlabs/DoRA: y = W·x + (c − 1)·W·xd + c·s·B·A·xd with xd = dropout(x); with no dropout
    // (xd = x) this is c·(W·x + s·B·A·x).
    return {
      forward(p, w, x, tokens, pass) {
        const xd = dropoutCpu(x, pDrop, pass);
        const { norms, pre } = parts(p, w, xd, tokens);
        const y = baseForward(w, x, tokens, dIn, dOut);
        const wd = xd === x ? y : baseForward(w, xd, tokens, dIn, dOut);
        return y.map((v, i) => {
          const c = p.magnitude[i % dOut] / norms[i % dOut];
          return v + (c - 1) * wd[i] + c * (pre[i] - wd[i]);
        });
      },
      backward(p, w, x, tokens, dy, pass) {
        const xd = dropoutCpu(x, pDrop, pass);
        const { norms, h, pre } = parts(p, w, xd, tokens);
        const dm = new Float64Array(dOut);
        const dys = new Float64Array(dy.length);
        const dyc = new Float64Array(dy.length); // (c − 1)·dy, through W·xd
        for (let i = 0; i < dy.length; i++) {
          const o = i % dOut;
          const c = p.magnitude[o] / norms[o];
          dm[o] += (dy[i] * pre[i]) / norms[o];
          dys[i] = c * dy[i];
          dyc[i] = (c - 1) * dy[i];
        }
        const g = loraBackwardCpu(p.A, p.B, xd, h, dys, scale, tokens, r, dIn, dOut);
        baseBackward(w, dyc, tokens, dIn, dOut, g.dx);
        const dx = dropoutCpu(g.dx, pDrop, pass); // the same mask and 1/(1−p)
        baseBackward(w, dy, tokens, dIn, dOut, dx);
        if (!detachNorm) {
          const v = loraMerged(p.A, p.B, r, scale, w, dIn, dOut);
          for (let o = 0; o < dOut; o++) {
            const c = (-p.magnitude[o] * dm[o]) / norms[o] ** 2;
            for (let i = 0; i < dIn; i++) {
              const dv = c * v[o * dIn + i];
              for (let k = 0; k < r; k++) {
                g.db[o * r + k] += scale * dv * p.A[k * dIn + i];
                g.da[k * dIn + i] += scale * p.B[o * r + k] * dv;
              }
            }
          }
        }
        return { dx, grads: { A: g.da, B: g.db, magnitude: dm } };
      },
      merged: (p, w) => doraMerged(p.A, p.B, p.magnitude, r, scale, w, dIn, dOut),
    };
  }

  /** Upload and return the GPU layer; `weight` is the frozen base in its stored format. */
  async toGpu(
    rt: GpuRuntime,
    weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer> {
    if (!weight) throw new Error("dora.toGpu: the frozen base weight is required");
    const { dIn, dOut, scale } = this;
    if (weight.rows !== dOut || weight.cols !== dIn) {
      throw new RangeError(`dora base weight is ${weight.rows}×${weight.cols}, not ${dOut}×${dIn}`);
    }
    const { r, detachNorm, dropout: pDrop } = this.config;
    const { params, grads } = uploadParams(rt, this.specs(), this.params, options?.storage);
    const wsq = rt.empty([dOut]); // ‖W_o‖², once
    {
      const b = rt.batch();
      await frozenRowNorms(rt, b, weight, wsq, true);
      await b.submit();
    }
    // Kept from a forward for its backward: h = A·xd, the norms, C and G when the norm is not
    // detached (its gradient needs them), and the dropout seed (the mask is regenerated).
    type Saved = {
      h: GpuTensor;
      norms: GpuTensor;
      c: GpuTensor | null;
      g: GpuTensor | null;
      seed: number | null;
    };
    let saved: Saved | null = null;
    const drop = (batch: Batch) => {
      if (saved) {
        for (const t of [saved.h, saved.norms, saved.c, saved.g]) if (t) batch.releaseAfter(t);
      }
      saved = null;
    };
    /** xd = dropout(x) (scratch), or x itself when no dropout applies. */
    const dropped = async (batch: Batch, x: GpuTensor, seed: number | null) => {
      if (seed === null) return x;
      const xd = batch.scratch(x.shape);
      await dropout(rt, batch, { dst: xd, src: x, p: pDrop, seed });
      return xd;
    };
    return await Promise.resolve(gpuLayer(rt, params, grads, {
      additive: false,
      async forward(batch, x, y, tokens, pass: PassOptions = {}) {
        drop(batch);
        const keep = pass.keep ?? true;
        const seed = pass.train === true && pDrop > 0 ? pass.dropoutSeed ?? 0 : null;
        const c = rt.empty([r, dOut]);
        await frozenMatmul(rt, batch, params.A, weight, { out: c }); // C = A·Wᵀ
        const g = rt.empty([r, r]);
        await matmul(rt, params.A, params.A, { m: r, n: r, k: dIn, transB: true }, {
          out: g,
          batch,
        });
        const norms = rt.empty([dOut]);
        await doraNorms(rt, batch, { norm: norms, wsq, b: params.B, c, g, scale });
        const xd = await dropped(batch, x, seed);
        const h = rt.empty([tokens, r]);
        await matmul(rt, xd, params.A, { m: tokens, n: r, k: dIn, transB: true }, {
          out: h,
          batch,
        });
        const lora = batch.scratch([tokens, dOut]);
        await matmul(rt, h, params.B, { m: tokens, n: dOut, k: r, transB: true }, {
          out: lora,
          batch,
        });
        const pre = batch.scratch([tokens, dOut]);
        const args = { y, lora, magnitude: params.magnitude, norm: norms, scale };
        if (seed !== null) {
          // y = W·x + (c − 1)·W·xd + c·s·B·A·xd (NVlabs/DoRA's form under dropout).
          await frozenMatmul(rt, batch, xd, weight, { out: pre });
          batch.recycle(xd);
        }
        await doraForward(rt, batch, { ...args, pre, dropped: seed !== null });
        batch.recycle(lora);
        batch.recycle(pre);
        const normState = detachNorm ? null : { c, g };
        if (keep) saved = { h, norms, c: normState?.c ?? null, g: normState?.g ?? null, seed };
        else for (const t of [h, norms]) batch.releaseAfter(t);
        for (const t of [c, g]) if (!keep || detachNorm) batch.releaseAfter(t);
      },
      async backward(batch, x, dy, dx, tokens): Promise<GpuTensor> {
        if (!saved) throw new Error("dora.backward: run forward on these tokens first");
        const { h, norms, c, g, seed } = saved;
        const xd = await dropped(batch, x, seed);
        // pre = W·xd + s·B·h again: keeping it would cost a layer output per module.
        const pre = batch.scratch([tokens, dOut]);
        await frozenMatmul(rt, batch, xd, weight, { out: pre });
        await matmul(rt, h, params.B, {
          m: tokens,
          n: dOut,
          k: r,
          transB: true,
          alpha: scale,
          beta: 1,
        }, {
          out: pre,
          batch,
        });
        const dys = rt.empty([tokens, dOut]);
        await doraBackward(rt, batch, {
          dy,
          pre,
          magnitude: params.magnitude,
          norm: norms,
          dm: grads.magnitude,
          dyScaled: dys,
        });
        batch.recycle(pre);
        // Without dropout the base layer propagates c⊙dy. With it, the base propagates dy, and
        // (c − 1)⊙dy·W joins the adapter's part before the dropout mask.
        const dxd = seed === null ? dx : batch.scratch(dx.shape);
        await loraBackwardGpu(rt, batch, {
          params,
          grads,
          dy: dys,
          h,
          input: xd,
          dx: dxd,
          scale,
          tokens,
        });
        if (seed !== null) {
          const dyc = batch.scratch(dy.shape);
          await difference(rt, batch, { dst: dyc, a: dys, b: dy });
          await frozenMatmulBackward(rt, batch, dyc, weight, { out: dxd, beta: 1 });
          await dropout(rt, batch, { dst: dx, src: dxd, p: pDrop, seed });
          for (const t of [dyc, dxd, xd]) batch.recycle(t);
        }
        if (!detachNorm) {
          const coef = batch.scratch([3, dOut]);
          const m = params.magnitude;
          const dm = grads.magnitude;
          batch.copy(m.buffer, m.byteOffset, coef.buffer, 0, 4 * dOut);
          batch.copy(norms.buffer, norms.byteOffset, coef.buffer, 4 * dOut, 4 * dOut);
          batch.copy(dm.buffer, dm.byteOffset, coef.buffer, 8 * dOut, 4 * dOut);
          const e = batch.scratch([r, dOut]);
          await doraNormGrad(rt, batch, { db: grads.B, e, b: params.B, c: c!, g: g!, coef, scale });
          await frozenMatmulBackward(rt, batch, e, weight, { out: grads.A, beta: 1 }); // += E·W
          const eb = batch.scratch([r, r]);
          await matmul(rt, e, params.B, { m: r, n: r, k: dOut }, { out: eb, batch });
          await matmul(rt, eb, params.A, { m: r, n: dIn, k: r, alpha: scale, beta: 1 }, {
            out: grads.A,
            batch,
          });
          for (const t of [coef, e, eb]) batch.recycle(t);
        }
        batch.releaseAfter(dys); // read by the caller's base backward within this batch
        drop(batch);
        return seed === null ? dys : dy;
      },
      cleanup() {
        if (saved) { for (const t of [saved.h, saved.norms, saved.c, saved.g]) t?.release(); }
        saved = null;
        wsq.release();
      },
    }));
  }
}
