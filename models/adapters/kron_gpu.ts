/**
 * A gated mixture of Kronecker products on the GPU, ΔW = s·Σᵢ softmax(g)ᵢ·(Aᵢ ⊗ Bᵢ), applied by
 * the vec-trick so ΔW is never formed. MoKA uses it with r components; KronA and LoKr with one
 * component and a single frozen logit (softmax = 1).
 *
 * The gate weight is folded into the small factor first, A'ᵢ = s·αᵢ·Aᵢ (αᵢ computed on the GPU,
 * never read back), since (cA) ⊗ B = c(A ⊗ B). Then, per component and token t, with
 * X[t] = reshape(x[t], na, nb) row-major:
 *   forward   Zt[t] = B·X[t]ᵀ            [mb, na]   batched matmul, B broadcast
 *             y[t] += A'·Zt[t]ᵀ          [ma, mb]   batched matmul, accumulating into y
 *   backward  H     = dy·B               one matmul over T·ma rows
 *             dx[t] += A'ᵀ·H[t]          batched
 *             K[t]  = A'ᵀ·dy[t];  dB = Σ_t K[t]ᵀ·X[t]              (split-K over tokens)
 *             dyᵀ per token;  dA = s·αᵢ·Σ_t dy[t]·Zt[t]ᵀ           (split-K, then scaled)
 *             uᵢ = ⟨Bᵢ, dBᵢ⟩ = αᵢ·∂L/∂αᵢ (Y is linear in B);  dg_j = u_j − α_j·Σ uᵢ
 * With an identity A (MoKA_s) the scale goes on B instead and the A-side matmuls vanish:
 * y[t] += X[t]·B'ᵀ, dx[t] += dy[t]·B', dB = s·αᵢ·Σ_t dy[t]ᵀ·X[t].
 */
import { gradMatmul } from "../../kernels/adapters/grad_matmul.ts";
import { dotInto, gateBackward, gatedAxpy, transposeBatched } from "../../kernels/adapters/ops.ts";
import { matmul } from "../../kernels/matmul/matmul.ts";
import type { Batch } from "../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../kernels/runtime/tensor.ts";
import type { KronShape } from "./kron_cpu.ts";

/** One component's tensors: factors, and where their gradients go (null: not wanted). */
export interface KronComponentTensors {
  /** Factor shapes. */
  shape: KronShape;
  /** A [ma, na]; null for the identity. */
  a: GpuTensor | null;
  /** B [mb, nb]. */
  b: GpuTensor;
  /** ∂L/∂A destination (null: A frozen or identity). */
  da: GpuTensor | null;
  /** ∂L/∂B destination (always needed: it also yields the gate gradient). */
  db: GpuTensor;
}

/** The mixture's forward/backward, recording into a caller's batch. */
export class KronMixtureGpu {
  readonly #rt: GpuRuntime;
  readonly #comps: KronComponentTensors[];
  readonly #gate: GpuTensor;
  readonly #dgate: GpuTensor | null;
  readonly #scale: number;
  readonly #scaled: GpuTensor[]; // s·αᵢ·Aᵢ (or s·αᵢ·Bᵢ for an identity A), refreshed by forward
  #saved: (GpuTensor | null)[] = []; // Zt per component, kept from forward for dA

  /** `dgate` null: the gate is frozen (or a single fixed component). */
  constructor(
    rt: GpuRuntime,
    comps: KronComponentTensors[],
    gate: GpuTensor,
    dgate: GpuTensor | null,
    scale: number,
  ) {
    if (comps.length === 0 || gate.size !== comps.length) {
      throw new RangeError(`KronMixtureGpu: ${comps.length} components, gate of ${gate.size}`);
    }
    this.#rt = rt;
    this.#comps = comps;
    this.#gate = gate;
    this.#dgate = dgate;
    this.#scale = scale;
    this.#scaled = comps.map((c) => rt.empty(c.a ? c.a.shape : c.b.shape));
  }

