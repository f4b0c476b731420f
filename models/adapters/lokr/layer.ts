/**
 * LoKr layer (PEFT names: `w1` or `w1_a`/`w1_b`, `w2` or `w2_a`/`w2_b`). Init as PEFT's default:
 * w1 (or w1_a) zero, the rest Kaiming-uniform. On the GPU the low-rank factors are multiplied out
 * into w1/w2 (factor-sized, never ΔW) and the Kronecker mixture does the rest.
 */
import type { FrozenMatrix } from "../../../kernels/quant/frozen.ts";
import { matmul } from "../../../kernels/matmul/matmul.ts";
import type { Batch } from "../../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import { hash32, kaimingUniform } from "../../../kernels/cpu/random.ts";
import {
  Adapter,
  type AdapterMath,
  baseBackward,
  baseForward,
  type F64Params,
  type GpuAdapterLayer,
  gpuLayer,
  type GpuLayerOptions,
  type Params,
  type ParamSpec,
  uploadParams,
} from "../adapter.ts";
import { kronBackwardCpu, kronForwardCpu } from "../../../kernels/adapters/kron_cpu.ts";
import { KronMixtureGpu } from "../kron_gpu.ts";
import { type LokrConfig, LokrConfigSchema, type LokrLayout, lokrLayout } from "./config.ts";
import { lokrFactors, lokrMerged, lokrShape } from "./merge.ts";

/** Gradients of a low-rank pair from the gradient of their product: d(a·b) → (da, db). */
function lowRankGrads(
  dw: Float64Array,
  a: Float64Array,
  b: Float64Array,
  m: number,
  r: number,
  n: number,
): { da: Float64Array; db: Float64Array } {
  const da = new Float64Array(m * r);
  const db = new Float64Array(r * n);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let j = 0; j < n; j++) {
        s += dw[i * n + j] * b[k * n + j];
        db[k * n + j] += a[i * r + k] * dw[i * n + j];
      }
      da[i * r + k] = s;
    }
  }
  return { da, db };
}

/** Low-Rank Kronecker adapter. */
export class LokrAdapter extends Adapter<LokrConfig> {
  /** Validate `config` (zod) and build with seeded init. */
  static create(config: unknown, dIn: number, dOut: number, seed: number): LokrAdapter {
    return new LokrAdapter(LokrConfigSchema.parse(config), dIn, dOut, { seed });
  }

  /** Factor shapes and which are low-rank. */
  get layout(): LokrLayout {
    return lokrLayout(this.config, this.dIn, this.dOut);
  }

  /** α/r. */
  get scale(): number {
    return this.config.alpha / this.config.r;
  }

  /** Parameter tensors on this layer (names as saved in files). */
  specs(): ParamSpec[] {
    const l = this.layout;
    const r = this.config.r;
    const t = (name: string, shape: number[]) => ({ name, shape, trainable: true });
    return [
      ...(l.useW1 ? [t("w1", [l.outL, l.inM])] : [t("w1_a", [l.outL, r]), t("w1_b", [r, l.inM])]),
      ...(l.useW2 ? [t("w2", [l.outK, l.inN])] : [t("w2_a", [l.outK, r]), t("w2_b", [r, l.inN])]),
    ];
  }

  /** Fresh parameters with ΔW = 0 (seeded). */
  init(seed: number): Params {
    const p: Params = {};
    this.specs().forEach((s, i) => {
      const n = s.shape[0] * s.shape[1];
      p[s.name] = s.name === "w1" || s.name === "w1_a"
        ? new Float32Array(n)
        : kaimingUniform(n, s.shape[1], hash32(seed * 17 + i));
    });
    return p;
  }

  /** The float64 reference: forward, backward, merge. */
  get math(): AdapterMath {
    const { dIn, dOut, scale } = this;
    const l = this.layout;
    const r = this.config.r;
    const shape = lokrShape(l);
    return {
      forward(p, w, x, tokens) {
        const y = baseForward(w, x, tokens, dIn, dOut);
        const { w1, w2 } = lokrFactors(p, l, r);
        kronForwardCpu(w1, w2, shape, x, tokens, scale, y);
        return y;
      },
      backward(p, w, x, tokens, dy) {
        const dx = new Float64Array(tokens * dIn);
        baseBackward(w, dy, tokens, dIn, dOut, dx);
        const { w1, w2 } = lokrFactors(p, l, r);
        const { da, db } = kronBackwardCpu(w1, w2, shape, x, tokens, dy, scale, dx);
        const grads: F64Params = {};
        if (l.useW1) grads.w1 = da!;
        else {
          const g = lowRankGrads(da!, p.w1_a, p.w1_b, l.outL, r, l.inM);
          grads.w1_a = g.da;
          grads.w1_b = g.db;
        }
        if (l.useW2) grads.w2 = db;
        else {
          const g = lowRankGrads(db, p.w2_a, p.w2_b, l.outK, r, l.inN);
          grads.w2_a = g.da;
          grads.w2_b = g.db;
        }
        return { dx, grads };
      },
      merged: (p, w) => lokrMerged(p, l, r, scale, w),
    };
  }

  /** Upload and return the GPU layer. */
  async toGpu(
    rt: GpuRuntime,
    _weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer> {
    const l = this.layout;
    const r = this.config.r;
    const { params, grads } = uploadParams(rt, this.specs(), this.params, options?.storage);
    const scratch: GpuTensor[] = [];
    const factor = (full: string, rows: number, cols: number) => {
      if (params[full]) return { w: params[full], dw: grads[full], lowRank: null };
      const w = rt.empty([rows, cols]);
      const dw = rt.empty([rows, cols]);
      scratch.push(w, dw);
      return { w, dw, lowRank: { a: `${full}_a`, b: `${full}_b`, rows, cols } };
    };
    const f1 = factor("w1", l.outL, l.inM);
    const f2 = factor("w2", l.outK, l.inN);
    const gate = rt.upload(new Float32Array(1), [1]);
    const mixture = new KronMixtureGpu(
      rt,
      [{ shape: lokrShape(l), a: f1.w, b: f2.w, da: f1.dw, db: f2.dw }],
      gate,
      null,
      this.scale,
      options,
    );
    const rebuild = async (batch: Batch, f: typeof f1) => {
      if (!f.lowRank) return;
      const { a, b, rows, cols } = f.lowRank;
      await matmul(rt, params[a], params[b], { m: rows, n: cols, k: r }, { out: f.w, batch });
    };
    const chain = async (batch: Batch, f: typeof f1) => {
      if (!f.lowRank) return;
      const { a, b, rows, cols } = f.lowRank;
      await matmul(rt, f.dw, params[b], { m: rows, n: r, k: cols, transB: true }, {
        out: grads[a],
        batch,
      });
      await matmul(rt, params[a], f.dw, { m: r, n: cols, k: rows, transA: true }, {
        out: grads[b],
        batch,
      });
    };
    return await Promise.resolve(gpuLayer(rt, params, grads, {
      additive: true,
      async forward(batch, x, y, tokens) {
        await rebuild(batch, f1);
        await rebuild(batch, f2);
        await mixture.forward(batch, x, y, tokens);
      },
      async backward(batch, x, dy, dx, tokens): Promise<GpuTensor> {
        await mixture.backward(batch, x, dy, dx, tokens);
        await chain(batch, f1);
        await chain(batch, f2);
        return dy;
      },
      cleanup() {
        gate.release();
        for (const t of scratch) t.release();
      },
    }));
  }
}
