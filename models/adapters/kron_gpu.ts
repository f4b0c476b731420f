/**
 * A gated mixture of Kronecker products on the GPU, ΔW = s·Σᵢ softmax(g)ᵢ·(Aᵢ ⊗ Bᵢ), applied by
 * the vec-trick so ΔW is never formed. MoKA uses it with r components; KronA and LoKr with one
 * component and a single frozen logit (softmax = 1).
 *
 * The gate weight is folded into the small factor first, A'ᵢ = s·αᵢ·Aᵢ (αᵢ computed on the GPU,
 * never read back), since (cA) ⊗ B = c(A ⊗ B). Then, per component and token t, with
 * X[t] = reshape(x[t], na, nb) and Y[t] = A'·X[t]·Bᵀ (row-major reshapes):
 *   forward   W[t]  = A'·X[t]            [ma, nb]   batched matmul, A' broadcast
 *             y    += W·Bᵀ               one matmul over T·ma rows, accumulating into y
 *   backward  K[t]  = A'ᵀ·dY[t]          [na, mb]   batched
 *             dx   += K·B                one matmul over T·na rows
 *             dB    = Σ_t K[t]ᵀ·X[t]                                (split-K over tokens)
 *             Zt[t] = B·X[t]ᵀ;  dA = s·αᵢ·Σ_t dY[t]·Zt[t]    (batch-reduce matmul, split over
 *                                                              tokens, then scaled)
 *             uᵢ = ⟨Bᵢ, dBᵢ⟩ = αᵢ·∂L/∂αᵢ (Y is linear in B);  dg_j = u_j − α_j·Σ uᵢ
 * With an identity A (MoKA_s) the scale goes on B instead and the A-side matmuls vanish:
 * y[t] += X[t]·B'ᵀ, dx[t] += dy[t]·B', dB = s·αᵢ·Σ_t dy[t]ᵀ·X[t].
 *
 * Memory: every per-token intermediate (W, K, Zt) is as large as x itself, once per
 * component. So tokens are processed in chunks that fit a scratch budget, and the backward
 * computes Zt itself rather than keeping anything from the forward (whose W route leaves the
 * backward one matmul fewer than keeping Zt and forming dx through dY·B would): the layer
 * holds no activations between forward and backward, and its transient memory is bounded by
 * `scratchBytes` (plus at most 64 KiB of partial sums for small factor gradients on CPU adapters,
 * `gpuPartialBytes` per gradient role on GPUs) whatever the number of tokens. Chunks are row
 * windows of x, y, dy, dx (no copies).
 *
 * GPU kernel family (`rt.variants.target === "gpu"`): every product takes the workgroup-memory
 * tile that fits its output (`gpuProductKernel`), and each small factor gradient's token sum is
 * split over enough partial-sum slots to fill the device (`gpuGradSlots`, chunked or not), summed
 * afterwards in slot order, the gate folded into the same dispatch for dA: bit-reproducible.
 */
import {
  gradMatmul,
  type GradMatmulArgs,
  gradMatmulSlots,
} from "../../kernels/adapters/grad_matmul.ts";
import {
  fusedKronBackward,
  fusedKronDirect,
  fusedKronEpilogue,
  fusedKronForward,
  fusedKronGateGrad,
  type FusedKronLayer,
  fusedKronPlan,
} from "../../kernels/adapters/kron_fused.ts";
import { dotInto, gateBackward, gatedAxpy, sumSlices } from "../../kernels/adapters/ops.ts";
import {
  gpuGradSlots,
  gpuProductKernel,
  splitGrad,
  sumSlotsGated,
} from "../../kernels/adapters/kron_gpu_kernels.ts";
import {
  tiledKronBackward,
  tiledKronForward,
  tiledKronSlots,
  tiledKronSupported,
} from "../../kernels/adapters/kron_tiled.ts";
import type { MatmulSpec } from "../../kernels/cpu/matmul.ts";
import { matmul } from "../../kernels/matmul/matmul.ts";
import type { Batch } from "../../kernels/runtime/batch.ts";
import type { ProductEpilogue } from "../../kernels/runtime/epilogue.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import { type GpuTensor, rowAlignment } from "../../kernels/runtime/tensor.ts";
import type { KronShape } from "../../kernels/adapters/kron_cpu.ts";

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

