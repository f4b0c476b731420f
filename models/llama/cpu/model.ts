/**
 * The whole LLaMA forward and backward in float64, one sequence at a time: the oracle for the GPU
 * model and for finite-difference checks. Base weights are frozen; adapters (any kind) replace
 * the plain linear map of the modules they are attached to.
 */
import type { Adapter, F64Params } from "../../adapters/adapter.ts";
import { baseBackward, baseForward } from "../../adapters/adapter.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import type { LlamaWeights } from "../weights.ts";
import type { TargetModule } from "../../llama_shapes.ts";
import { headSize, linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "../config.ts";
import { attentionBackward, attentionForward } from "../../../kernels/llama/cpu/attention.ts";
import { crossEntropy } from "../../../kernels/llama/cpu/cross_entropy.ts";
import { rmsnormBackward, rmsnormForward } from "../../../kernels/llama/cpu/rmsnorm.ts";
import { ropeApply } from "../../../kernels/llama/cpu/rope.ts";
import { swigluBackward, swigluForward } from "../../../kernels/llama/cpu/swiglu.ts";

/** Adapters keyed `${layer}.${module}` (e.g. `0.q`), with their float64 parameters. */
export type CpuAdapters = Map<string, { adapter: Adapter<AdapterConfig>; params: F64Params }>;

/** Key of a module's adapter. */
export function adapterKey(layer: number, module: TargetModule): string {
  return `${layer}.${module}`;
}

/** Frozen base weights in float64 plus the config: built once from a checkpoint. */
export class CpuLlama {
  /** Architecture. */
  readonly config: LlamaConfig;
  readonly #w: LlamaWeights;
  readonly #f64 = new Map<Float32Array, Float64Array>();

  /** Wrap a loaded checkpoint. */
  constructor(config: LlamaConfig, weights: LlamaWeights) {
    this.config = config;
    this.#w = weights;
  }

  #wide(a: Float32Array): Float64Array {
    let out = this.#f64.get(a);
    if (!out) this.#f64.set(a, out = Float64Array.from(a));
    return out;
  }

  /** The base weight of a module, float64 [dOut, dIn]. */
  weight(layer: number, m: TargetModule): Float64Array {
    return this.#wide(this.#w.layers[layer][LLAMA2C_WEIGHT[m]]);
  }

  #linear(
    adapters: CpuAdapters | undefined,
    layer: number,
    m: TargetModule,
    x: Float64Array,
    tokens: number,
  ) {
    const a = adapters?.get(adapterKey(layer, m));
    const w = this.weight(layer, m);
    if (a) return a.adapter.math.forward(a.params, w, x, tokens);
    const [dIn, dOut] = linearDims(this.config, m);
    return baseForward(w, x, tokens, dIn, dOut);
  }

  /**
   * Logits [T, vocab] of one sequence (or only of `rows`, [rows.length, vocab]: the classifier is
   * the costliest layer of a big vocabulary), and the activations the backward needs.
   */
  forward(
    ids: ArrayLike<number>,
    adapters?: CpuAdapters,
    rows?: readonly number[],
  ): { logits: Float64Array; tape: Tape } {
    const c = this.config;
    const T = ids.length;
    const { dim } = c;
    const positions = Array.from({ length: T }, (_, i) => i);
    const x = new Float64Array(T * dim);
    const emb = this.#wide(this.#w.tokenEmbedding);
    for (let t = 0; t < T; t++) {
      if (!(ids[t] >= 0 && ids[t] < c.vocab)) {
        throw new RangeError(`token ${ids[t]} at ${t} outside the vocabulary`);
      }
      x.set(emb.subarray(ids[t] * dim, (ids[t] + 1) * dim), t * dim);
    }
    const layers: LayerTape[] = [];
    let h = x;
    for (let l = 0; l < c.layers; l++) {
      const lw = this.#w.layers[l];
      const n1 = rmsnormForward(h, lw.attnNorm, T, dim, c.normEps);
      const q = this.#linear(adapters, l, "q", n1.y, T);
      const k = this.#linear(adapters, l, "k", n1.y, T);
      const v = this.#linear(adapters, l, "v", n1.y, T);
      ropeApply(q, positions, c.heads, headSize(c), c.ropeTheta, false, c.ropeLayout);
      ropeApply(k, positions, c.kvHeads, headSize(c), c.ropeTheta, false, c.ropeLayout);
      const shape = { tokens: T, heads: c.heads, kvHeads: c.kvHeads, headSize: headSize(c) };
      const at = attentionForward(q, k, v, shape);
      const o = this.#linear(adapters, l, "o", at.out, T);
      const h1 = h.map((val, i) => val + o[i]);
      const n2 = rmsnormForward(h1, lw.ffnNorm, T, dim, c.normEps);
      const g = this.#linear(adapters, l, "gate", n2.y, T);
      const u = this.#linear(adapters, l, "up", n2.y, T);
      const act = swigluForward(g, u);
      const d = this.#linear(adapters, l, "down", act, T);
      const h2 = h1.map((val, i) => val + d[i]);
      layers.push({ input: h, n1, q, k, v, att: at.att, attOut: at.out, h1, n2, g, u, act });
      h = h2;
    }
    const nf = rmsnormForward(h, this.#w.finalNorm, T, dim, c.normEps);
    const picked = rows ? new Float64Array(rows.length * dim) : nf.y;
    rows?.forEach((r, i) => picked.set(nf.y.subarray(r * dim, (r + 1) * dim), i * dim));
    const n = rows ? rows.length : T;
    const logits = baseForward(this.#wide(this.#w.classifier), picked, n, dim, c.vocab);
    return { logits, tape: { ids: Array.from(ids), layers, final: h, nf } };
  }

  /**
   * Loss over `targets` (−1 = masked) and the gradients of every adapter's trainable parameters.
   */
  lossAndGrads(
    ids: ArrayLike<number>,
    targets: ArrayLike<number>,
    adapters: CpuAdapters,
  ): { loss: number; grads: Map<string, F64Params> } {
    const c = this.config;
    const T = ids.length;
    const { dim } = c;
    const { logits, tape } = this.forward(ids, adapters);
    const ce = crossEntropy(logits, targets, c.vocab);
    const grads = new Map<string, F64Params>();
    const linBack = (l: number, m: TargetModule, x: Float64Array, dy: Float64Array) => {
      const a = adapters.get(adapterKey(l, m));
      const w = this.weight(l, m);
      if (a) {
        const r = a.adapter.math.backward(a.params, w, x, T, dy);
        grads.set(adapterKey(l, m), r.grads);
        return r.dx;
      }
      const [dIn, dOut] = linearDims(c, m);
      const dx = new Float64Array(T * dIn);
      baseBackward(w, dy, T, dIn, dOut, dx);
      return dx;
    };
    // classifier and final norm
    const dnf = new Float64Array(T * dim);
    baseBackward(this.#wide(this.#w.classifier), ce.dlogits, T, dim, c.vocab, dnf);
    let dh = rmsnormBackward(tape.final, this.#w.finalNorm, tape.nf.inv, dnf, T, dim).dx;
    const positions = Array.from({ length: T }, (_, i) => i);
    for (let l = c.layers - 1; l >= 0; l--) {
      const lw = this.#w.layers[l];
      const s = tape.layers[l];
      // MLP branch: h2 = h1 + down(swiglu(gate(n2), up(n2)))
      const dact = linBack(l, "down", s.act, dh);
      const { da, db } = swigluBackward(s.g, s.u, dact);
      const dn2 = linBack(l, "gate", s.n2.y, da);
      const dn2u = linBack(l, "up", s.n2.y, db);
      for (let i = 0; i < dn2.length; i++) dn2[i] += dn2u[i];
      const dh1 = rmsnormBackward(s.h1, lw.ffnNorm, s.n2.inv, dn2, T, dim).dx;
      for (let i = 0; i < dh1.length; i++) dh1[i] += dh[i];
      // attention branch: h1 = h + o(attn(rope(q), rope(k), v))
      const dattOut = linBack(l, "o", s.attOut, dh1);
      const shape = { tokens: T, heads: c.heads, kvHeads: c.kvHeads, headSize: headSize(c) };
      const { dq, dk, dv } = attentionBackward(s.q, s.k, s.v, s.att, dattOut, shape);
      ropeApply(dq, positions, c.heads, headSize(c), c.ropeTheta, true, c.ropeLayout);
      ropeApply(dk, positions, c.kvHeads, headSize(c), c.ropeTheta, true, c.ropeLayout);
      const dn1 = linBack(l, "q", s.n1.y, dq);
      const dn1k = linBack(l, "k", s.n1.y, dk);
      const dn1v = linBack(l, "v", s.n1.y, dv);
      for (let i = 0; i < dn1.length; i++) dn1[i] += dn1k[i] + dn1v[i];
      const dx = rmsnormBackward(s.input, lw.attnNorm, s.n1.inv, dn1, T, dim).dx;
      for (let i = 0; i < dx.length; i++) dx[i] += dh1[i];
      dh = dx;
    }
    return { loss: ce.loss, grads };
  }

  /** Greedy decoding by full recomputation (the reference for the GPU's KV-cached decode). */
  greedy(prompt: number[], steps: number, adapters?: CpuAdapters): number[] {
    const ids = [...prompt];
    const out: number[] = [];
    for (let s = 0; s < steps; s++) {
      const { logits } = this.forward(ids, adapters);
      const row = logits.subarray((ids.length - 1) * this.config.vocab);
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
      out.push(best);
      ids.push(best);
    }
    return out;
  }
}

/** Activations of one block kept for the backward. */
export interface LayerTape {
  /** Residual stream entering the block. */
  input: Float64Array;
  /** Attention RMSNorm output and 1/rms. */
  n1: { y: Float64Array; inv: Float64Array };
  /** Queries after RoPE. */
  q: Float64Array;
  /** Keys after RoPE. */
  k: Float64Array;
  /** Values. */
  v: Float64Array;
  /** Attention probabilities [heads, T, T]. */
  att: Float64Array;
  /** Attention output before wo. */
  attOut: Float64Array;
  /** Residual after attention. */
  h1: Float64Array;
  /** FFN RMSNorm output and 1/rms. */
  n2: { y: Float64Array; inv: Float64Array };
  /** Gate projection (w1). */
  g: Float64Array;
  /** Up projection (w3). */
  u: Float64Array;
  /** silu(g)⊙u. */
  act: Float64Array;
}

/** Everything the backward needs from a forward pass. */
export interface Tape {
  /** Input ids. */
  ids: number[];
  /** Per block. */
  layers: LayerTape[];
  /** Residual stream before the final norm. */
  final: Float64Array;
  /** Final norm's output and 1/rms. */
  nf: { y: Float64Array; inv: Float64Array };
}