  /** y += s·Σ αᵢ (Aᵢ ⊗ Bᵢ) x for x [tokens, dIn], y [tokens, dOut]. */
  async forward(batch: Batch, x: GpuTensor, y: GpuTensor, tokens: number): Promise<void> {
    const rt = this.#rt;
    for (const t of this.#saved) if (t) batch.releaseAfter(t);
    this.#saved = [];
    for (let i = 0; i < this.#comps.length; i++) {
      const { shape: { ma, na, mb, nb }, a, b } = this.#comps[i];
      const scaled = this.#scaled[i];
      await gatedAxpy(rt, batch, {
        dst: scaled,
        src: a ?? b,
        gate: this.#gate,
        comp: i,
        scale: this.#scale,
        beta: 0,
      });
      if (a === null) {
        await matmul(rt, x, scaled, { m: tokens * na, n: mb, k: nb, transB: true, beta: 1 }, {
          out: y,
          batch,
        });
        this.#saved.push(null);
        continue;
      }
      const zt = rt.empty([tokens, mb, na]);
      await matmul(rt, b, x, {
        m: mb,
        n: na,
        k: nb,
        batch: tokens,
        broadcastA: true,
        transB: true,
      }, { out: zt, batch });
      await matmul(rt, scaled, zt, {
        m: ma,
        n: mb,
        k: na,
        batch: tokens,
        broadcastA: true,
        transB: true,
        beta: 1,
      }, { out: y, batch });
      this.#saved.push(zt);
    }
  }

  /** dx += ∂L/∂x; fills da/db of every component and the gate gradient. Needs the forward's state. */
  async backward(
    batch: Batch,
    x: GpuTensor,
    dy: GpuTensor,
    dx: GpuTensor,
    tokens: number,
  ): Promise<void> {
    const rt = this.#rt;
    if (this.#saved.length !== this.#comps.length) {
      throw new Error("KronMixtureGpu.backward: run forward on these tokens first");
    }
    // One scratch buffer per role, sized for the largest component, viewed per component.
    let hMax = 1;
    let kMax = 1;
    let rawMax = 1;
    for (const { shape: { ma, na, mb, nb } } of this.#comps) {
      hMax = Math.max(hMax, tokens * ma * nb);
      kMax = Math.max(kMax, tokens * na * mb);
      rawMax = Math.max(rawMax, ma * na, mb * nb);
    }
    const hBuf = rt.empty([hMax]);
    const kBuf = rt.empty([kMax]);
    const dyt = this.#comps.some((c) => c.a !== null && c.da)
      ? rt.empty([tokens * this.#dOut()])
      : null;
    const raw = rt.empty([rawMax]);
    const u = this.#dgate ? rt.empty([this.#comps.length]) : null;
    for (let i = 0; i < this.#comps.length; i++) {
      const { shape: { ma, na, mb, nb }, a, b, da, db } = this.#comps[i];
      const scaled = this.#scaled[i];
      if (a === null) {
        await matmul(rt, dy, scaled, { m: tokens * ma, n: nb, k: mb, beta: 1 }, { out: dx, batch });
        const dbRaw = raw.view([mb, nb]);
        await gradMatmul(rt, batch, {
          left: dy,
          right: x,
          out: dbRaw,
          m: mb,
          n: nb,
          tokens,
          perTokenK: ma,
          alpha: this.#scale,
        });
        await gatedAxpy(rt, batch, {
          dst: db,
          src: dbRaw,
          gate: this.#gate,
          comp: i,
          scale: 1,
          beta: 0,
        });
      } else {
        const h = hBuf.view([tokens, ma, nb]);
        await matmul(rt, dy, b, { m: tokens * ma, n: nb, k: mb }, { out: h, batch });
        await matmul(rt, scaled, h, {
          m: na,
          n: nb,
          k: ma,
          batch: tokens,
          broadcastA: true,
          transA: true,
          beta: 1,
        }, { out: dx, batch });
        const k = kBuf.view([tokens, na, mb]);
        await matmul(rt, scaled, dy, {
          m: na,
          n: mb,
          k: ma,
          batch: tokens,
          broadcastA: true,
          transA: true,
        }, { out: k, batch });
        await gradMatmul(rt, batch, {
          left: k,
          right: x,
          out: db,
          m: mb,
          n: nb,
          tokens,
          perTokenK: na,
        });
        if (da && dyt) {
          await transposeBatched(rt, batch, { dst: dyt, src: dy, rows: ma, cols: mb });
          const daRaw = raw.view([ma, na]);
          await gradMatmul(rt, batch, {
            left: dyt,
            right: this.#saved[i]!,
            out: daRaw,
            m: ma,
            n: na,
            tokens,
            perTokenK: mb,
            alpha: this.#scale,
          });
          await gatedAxpy(rt, batch, {
            dst: da,
            src: daRaw,
            gate: this.#gate,
            comp: i,
            scale: 1,
            beta: 0,
          });
        }
      }
      if (u) await dotInto(rt, batch, { out: u, index: i, a: b, b: db });
    }
    if (u && this.#dgate) {
      await gateBackward(rt, batch, { dg: this.#dgate, gate: this.#gate, u });
      batch.releaseAfter(u);
    }
    for (const t of [hBuf, kBuf, raw, dyt]) if (t) batch.releaseAfter(t);
    for (const t of this.#saved) if (t) batch.releaseAfter(t);
    this.#saved = [];
  }

  #dOut(): number {
    const s = this.#comps[0].shape;
    return s.ma * s.mb;
  }

  /** Free saved state now (no batch may still use it). The factor tensors belong to the caller. */
  release(): void {
    for (const t of this.#saved) t?.release();
    for (const t of this.#scaled) t.release();
    this.#saved = [];
  }
}