/** Run-time options of the Kronecker GPU layers (they change memory and speed, not results). */
export interface KronGpuOptions {
  /**
   * Bytes of token-chunk scratch (the per-token intermediates) one forward or backward may hold;
   * tokens are processed in chunks that fit. Default
   * {@link defaultKronScratchBytes}; `Infinity` processes all tokens at once.
   */
  scratchBytes?: number;
  /**
   * Which kernels: `"fused"` (all components in 2 dispatches forward, 2–3 backward; needs the
   * factors in one buffer and the gradients in another, as a `TensorArena` group gives),
   * `"matmul"` (tiled matmuls per component), `"tiled"` (every component in one dispatch per
   * product with the per-token intermediates in workgroup memory, `kernels/adapters/kron_tiled.ts`;
   * the same buffer needs as fused), or `"auto"` (default): fused while tokens·dIn·Σᵢ(maᵢ + mbᵢ),
   * about the fused backward's multiply-adds, is at most {@link fuseBelow} (a decoding step, a
   * small model), where dispatches cost more than the untiled kernels' FLOPs; beyond it tiled on
   * the GPU kernel family where the shapes fit workgroup memory, matmul otherwise.
   */
  kernels?: "auto" | "fused" | "matmul" | "tiled";
  /**
   * Fused forward: largest tokens·dOut·dIn·r done in one dispatch (default
   * {@link directForwardMacs}; 0 always takes the two-kernel route).
   */
  directForwardMacs?: number;
}

/**
 * The most multiply-adds `kernels: "auto"` gives the fused kernels: 2²² on CPU adapters (about a
 * dispatch's cost there per few thousand of them), 2²⁶ on GPUs.
 */
export function fuseBelow(rt: GpuRuntime): number {
  return rt.variants.target === "cpu-adapter" ? 2 ** 22 : 2 ** 26;
}

/** Default of {@link KronGpuOptions.directForwardMacs}: 2¹⁸ on CPU adapters, 2²² on GPUs. */
export function directForwardMacs(rt: GpuRuntime): number {
  return rt.variants.target === "cpu-adapter" ? 2 ** 18 : 2 ** 22;
}

/**
 * Default scratch budget on CPU adapters (llvmpipe): 512 KiB, 32 tokens per chunk at d = 4096.
 * There it holds a MoKA layer's whole transient memory to about 1/120 of a dense ΔW and dΔW, for
 * 1.2–1.35× the time of processing all tokens at once (README, "Adapters").
 */
export const DEFAULT_KRON_SCRATCH_BYTES = 512 * 1024;

/**
 * Default on real GPUs: 32 MiB (2,048 tokens per chunk at d = 4096), since a GPU wants few, large
 * dispatches; still a quarter of one dense 4096² ΔW.
 */
export const DEFAULT_KRON_SCRATCH_BYTES_GPU = 32 * 1024 * 1024;

/**
 * CPU adapters: partial sums per small factor gradient when tokens are chunked (see `backward`):
 * two, so that a gradient that one workgroup would compute spreads over two. GPUs size the slots
 * from the problem instead (`gpuGradSlots`).
 */
export const CHUNK_GRAD_SLOTS = 2;

/** Largest gradient (elements) that is split into slots: 64×64, one workgroup's tile on CPUs. */
const SLOTTED_GRAD_MAX = 64 * 64;

/**
 * GPU kernels: bytes of partial sums one gradient role (dB, dA) may hold, an eighth of the scratch
 * budget (4 MiB of the default 32 MiB), at least 32 KiB. With both roles the layer's transient
 * memory stays within 1.25× the budget.
 */
export function gpuPartialBytes(scratchBytes: number): number {
  return Math.max(32 * 1024, scratchBytes / 8);
}

/** The default scratch budget for the runtime's device. */
export function defaultKronScratchBytes(rt: GpuRuntime): number {
  return rt.variants.target === "cpu-adapter"
    ? DEFAULT_KRON_SCRATCH_BYTES
    : DEFAULT_KRON_SCRATCH_BYTES_GPU;
}

/** The mixture's forward/backward, recording into a caller's batch. */
export class KronMixtureGpu {
  readonly #rt: GpuRuntime;
  readonly #comps: KronComponentTensors[];
  readonly #gate: GpuTensor;
  readonly #dgate: GpuTensor | null;
  readonly #scale: number;
  readonly #scratchBytes: number;
  readonly #fused: FusedKronLayer | null;
  readonly #kernels: "auto" | "fused" | "matmul" | "tiled";
  /** Whether the tiled route may run (GPU family, or asked for; shapes fit). */
  readonly #tiled: boolean;
  readonly #directMacs: number;
  /** The GPU kernel family (`rt.variants.target === "gpu"`): tiles and slots from the shape. */
  readonly #gpu: boolean;
  #epilogue: ProductEpilogue | null = null;

