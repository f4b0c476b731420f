/** KronA layer: parameters `A`, `B`; the GPU path is the Kronecker mixture with one component. */
import type { FrozenMatrix } from "../../../kernels/quant/frozen.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import { hash32, kaimingUniform } from "../../../kernels/cpu/random.ts";
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
  uploadParams,
} from "../adapter.ts";
import {
  kronBackwardCpu,
  kronForwardCpu,
  type KronShape,
} from "../../../kernels/adapters/kron_cpu.ts";
import { KronMixtureGpu } from "../kron_gpu.ts";
import { type KronaConfig, KronaConfigSchema, kronaShape } from "./config.ts";
import { kronaMerged } from "./merge.ts";

/** A single Kronecker product adapter. */
export class KronaAdapter extends Adapter<KronaConfig> {
  /** Validate `config` (zod) and build with seeded init. */
  static create(config: unknown, dIn: number, dOut: number, seed: number): KronaAdapter {
    return new KronaAdapter(KronaConfigSchema.parse(config), dIn, dOut, { seed });
  }

  /** Factor shapes. */
  get shape(): KronShape {
    return kronaShape(this.config, this.dIn, this.dOut);
  }

  /** Parameter tensors on this layer (names as saved in files). */
  specs(): ParamSpec[] {
    const s = this.shape;
    return [
      { name: "A", shape: [s.ma, s.na], trainable: true },
      { name: "B", shape: [s.mb, s.nb], trainable: true },
    ];
  }

  /** Fresh parameters with ΔW = 0 (seeded). */
  init(seed: number): Params {
    const s = this.shape;
    const zero = this.config.zeroInit;
    return {
      A: zero === "A"
        ? new Float32Array(s.ma * s.na)
        : kaimingUniform(s.ma * s.na, s.na, hash32(seed)),
      B: zero === "B"
        ? new Float32Array(s.mb * s.nb)
        : kaimingUniform(s.mb * s.nb, s.nb, hash32(seed + 1)),
    };
  }

  /** The float64 reference: forward, backward, merge. */
  get math(): AdapterMath {
    const { dIn, dOut } = this;
    const shape = this.shape;
    const scale = this.config.scale;
    return {
      forward(p, w, x, tokens) {
        const y = baseForward(w, x, tokens, dIn, dOut);
        kronForwardCpu(p.A, p.B, shape, x, tokens, scale, y);
        return y;
      },
      backward(p, w, x, tokens, dy) {
        const dx = new Float64Array(tokens * dIn);
        baseBackward(w, dy, tokens, dIn, dOut, dx);
        const { da, db } = kronBackwardCpu(p.A, p.B, shape, x, tokens, dy, scale, dx);
        return { dx, grads: { A: da!, B: db } };
      },
      merged: (p, w) => kronaMerged(p.A, p.B, shape, scale, w),
    };
  }

  /** Upload and return the GPU layer. */
  async toGpu(
    rt: GpuRuntime,
    _weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer> {
    const { params, grads } = uploadParams(rt, this.specs(), this.params, options?.storage);
    const gate = rt.upload(new Float32Array(1), [1]); // one logit: softmax = 1
    const mixture = new KronMixtureGpu(
      rt,
      [{ shape: this.shape, a: params.A, b: params.B, da: grads.A, db: grads.B }],
      gate,
      null,
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
        gate.release();
      },
    }));
  }
}
