/**
 * The MoKA layer: parameters `A.i`, `B.i` (per component) and `gate` (r logits); the float64
 * reference and the GPU layer built on {@link KronMixtureGpu}.
 */
import type { FrozenMatrix } from "../../../kernels/quant/frozen.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import { hash32, kaimingUniform } from "../../../kernels/cpu/random.ts";
import {
  Adapter,
  type AdapterMath,
  baseBackward,
  baseForward,
  type CpuGradients,
  type F64Params,
  type GpuAdapterLayer,
  gpuLayer,
  type GpuLayerOptions,
  type Params,
  type ParamSpec,
  uploadParams,
} from "../adapter.ts";
import {
  kronBackwardCpu,
  kronForwardCpu,
  type KronShape,
  softmax,
} from "../../../kernels/adapters/kron_cpu.ts";
import { KronMixtureGpu } from "../kron_gpu.ts";
import { type MokaConfig, MokaConfigSchema, mokaShapes } from "./config.ts";
import { mokaMerged } from "./merge.ts";

/** Mixture of Kronecker Adapters on one linear layer. */
export class MokaAdapter extends Adapter<MokaConfig> {
  /** Validate `config` (zod) and build with seeded init. */
  static create(config: unknown, dIn: number, dOut: number, seed: number): MokaAdapter {
    return new MokaAdapter(MokaConfigSchema.parse(config), dIn, dOut, { seed });
  }

  /** Factor shapes per component. */
  get shapes(): KronShape[] {
    return mokaShapes(this.config, this.dIn, this.dOut);
  }

  /** Parameter tensors on this layer (names as saved in files). */
  specs(): ParamSpec[] {
    const out: ParamSpec[] = [];
    this.shapes.forEach((s, i) => {
      if (!this.config.identityA) {
        out.push({ name: `A.${i}`, shape: [s.ma, s.na], trainable: true });
      }
      out.push({ name: `B.${i}`, shape: [s.mb, s.nb], trainable: true });
    });
    out.push({
      name: "gate",
      shape: [this.config.components.length],
      trainable: this.config.gate === "learned",
    });
    return out;
  }

  /** Fresh parameters with ΔW = 0 (seeded). */
  init(seed: number): Params {
    const p: Params = {};
    const zero = this.config.zeroInit;
    this.shapes.forEach((s, i) => {
      if (!this.config.identityA) {
        p[`A.${i}`] = zero === "A"
          ? new Float32Array(s.ma * s.na)
          : kaimingUniform(s.ma * s.na, s.na, hash32(seed * 131 + 2 * i));
      }
      p[`B.${i}`] = zero === "B"
        ? new Float32Array(s.mb * s.nb)
        : kaimingUniform(s.mb * s.nb, s.nb, hash32(seed * 131 + 2 * i + 1));
    });
    p.gate = new Float32Array(this.config.components.length); // uniform mixture
    return p;
  }

  /** The float64 reference: forward, backward, merge. */
  get math(): AdapterMath {
    const { dIn, dOut } = this;
    const shapes = this.shapes;
    const { identityA, scale } = this.config;
    const learnedGate = this.config.gate === "learned";
    const factorA = (p: F64Params, i: number) => (identityA ? null : p[`A.${i}`]);
    return {
      forward(p, w, x, tokens) {
        const y = baseForward(w, x, tokens, dIn, dOut);
        const alpha = softmax(p.gate);
        shapes.forEach((s, i) =>
          kronForwardCpu(factorA(p, i), p[`B.${i}`], s, x, tokens, scale * alpha[i], y)
        );
        return y;
      },
      backward(p, w, x, tokens, dy): CpuGradients {
        const dx = new Float64Array(tokens * dIn);
        baseBackward(w, dy, tokens, dIn, dOut, dx);
        const alpha = softmax(p.gate);
        const grads: F64Params = {};
        const dAlpha = new Float64Array(shapes.length);
        shapes.forEach((s, i) => {
          const { da, db } = kronBackwardCpu(
            factorA(p, i),
            p[`B.${i}`],
            s,
            x,
            tokens,
            dy,
            scale * alpha[i],
            dx,
          );
          if (da) grads[`A.${i}`] = da;
          grads[`B.${i}`] = db;
          // ∂L/∂αᵢ = s·⟨dy, (Aᵢ⊗Bᵢ)x⟩, from an unscaled forward of the component.
          const yi = new Float64Array(tokens * dOut);
          kronForwardCpu(factorA(p, i), p[`B.${i}`], s, x, tokens, 1, yi);
          for (let j = 0; j < yi.length; j++) dAlpha[i] += scale * dy[j] * yi[j];
        });
        if (learnedGate) {
          let mean = 0;
          for (let i = 0; i < shapes.length; i++) mean += alpha[i] * dAlpha[i];
          grads.gate = alpha.map((a, j) => a * (dAlpha[j] - mean));
        }
        return { dx, grads };
      },
      merged: (p, w) => mokaMerged(p, shapes, identityA, scale, w),
    };
  }

  /** Upload and return the GPU layer. */
  async toGpu(
    rt: GpuRuntime,
    _weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer> {
    const specs = this.specs();
    const { params, grads } = uploadParams(rt, specs, this.params, options?.storage);
    const comps = this.shapes.map((shape, i) => ({
      shape,
      a: params[`A.${i}`] ?? null,
      b: params[`B.${i}`],
      da: grads[`A.${i}`] ?? null,
      db: grads[`B.${i}`],
    }));
    const mixture = new KronMixtureGpu(
      rt,
      comps,
      params.gate,
      grads.gate ?? null,
      this.config.scale,
      options,
    );
    return await Promise.resolve(gpuLayer(rt, params, grads, {
      additive: true,
      forward: (batch, x, y, tokens) => mixture.forward(batch, x, y, tokens),
      epilogue: (tokens) => mixture.epilogue(tokens),
      async backward(batch, x, dy, dx, tokens): Promise<GpuTensor> {
        await mixture.backward(batch, x, dy, dx, tokens);
        return dy;
      },
      cleanup() {
      },
    }));
  }
}