  /** `dgate` null: the gate is frozen (or a single fixed component). */
  constructor(
    rt: GpuRuntime,
    comps: KronComponentTensors[],
    gate: GpuTensor,
    dgate: GpuTensor | null,
    scale: number,
    options: KronGpuOptions = {},
  ) {
    if (comps.length === 0 || gate.size !== comps.length) {
      throw new RangeError(`KronMixtureGpu: ${comps.length} components, gate of ${gate.size}`);
    }
    const scratchBytes = options.scratchBytes ?? defaultKronScratchBytes(rt);
    if (!(scratchBytes > 0)) throw new RangeError(`KronMixtureGpu: scratchBytes=${scratchBytes}`);
    this.#rt = rt;
    this.#comps = comps;
    this.#gate = gate;
    this.#dgate = dgate;
    this.#scale = scale;
    this.#scratchBytes = scratchBytes;
    this.#kernels = options.kernels ?? "auto";
    this.#directMacs = options.directForwardMacs ?? directForwardMacs(rt);
    this.#gpu = rt.variants.target === "gpu";
    const plan = fusedKronPlan(comps, dgate);
    if ((this.#kernels === "fused" || this.#kernels === "tiled") && !plan) {
      throw new Error(
        `KronMixtureGpu: ${this.#kernels} kernels need the factors and gradients in one buffer each`,
      );
    }
    this.#fused = plan ? { plan, gate, scale } : null;
    const fits = plan !== null && tiledKronSupported(rt.variants, plan);
    if (this.#kernels === "tiled" && !fits) {
      throw new Error("KronMixtureGpu: the tiled kernels do not fit these shapes");
    }
    this.#tiled = fits && (this.#kernels === "tiled" || (this.#kernels === "auto" && this.#gpu));
  }

  /** Whether `tokens` tokens take the tiled route (see {@link KronGpuOptions.kernels}). */
  #tiledFor(tokens: number): boolean {
    return this.#tiled && (this.#kernels === "tiled" || !this.#fusedFor(tokens));
  }

