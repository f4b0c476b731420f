/**
 * Test fixtures of the frozen-weight kernels: seeded weights, and each storage format's GPU
 * weight beside the exact f32 values it stores (the float64 references multiply those).
 */
import { rng } from "../cpu/random.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import { dequantizeInt4, quantizeInt4 } from "./int4.ts";
import { dequantizeNf4, quantizeNf4 } from "./nf4.ts";
import {
  type GpuQuantWeight,
  uploadF32Weight,
  uploadHalfWeight,
  uploadQuantized,
} from "./qmatmul.ts";

/** Gaussian-ish weights (sum of uniforms), never all zero. */
export function testWeights(n: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() + next() + next() - 1.5) * 0.1;
  return out;
}

/** A weight stored on the GPU in some format, and the f32 values it holds. */
export type StoredWeightMaker = (
  rt: GpuRuntime,
  w: Float32Array,
  rows: number,
  cols: number,
) => { gw: GpuQuantWeight; dense: Float32Array };

/** f32 → bf16 halves, rounded to nearest even, with the f32 values they hold. */
function toBf16(v: Float32Array): { halves: Uint16Array; values: Float32Array } {
  const u = new Uint32Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  const halves = new Uint16Array(v.length);
  const values = new Float32Array(v.length);
  const back = new Uint32Array(values.buffer);
  for (let i = 0; i < v.length; i++) {
    const r = (u[i] + 0x7fff + ((u[i] >> 16) & 1)) >>> 16;
    halves[i] = r;
    back[i] = r << 16;
  }
  return { halves, values };
}

/** Every storage format the frozen kernels read, by name (f32 needs cols % 8 = 0). */
export const STORED_FORMATS: Record<string, StoredWeightMaker> = {
  nf4: (rt, w, r, c) => {
    const q = quantizeNf4(w, r, c);
    return { gw: uploadQuantized(rt, q), dense: dequantizeNf4(q) };
  },
  "nf4+dq": (rt, w, r, c) => {
    const q = quantizeNf4(w, r, c, { doubleQuant: true, doubleQuantGroup: 5 });
    return { gw: uploadQuantized(rt, q), dense: dequantizeNf4(q) };
  },
  "int4-g32": (rt, w, r, c) => {
    const q = quantizeInt4(w, r, c, 32);
    return { gw: uploadQuantized(rt, q), dense: dequantizeInt4(q) };
  },
  "int4-g128": (rt, w, r, c) => {
    const q = quantizeInt4(w, r, c, 128);
    return { gw: uploadQuantized(rt, q), dense: dequantizeInt4(q) };
  },
  bf16: (rt, w, r, c) => {
    const { halves, values } = toBf16(w);
    return { gw: uploadHalfWeight(rt, "bf16", halves, r, c), dense: values };
  },
  f16: (rt, w, r, c) => {
    const f16 = new Float16Array(w);
    return {
      gw: uploadHalfWeight(rt, "f16", new Uint16Array(f16.buffer), r, c),
      dense: Float32Array.from(f16),
    };
  },
  f32: (rt, w, r, c) => ({ gw: uploadF32Weight(rt, w, r, c), dense: w }),
};
