/**
 * DoRA layer: `A` [r, dIn], `B` [dOut, r], `magnitude` [dOut]. With V = W + s·B·A, n = ‖V‖ per
 * row, c = m/n and pre = W·x + s·B·A·x:
 *   forward   y = c ⊙ pre
 *   backward  dm = Σ_t dy⊙pre / n;  dyScaled = c⊙dy feeds both the base layer and LoRA's backward;
 *             without detaching, n also carries dV = −(m·dm/n²)⊙V into dA += s·Bᵀ·dV, dB += s·dV·Aᵀ.
 * V is materialised ([dOut, dIn], as PEFT does) because the norm needs it; the adapter reads the
 * frozen weight, so `toGpu` needs it as f32.
 */
import {
  doraBackward,
  doraForward,
  doraNormGrad,
  rowNorms,
} from "../../../kernels/adapters/ops.ts";
import { matmul } from "../../../kernels/matmul/matmul.ts";
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
  type Params,
  type ParamSpec,
  uploadParams,
} from "../adapter.ts";
import {
  loraBackwardCpu,
  loraBackwardGpu,
  loraProjectCpu,
  lowRankInit,
  lowRankSpecs,
} from "../lora/layer.ts";
import { loraMerged } from "../lora/merge.ts";
import { type DoraConfig, DoraConfigSchema } from "./config.ts";
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
    return this.config.alpha / this.config.r;
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
    const { r, detachNorm } = this.config;
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
    return {
      forward(p, w, x, tokens) {
        const { norms, pre } = parts(p, w, x, tokens);
        return pre.map((v, i) => (p.magnitude[i % dOut] / norms[i % dOut]) * v);
      },
      backward(p, w, x, tokens, dy) {
        const { norms, h, pre } = parts(p, w, x, tokens);
        const dm = new Float64Array(dOut);
        const dys = new Float64Array(dy.length);
        for (let i = 0; i < dy.length; i++) {
          const o = i % dOut;
          dm[o] += (dy[i] * pre[i]) / norms[o];
          dys[i] = (p.magnitude[o] / norms[o]) * dy[i];
        }
        const g = loraBackwardCpu(p.A, p.B, x, h, dys, scale, tokens, r, dIn, dOut);
        baseBackward(w, dys, tokens, dIn, dOut, g.dx);
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
        return { dx: g.dx, grads: { A: g.da, B: g.db, magnitude: dm } };
      },
      merged: (p, w) => doraMerged(p.A, p.B, p.magnitude, r, scale, w, dIn, dOut),
    };
  }

  /** Upload and return the GPU layer. */
  async toGpu(rt: GpuRuntime, weight?: GpuTensor): Promise<GpuAdapterLayer> {
    if (!weight) throw new Error("dora.toGpu: the frozen f32 base weight is required");
    weight.check("dora base weight", "f32");
    checkLength("dora base weight", weight.size, this.dIn * this.dOut);
    const { dIn, dOut, scale } = this;
    const { r, detachNorm } = this.config;
    const { params, grads } = uploadParams(rt, this.specs(), this.params);
    let saved: { h: GpuTensor; pre: GpuTensor; norms: GpuTensor; v: GpuTensor } | null = null;
    const drop = (batch: { releaseAfter(t: GpuTensor): void }) => {
      if (saved) { for (const t of Object.values(saved)) batch.releaseAfter(t); }
      saved = null;
    };
    return await Promise.resolve(gpuLayer(rt, params, grads, {
      async forward(batch, x, y, tokens) {
        drop(batch);
        const v = rt.empty([dOut, dIn]);
        batch.copy(weight.buffer, 0, v.buffer, 0, v.byteLength);
        await matmul(rt, params.B, params.A, { m: dOut, n: dIn, k: r, alpha: scale, beta: 1 }, {
          out: v,
          batch,
        });
        const norms = rt.empty([dOut]);
        await rowNorms(rt, batch, { out: norms, m: v, rows: dOut, cols: dIn });
        const h = rt.empty([tokens, r]);
        await matmul(rt, x, params.A, { m: tokens, n: r, k: dIn, transB: true }, { out: h, batch });
        const lora = rt.empty([tokens, dOut]);
        await matmul(rt, h, params.B, { m: tokens, n: dOut, k: r, transB: true }, {
          out: lora,
          batch,
        });
        const pre = rt.empty([tokens, dOut]);
        await doraForward(rt, batch, {
          y,
          lora,
          magnitude: params.magnitude,
          norm: norms,
          pre,
          scale,
        });
        batch.releaseAfter(lora);
        saved = { h, pre, norms, v };
      },
      async backward(batch, x, dy, dx, tokens): Promise<GpuTensor> {
        if (!saved) throw new Error("dora.backward: run forward on these tokens first");
        const { h, pre, norms, v } = saved;
        const dys = rt.empty([tokens, dOut]);
        await doraBackward(rt, batch, {
          dy,
          pre,
          magnitude: params.magnitude,
          norm: norms,
          dm: grads.magnitude,
          dyScaled: dys,
        });
        await loraBackwardGpu(rt, batch, {
          params,
          grads,
          dy: dys,
          h,
          input: x,
          dx,
          scale,
          tokens,
        });
        if (!detachNorm) {
          const dv = rt.empty([dOut, dIn]);
          await doraNormGrad(rt, batch, {
            dv,
            v,
            magnitude: params.magnitude,
            norm: norms,
            dm: grads.magnitude,
          });
          await matmul(rt, dv, params.A, {
            m: dOut,
            n: r,
            k: dIn,
            transB: true,
            alpha: scale,
            beta: 1,
          }, {
            out: grads.B,
            batch,
          });
          await matmul(rt, params.B, dv, {
            m: r,
            n: dIn,
            k: dOut,
            transA: true,
            alpha: scale,
            beta: 1,
          }, {
            out: grads.A,
            batch,
          });
          batch.releaseAfter(dv);
        }
        batch.releaseAfter(dys); // read by the caller's base backward within this batch
        drop(batch);
        return dys;
      },
      cleanup() {
        if (saved) { for (const t of Object.values(saved)) t.release(); }
        saved = null;
      },
    }));
  }
}