  /** The fused layer when it runs this many tokens, else null (matmul route). */
  #fusedFor(tokens: number): FusedKronLayer | null {
    if (!this.#fused || this.#kernels === "matmul" || this.#kernels === "tiled") return null;
    if (this.#kernels === "fused") return this.#fused;
    const sides = this.#comps.reduce((n, c) => n + c.shape.ma + c.shape.mb, 0);
    return tokens * this.#fused.plan.dIn * sides <= fuseBelow(this.#rt) ? this.#fused : null;
  }

  /**
   * The forward of `tokens` rows as a product epilogue (the base product's dispatch adds ΔW·x),
   * when it would be the one-dispatch direct kernel anyway; null otherwise.
   */
  epilogue(tokens: number): ProductEpilogue | null {
    const fused = this.#fusedFor(tokens);
    if (!fused || !fusedKronDirect(fused.plan, tokens, this.#directMacs)) return null;
    return this.#epilogue ??= fusedKronEpilogue(fused);
  }

  /** Token chunks of at most the scratch budget for `perToken` floats per token. */
  #chunks(tokens: number, perToken: number) {
    const { ma, na, mb, nb } = this.#comps[0].shape;
    const [dIn, dOut] = [na * nb, ma * mb];
    const align = rowAlignment(4 * dIn, 4 * dOut);
    let chunk = tokens;
    if (Number.isFinite(this.#scratchBytes) && perToken > 0) {
      const fit = Math.floor(this.#scratchBytes / (4 * perToken));
      chunk = Math.min(tokens, Math.max(align, Math.floor(fit / align) * align));
    }
    const chunks: { start: number; count: number }[] = [];
    for (let start = 0; start < tokens; start += chunk) {
      chunks.push({ start, count: Math.min(chunk, tokens - start) });
    }
    return { chunk, chunks };
  }

  /** y += s·Σ αᵢ (Aᵢ ⊗ Bᵢ) x for x [tokens, dIn], y [tokens, dOut]. */
  async forward(batch: Batch, x: GpuTensor, y: GpuTensor, tokens: number): Promise<void> {
    const rt = this.#rt;
    if (this.#tiledFor(tokens)) {
      const bt = batch.scratch([this.#fused!.plan.gradElements]); // every Bᵀ
      await tiledKronForward(rt, batch, this.#fused!, { x, y, tokens, bt });
      batch.recycle(bt);
      return;
    }
    const fused = this.#fusedFor(tokens);
    if (fused) {
      const per = fused.plan.forwardPerToken;
      const { chunk, chunks } = this.#chunks(tokens, per);
      const w = per > 0 ? batch.scratch([chunk * per]) : null;
      for (const { start, count } of chunks) {
        const xc = rows(x, tokens, start, count);
        const yc = rows(y, tokens, start, count);
        await fusedKronForward(rt, batch, fused, {
          x: xc,
          y: yc,
          w,
          tokens: count,
          directMacs: this.#directMacs,
        });
      }
      if (w) batch.recycle(w);
      return;
    }
    const plan = this.#plan(tokens, false);
    const zBuf = batch.scratch([Math.max(1, plan.chunk * plan.zPerToken)]);
    for (let i = 0; i < this.#comps.length; i++) {
      const { shape: { ma, na, mb, nb }, a, b } = this.#comps[i];
      const scaled = await this.#scaledFactor(batch, i);
      for (const { start, count } of plan.chunks) {
        const xc = rows(x, tokens, start, count);
        const yc = rows(y, tokens, start, count);
        if (a === null) {
          await this.#product(batch, xc, scaled, yc, {
            m: count * na,
            n: mb,
            k: nb,
            transB: true,
            beta: 1,
          });
          continue;
        }
        const w = zBuf.view([count, ma, nb]);
        await this.#product(batch, scaled, xc, w, {
          m: ma,
          n: nb,
          k: na,
          batch: count,
          broadcastA: true,
        });
        await this.#product(batch, w, b, yc, {
          m: count * ma,
          n: mb,
          k: nb,
          transB: true,
          beta: 1,
        });
      }
      batch.recycle(scaled);
    }
    batch.recycle(zBuf);
  }

  /** dx = ∂L/∂x (overwritten); fills da/db of every component and the gate gradient. */
  async backward(
    batch: Batch,
    x: GpuTensor,
    dy: GpuTensor,
    dx: GpuTensor,
    tokens: number,
  ): Promise<void> {
    const rt = this.#rt;
    if (this.#tiledFor(tokens)) {
      // Only the gradients' partial sums, within gpuPartialBytes of the budget.
      const layer = this.#fused!;
      const maxFloats = gpuPartialBytes(this.#scratchBytes) / 4;
      const slots = tiledKronSlots(rt.variants, layer.plan, tokens, maxFloats);
      const partial = batch.scratch([slots * layer.plan.gradElements]);
      await tiledKronBackward(rt, batch, layer, { x, dy, dx, tokens, partial, slots });
      batch.recycle(partial);
      if (this.#dgate) await fusedKronGateGrad(rt, batch, layer);
      return;
    }
    const fused = this.#fusedFor(tokens);
    if (fused) {
      const per = fused.plan.backwardPerToken;
      const { chunk, chunks } = this.#chunks(tokens, per);
      const ku = per > 0 ? batch.scratch([chunk * per]) : null;
      for (const { start, count } of chunks) {
        await fusedKronBackward(rt, batch, fused, {
          x: rows(x, tokens, start, count),
          dy: rows(dy, tokens, start, count),
          dx: rows(dx, tokens, start, count),
          ku,
          tokens: count,
          accumulate: start > 0,
        });
      }
      if (ku) batch.recycle(ku);
      if (this.#dgate) await fusedKronGateGrad(rt, batch, fused);
      return;
    }
    const plan = this.#plan(tokens, true);
    batch.clear(dx.buffer, dx.byteOffset, dx.byteLength); // the components accumulate into dx
    // One scratch buffer per role, sized for the largest component, viewed per component/chunk.
    const zBuf = batch.scratch([Math.max(1, plan.chunk * plan.zPerToken)]); // K, then Zt
    const chunked = plan.chunks.length > 1;
    // Partial-sum slots of each component's two small-gradient products (0: dB, 1: dA, or dB
    // through the raw buffer for an identity A). CPU adapters: CHUNK_GRAD_SLOTS for gradients of
    // at most 64×64 when chunked, else none (gradMatmul splits a whole-token product itself). GPU:
    // from the problem size (gpuGradSlots), chunked or not.
    const slotsOf = this.#comps.map(({ shape: { ma, na, mb, nb }, a }) =>
      a === null ? [0, this.#gradSlots(mb, nb, plan.chunk, ma, chunked)] : [
        this.#gradSlots(mb, nb, plan.chunk, na, chunked),
        this.#gradSlots(ma, na, plan.chunk, mb, chunked),
      ]
    );
    let rawMax = 1;
    const partialMax = [1, 1];
    this.#comps.forEach(({ shape: { ma, na, mb, nb }, a }, i) => {
      rawMax = Math.max(rawMax, ma * na, mb * nb);
      const sizes = a === null ? [0, mb * nb] : [mb * nb, ma * na];
      for (const which of [0, 1]) {
        if (slotsOf[i][which] > 1) {
          partialMax[which] = Math.max(partialMax[which], slotsOf[i][which] * sizes[which]);
        }
      }
    });
    const raw = batch.scratch([rawMax]);
    // GPUs: the gate gradient in one dispatch from the finished dB's where the factors share a
    // buffer (the fused route's kernel), instead of a dot per component and the softmax backward.
    const oneGateGrad = this.#gpu && this.#dgate !== null && this.#fused !== null;
    const u = this.#dgate && !oneGateGrad ? rt.empty([this.#comps.length]) : null;
    const anySlots = slotsOf.some((s) => s[0] > 1 || s[1] > 1);
    const partials = anySlots ? partialMax.map((n) => batch.scratch([n])) : [];
    const slotOut: (GpuTensor | null)[] = [null, null]; // where each partial's sum goes
    // Factor gradients. Slotted: each chunk adds its token slices into the slots, summed once per
    // component in a fixed order (bit-reproducible). Otherwise a chunk's gradient accumulates into
    // its destination (beta = 1), and a whole-token product on a CPU adapter splits itself.
    const grad = (
      which: 0 | 1,
      slots: number,
      args: GradMatmulArgs & { out: GpuTensor },
      first: boolean,
    ) => {
      if (slots > 1) {
        slotOut[which] = args.out;
        const partial = partials[which].view([slots * args.m * args.n]);
        if (this.#gpu) return splitGrad(rt, batch, { ...args, partial, slots, beta: 1 });
        return gradMatmulSlots(rt, batch, {
          ...args,
          partial: partial.view([slots, args.m, args.n]),
          slots,
        });
      }
      if (this.#gpu) {
        return splitGrad(rt, batch, { ...args, partial: args.out, slots: 1, beta: first ? 0 : 1 });
      }
      return gradMatmul(rt, batch, {
        ...args,
        beta: first ? 0 : 1,
        maxSlices: chunked ? 1 : undefined,
      });
    };
    for (let i = 0; i < this.#comps.length; i++) {
      const { shape: { ma, na, mb, nb }, a, b, da, db } = this.#comps[i];
      const [slotsB, slotsA] = slotsOf[i];
      const scaled = await this.#scaledFactor(batch, i);
      if (slotsB > 1 || slotsA > 1) {
        for (const p of partials) batch.clear(p.buffer, p.byteOffset, p.byteLength);
      }
      for (const { start, count } of plan.chunks) {
        const first = start === 0;
        const xc = rows(x, tokens, start, count);
        const dyc = rows(dy, tokens, start, count);
        const dxc = rows(dx, tokens, start, count);
        if (a === null) {
          await this.#product(batch, dyc, scaled, dxc, { m: count * ma, n: nb, k: mb, beta: 1 });
          await grad(1, slotsA, {
            left: dyc,
            right: xc,
            out: raw.view([mb, nb]),
            m: mb,
            n: nb,
            tokens: count,
            perTokenK: ma,
            alpha: this.#scale,
          }, first);
          continue;
        }
        const k = zBuf.view([count, na, mb]);
        await this.#product(batch, scaled, dyc, k, {
          m: na,
          n: mb,
          k: ma,
          batch: count,
          broadcastA: true,
          transA: true,
        });
        await this.#product(batch, k, b, dxc, { m: count * na, n: nb, k: mb, beta: 1 });
        await grad(
          0,
          slotsB,
          { left: k, right: xc, out: db, m: mb, n: nb, tokens: count, perTokenK: na },
          first,
        );
        if (da) {
          const zt = zBuf.view([count, mb, na]); // the forward's W route never formed it
          await this.#product(batch, b, xc, zt, {
            m: mb,
            n: na,
            k: nb,
            batch: count,
            broadcastA: true,
            transB: true,
          });
          await grad(1, slotsA, {
            left: dyc,
            right: zt,
            out: raw.view([ma, na]),
            m: ma,
            n: na,
            tokens: count,
            perTokenK: mb,
            alpha: this.#scale,
            layout: "perToken",
          }, first);
        }
      }
      // The raw factor gradient (before the gate) goes to its destination with the gate folded in:
      // on GPUs, a slotted one in the same dispatch that sums its slots.
      const gated = a === null ? db : da;
      let gatedDone = false;
      for (const which of [0, 1] as const) {
        const out = slotOut[which];
        if (!out) continue;
        const slots = slotsOf[i][which];
        const src = partials[which].view([slots, ...out.shape]);
        if (this.#gpu && which === 1 && gated) {
          await sumSlotsGated(rt, batch, { dst: gated, src, slots, gate: this.#gate, comp: i });
          gatedDone = true;
        } else await sumSlices(rt, batch, { dst: out, src, slices: slots });
        slotOut[which] = null;
      }
      if (gated && !gatedDone) {
        await gatedAxpy(rt, batch, {
          dst: gated,
          src: raw.view(gated.shape),
          gate: this.#gate,
          comp: i,
          scale: 1,
          beta: 0,
        });
      }
      if (u) await dotInto(rt, batch, { out: u, index: i, a: b, b: db });
      batch.recycle(scaled);
    }
    if (u && this.#dgate) {
      await gateBackward(rt, batch, { dg: this.#dgate, gate: this.#gate, u });
      batch.releaseAfter(u);
    }
    if (oneGateGrad) await fusedKronGateGrad(rt, batch, this.#fused!);
    for (const t of [zBuf, raw, ...partials]) batch.recycle(t);
  }

  /** C = op(A)·op(B) (+ beta·C): on GPUs with the tile that fits this output shape best. */
  #product(batch: Batch, a: GpuTensor, b: GpuTensor, out: GpuTensor, spec: MatmulSpec) {
    const kernel = this.#gpu
      ? gpuProductKernel(this.#rt.variants, spec.m, spec.n, spec.batch ?? 1)
      : undefined;
    return matmul(this.#rt, a, b, spec, { out, batch, kernel });
  }

  /**
   * Partial-sum slots of an m×n factor gradient over chunks of `chunk` tokens (≤ 1: none). CPU
   * adapters: {@link CHUNK_GRAD_SLOTS} for gradients of at most 64×64 when chunked. GPUs: enough
   * to fill the device ({@link gpuGradSlots}), within {@link gpuPartialBytes} per role.
   */
  #gradSlots(m: number, n: number, chunk: number, perTokenK: number, chunked: boolean): number {
    if (!this.#gpu) return chunked && m * n <= SLOTTED_GRAD_MAX ? CHUNK_GRAD_SLOTS : 1;
    const maxFloats = gpuPartialBytes(this.#scratchBytes) / 4;
    return gpuGradSlots(this.#rt.variants, { m, n, tokens: chunk, perTokenK, maxFloats });
  }

  /** A'ᵢ = s·αᵢ·Aᵢ (or B for an identity A) in batch scratch, computed on the GPU. */
  async #scaledFactor(batch: Batch, i: number): Promise<GpuTensor> {
    const { a, b } = this.#comps[i];
    const src = a ?? b;
    const scaled = batch.scratch(src.shape);
    await gatedAxpy(this.#rt, batch, {
      dst: scaled,
      src,
      gate: this.#gate,
      comp: i,
      scale: this.#scale,
      beta: 0,
    });
    return scaled;
  }

  /**
   * Token chunks that fit the scratch budget. A chunk is a multiple of the rows that keep x's and
   * y's windows at bindable offsets; with fewer tokens than that, one chunk takes them all. When
   * tokens are chunked the chunks already run one after another, so factor gradients accumulate
   * chunk by chunk instead of splitting each chunk's K into many slices whose sums need memory.
   */
  #plan(tokens: number, backward: boolean) {
    let zPerToken = 0;
    for (const { shape: s, a } of this.#comps) {
      if (a !== null) {
        zPerToken = Math.max(zPerToken, ...(backward ? [s.na * s.mb, s.mb * s.na] : [s.ma * s.nb]));
      }
    }
    return { ...this.#chunks(tokens, zPerToken), zPerToken };
  }
}

/** Rows [start, start + count) of a [tokens, d] tensor (the tensor itself when that is all). */
function rows(t: GpuTensor, tokens: number, start: number, count: number): GpuTensor {
  if (start === 0 && count === tokens) return t;
  return t.view([tokens, t.size / tokens]).rows(start, count);
}
