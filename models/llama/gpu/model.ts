/**
 * The LLaMA model on the GPU: frozen base weights (f32, or 4-bit NF4/int4 through the fused
 * kernels), adapters attached by module, forward to logits, and the backward from a masked
 * cross-entropy to every adapter parameter. Everything one step needs is recorded in one batch.
 *
 * Mirrors `CpuLlama` (models/llama/cpu/model.ts) layer for layer; the tests hold the two together.
 */
import {
  addInto,
  attentionBackward,
  attentionDecode,
  attentionForward,
  crossEntropyInPlace,
  embed,
  rmsnormBackward,
  rmsnormForward,
  rope,
  ropeTables,
  swigluBackward,
  swigluForward,
} from "../../../kernels/llama/ops.ts";
import { matmul } from "../../../kernels/matmul/matmul.ts";
import {
  type GpuQuantWeight,
  quantMatmul,
  quantMatmulBackward,
  uploadQuantized,
} from "../../../kernels/quant/qmatmul.ts";
import type { Batch } from "../../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../../kernels/runtime/tensor.ts";
import type { Adapter, GpuAdapterLayer } from "../../adapters/adapter.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import type { Llama2cCheckpoint } from "../../llama2c.ts";
import { TARGET_MODULES, type TargetModule } from "../../llama_shapes.ts";
import { quantizeInt4 } from "../../quant/int4.ts";
import { quantizeNf4 } from "../../quant/nf4.ts";
import { headSize, kvDim, linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "../config.ts";
import { adapterKey } from "../cpu/model.ts";

/** How the frozen linear weights are stored on the GPU. */
export type BaseFormat = "f32" | "nf4" | "int4";

type Weight = { kind: "f32"; t: GpuTensor } | { kind: "quant"; w: GpuQuantWeight };

interface LayerTape {
  input: GpuTensor;
  n1: GpuTensor;
  inv1: GpuTensor;
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  att: GpuTensor;
  attOut: GpuTensor;
  h1: GpuTensor;
  n2: GpuTensor;
  inv2: GpuTensor;
  g: GpuTensor;
  u: GpuTensor;
  act: GpuTensor;
}

/** Options of {@link GpuLlama.create}. */
export interface GpuLlamaOptions {
  /** Storage of the block's linear weights (default f32). Norms, embedding, classifier stay f32. */
  base?: BaseFormat;
}

/** A LLaMA model whose weights live on the GPU. */
export class GpuLlama {
  /** Architecture. */
  readonly config: LlamaConfig;
  /** Base weight storage. */
  readonly base: BaseFormat;
  readonly #rt: GpuRuntime;
  readonly #ckpt: Llama2cCheckpoint;
  readonly #emb: GpuTensor;
  readonly #cls: GpuTensor;
  readonly #finalNorm: GpuTensor;
  readonly #norms: { attn: GpuTensor; ffn: GpuTensor }[];
  readonly #weights: Map<string, Weight>;
  readonly #cos: GpuTensor;
  readonly #sin: GpuTensor;
  #adapters = new Map<string, GpuAdapterLayer>();
  #f32Copies = new Map<string, GpuTensor>(); // DoRA reads W in f32 even over a 4-bit base
  #tape: {
    layers: LayerTape[];
    final: GpuTensor;
    nf: GpuTensor;
    invf: GpuTensor;
    rows: number;
    seq: number;
  } | null = null;

  private constructor(
    rt: GpuRuntime,
    config: LlamaConfig,
    ckpt: Llama2cCheckpoint,
    base: BaseFormat,
  ) {
    this.#rt = rt;
    this.config = config;
    this.base = base;
    this.#ckpt = ckpt;
    const { dim, vocab } = config;
    this.#emb = rt.upload(ckpt.tokenEmbedding, [vocab, dim]);
    this.#cls = config.sharedClassifier ? this.#emb : rt.upload(ckpt.classifier, [vocab, dim]);
    this.#finalNorm = rt.upload(ckpt.finalNorm, [dim]);
    this.#norms = ckpt.layers.map((l) => ({
      attn: rt.upload(l.attnNorm, [dim]),
      ffn: rt.upload(l.ffnNorm, [dim]),
    }));
    this.#weights = new Map();
    for (let l = 0; l < config.layers; l++) {
      for (const m of TARGET_MODULES) {
        const [dIn, dOut] = linearDims(config, m);
        const w = ckpt.layers[l][LLAMA2C_WEIGHT[m]];
        const key = adapterKey(l, m);
        if (base === "f32") this.#weights.set(key, { kind: "f32", t: rt.upload(w, [dOut, dIn]) });
        else {
          const q = base === "nf4" ? quantizeNf4(w, dOut, dIn) : quantizeInt4(w, dOut, dIn, 32);
          this.#weights.set(key, { kind: "quant", w: uploadQuantized(rt, q, `layer ${l} ${m}`) });
        }
      }
    }
    const tables = ropeTables(config.seqLen, headSize(config), config.ropeTheta);
    this.#cos = rt.upload(tables.cos, [tables.cos.length]);
    this.#sin = rt.upload(tables.sin, [tables.sin.length]);
  }

  /** Upload a checkpoint (4-bit bases are quantized here, on the host). */
  static create(
    rt: GpuRuntime,
    config: LlamaConfig,
    ckpt: Llama2cCheckpoint,
    options: GpuLlamaOptions = {},
  ): GpuLlama {
    return new GpuLlama(rt, config, ckpt, options.base ?? "f32");
  }

  /** Attach adapters by key `${layer}.${module}`; replaces any attached before. */
  async attach(adapters: Map<string, Adapter<AdapterConfig>>): Promise<void> {
    this.detach();
    for (const [key, a] of adapters) {
      const w = this.#weights.get(key);
      if (!w) throw new Error(`attach: no module "${key}" in a ${this.config.layers}-layer model`);
      const [l, m] = key.split(".") as [string, TargetModule];
      const [dIn, dOut] = linearDims(this.config, m);
      if (a.dIn !== dIn || a.dOut !== dOut) {
        throw new Error(
          `attach: adapter for ${key} is ${a.dOut}×${a.dIn}, the module is ${dOut}×${dIn}`,
        );
      }
      let f32: GpuTensor | undefined;
      if (a.config.kind === "dora") {
        f32 = w.kind === "f32"
          ? w.t
          : this.#rt.upload(this.#ckpt.layers[Number(l)][LLAMA2C_WEIGHT[m]], [dOut, dIn]);
        if (w.kind !== "f32") this.#f32Copies.set(key, f32);
      }
      this.#adapters.set(key, await a.toGpu(this.#rt, f32));
    }
  }

  /** The attached GPU adapter layers. */
  get adapters(): ReadonlyMap<string, GpuAdapterLayer> {
    return this.#adapters;
  }

  /** Free the attached adapters. */
  detach(): void {
    for (const a of this.#adapters.values()) a.release();
    for (const t of this.#f32Copies.values()) t.release();
    this.#adapters.clear();
    this.#f32Copies.clear();
  }

  /** Bytes of the frozen linear weights on the GPU (what 4-bit storage saves). */
  get linearWeightBytes(): number {
    let n = 0;
    for (const w of this.#weights.values()) n += w.kind === "f32" ? w.t.byteLength : w.w.bytes;
    return n;
  }

  async #linear(
    batch: Batch,
    key: string,
    x: GpuTensor,
    rows: number,
    dOut: number,
  ): Promise<GpuTensor> {
    const w = this.#weights.get(key)!;
    const rt = this.#rt;
    const y = rt.empty([rows, dOut]);
    if (w.kind === "f32") {
      await matmul(rt, x, w.t, { m: rows, n: dOut, k: x.size / rows, transB: true }, {
        out: y,
        batch,
      });
    } else await quantMatmul(rt, x, w.w, { out: y, batch });
    const a = this.#adapters.get(key);
    if (a) await a.forward(batch, x, y, rows);
    return y;
  }

  /** dx (+)= ∂L/∂x of a linear module (adapter included) given dy. */
  async #linearBackward(
    batch: Batch,
    key: string,
    x: GpuTensor,
    dy: GpuTensor,
    dx: GpuTensor,
    rows: number,
    accumulate: boolean,
  ): Promise<void> {
    const rt = this.#rt;
    const w = this.#weights.get(key)!;
    const a = this.#adapters.get(key);
    const target = accumulate ? rt.empty(dx.shape) : dx;
    let dyBase = dy;
    let beta = 0;
    if (a) {
      dyBase = await a.backward(batch, x, dy, target, rows);
      beta = 1;
    }
    const dOut = dy.size / rows;
    const dIn = dx.size / rows;
    if (w.kind === "f32") {
      await matmul(rt, dyBase, w.t, { m: rows, n: dIn, k: dOut, beta }, { out: target, batch });
    } else await quantMatmulBackward(rt, dyBase, w.w, { out: target, beta, batch });
    if (accumulate) {
      await addInto(rt, batch, { dst: dx, src: target });
      batch.releaseAfter(target);
    }
  }

  /**
   * Logits [sequences·seq, vocab] of `ids` (u32 [sequences·seq], each sequence `seq` long).
   * With `keep`, the activations stay for {@link backward}.
   */
  async forward(
    batch: Batch,
    ids: GpuTensor,
    seq: number,
    keep = false,
    cache?: KvCache,
  ): Promise<GpuTensor> {
    const rt = this.#rt;
    const c = this.config;
    const rows = ids.size;
    if (rows % seq !== 0 || seq > c.seqLen) {
      throw new RangeError(
        `forward: ${rows} ids are not whole sequences of ${seq} (max ${c.seqLen})`,
      );
    }
    this.#dropTape(batch);
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
    let h = rt.empty([rows, dim]);
    await embed(rt, batch, { out: h, ids, table: this.#emb, dim });
    const layers: LayerTape[] = [];
    const temps: GpuTensor[] = [];
    for (let l = 0; l < c.layers; l++) {
      const n1 = rt.empty([rows, dim]);
      const inv1 = rt.empty([rows]);
      await rmsnormForward(rt, batch, {
        y: n1,
        inv: inv1,
        x: h,
        w: this.#norms[l].attn,
        eps: c.normEps,
      });
      const q = await this.#linear(batch, adapterKey(l, "q"), n1, rows, dim);
      const k = await this.#linear(batch, adapterKey(l, "k"), n1, rows, kvDim(c));
      const v = await this.#linear(batch, adapterKey(l, "v"), n1, rows, kvDim(c));
      await rope(rt, batch, {
        x: q,
        cos: this.#cos,
        sin: this.#sin,
        heads: c.heads,
        headSize: hs,
        seq,
      });
      await rope(rt, batch, {
        x: k,
        cos: this.#cos,
        sin: this.#sin,
        heads: c.kvHeads,
        headSize: hs,
        seq,
      });
      if (cache) cache.fill(batch, l, k, v, seq);
      const att = rt.empty([rows / seq, c.heads, seq, seq]);
      const attOut = rt.empty([rows, dim]);
      await attentionForward(rt, batch, { out: attOut, att, q, k, v, dims });
      const o = await this.#linear(batch, adapterKey(l, "o"), attOut, rows, dim);
      const h1 = rt.empty([rows, dim]);
      batch.copy(h.buffer, 0, h1.buffer, 0, h.byteLength);
      await addInto(rt, batch, { dst: h1, src: o });
      const n2 = rt.empty([rows, dim]);
      const inv2 = rt.empty([rows]);
      await rmsnormForward(rt, batch, {
        y: n2,
        inv: inv2,
        x: h1,
        w: this.#norms[l].ffn,
        eps: c.normEps,
      });
      const g = await this.#linear(batch, adapterKey(l, "gate"), n2, rows, hiddenDim);
      const u = await this.#linear(batch, adapterKey(l, "up"), n2, rows, hiddenDim);
      const act = rt.empty([rows, hiddenDim]);
      await swigluForward(rt, batch, { h: act, a: g, b: u });
      const d = await this.#linear(batch, adapterKey(l, "down"), act, rows, dim);
      const h2 = rt.empty([rows, dim]);
      batch.copy(h1.buffer, 0, h2.buffer, 0, h1.byteLength);
      await addInto(rt, batch, { dst: h2, src: d });
      temps.push(o, d);
      layers.push({ input: h, n1, inv1, q, k, v, att, attOut, h1, n2, inv2, g, u, act });
      h = h2;
    }
    const { nf, invf, logits } = await this.#head(batch, h, rows);
    for (const t of temps) batch.releaseAfter(t);
    this.#tape = { layers, final: h, nf, invf, rows, seq };
    if (!keep) this.#dropTape(batch);
    return logits;
  }

  /** An empty KV cache for `slots` sequences (beams) of up to `maxSeq` tokens. */
  createCache(slots: number, maxSeq = this.config.seqLen): KvCache {
    if (maxSeq > this.config.seqLen) {
      throw new RangeError(`cache of ${maxSeq} > seqLen ${this.config.seqLen}`);
    }
    return new KvCache(this.#rt, this.config.layers, slots, maxSeq, kvDim(this.config));
  }

  /**
   * One decoding step: `ids` (u32 [slots]) are the tokens at position `pos` of every slot; their
   * keys/values go into the cache, the logits [slots, vocab] come back (inference only).
   */
  async decode(batch: Batch, ids: GpuTensor, pos: number, cache: KvCache): Promise<GpuTensor> {
    const rt = this.#rt;
    const c = this.config;
    const rows = ids.size;
    if (rows !== cache.slots || pos >= cache.maxSeq) {
      throw new RangeError(
        `decode: ${rows} ids for ${cache.slots} slots, position ${pos} of ${cache.maxSeq}`,
      );
    }
    this.#dropTape(batch);
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const temps: GpuTensor[] = [];
    const keep = (t: GpuTensor) => (temps.push(t), t);
    const h = keep(rt.empty([rows, dim]));
    await embed(rt, batch, { out: h, ids, table: this.#emb, dim });
    const scores = keep(rt.empty([rows, c.heads, cache.maxSeq]));
    for (let l = 0; l < c.layers; l++) {
      const n1 = keep(rt.empty([rows, dim]));
      const inv = keep(rt.empty([rows]));
      await rmsnormForward(rt, batch, { y: n1, inv, x: h, w: this.#norms[l].attn, eps: c.normEps });
      const q = keep(await this.#linear(batch, adapterKey(l, "q"), n1, rows, dim));
      const k = keep(await this.#linear(batch, adapterKey(l, "k"), n1, rows, kvDim(c)));
      const v = keep(await this.#linear(batch, adapterKey(l, "v"), n1, rows, kvDim(c)));
      const r = { cos: this.#cos, sin: this.#sin, headSize: hs, seq: 1, offset: pos };
      await rope(rt, batch, { x: q, heads: c.heads, ...r });
      await rope(rt, batch, { x: k, heads: c.kvHeads, ...r });
      cache.write(batch, l, k, v, pos);
      const attOut = keep(rt.empty([rows, dim]));
      await attentionDecode(rt, batch, {
        out: attOut,
        scores,
        q,
        kc: cache.k[l],
        vc: cache.v[l],
        heads: c.heads,
        kvHeads: c.kvHeads,
        headSize: hs,
        pos,
        maxSeq: cache.maxSeq,
      });
      const o = keep(await this.#linear(batch, adapterKey(l, "o"), attOut, rows, dim));
      await addInto(rt, batch, { dst: h, src: o });
      const n2 = keep(rt.empty([rows, dim]));
      await rmsnormForward(rt, batch, { y: n2, inv, x: h, w: this.#norms[l].ffn, eps: c.normEps });
      const g = keep(await this.#linear(batch, adapterKey(l, "gate"), n2, rows, hiddenDim));
      const u = keep(await this.#linear(batch, adapterKey(l, "up"), n2, rows, hiddenDim));
      const act = keep(rt.empty([rows, hiddenDim]));
      await swigluForward(rt, batch, { h: act, a: g, b: u });
      const d = keep(await this.#linear(batch, adapterKey(l, "down"), act, rows, dim));
      await addInto(rt, batch, { dst: h, src: d });
    }
    const { nf, invf, logits } = await this.#head(batch, h, rows);
    for (const t of [...temps, nf, invf]) batch.releaseAfter(t);
    return logits;
  }

  /** Final RMSNorm and classifier: logits [rows, vocab] (nf and 1/rms kept for the backward). */
  async #head(batch: Batch, h: GpuTensor, rows: number) {
    const rt = this.#rt;
    const c = this.config;
    const nf = rt.empty([rows, c.dim]);
    const invf = rt.empty([rows]);
    await rmsnormForward(rt, batch, { y: nf, inv: invf, x: h, w: this.#finalNorm, eps: c.normEps });
    const logits = rt.empty([rows, c.vocab]);
    await matmul(rt, nf, this.#cls, { m: rows, n: c.vocab, k: c.dim, transB: true }, {
      out: logits,
      batch,
    });
    return { nf, invf, logits };
  }

  #dropTape(batch: Batch): void {
    if (!this.#tape) return;
    for (const l of this.#tape.layers) for (const t of Object.values(l)) batch.releaseAfter(t);
    for (const t of [this.#tape.final, this.#tape.nf, this.#tape.invf]) batch.releaseAfter(t);
    this.#tape = null;
  }

  /**
   * Masked cross-entropy on the logits of the last `forward(..., keep = true)` and the backward
   * into every adapter's gradients. `targets` are i32 (−1 masked) in a u32 tensor; `count` is the
   * number of unmasked rows. Returns the per-row loss tensor (sum / count = mean loss).
   */
  async lossAndBackward(
    batch: Batch,
    logits: GpuTensor,
    targets: GpuTensor,
    count: number,
  ): Promise<GpuTensor> {
    const rt = this.#rt;
    const c = this.config;
    const tape = this.#tape;
    if (!tape) throw new Error("lossAndBackward: run forward(..., keep = true) first");
    const { rows, seq } = tape;
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
    const loss = rt.empty([rows]);
    await crossEntropyInPlace(rt, batch, { logits, targets, loss, vocab: c.vocab, count }); // logits := dlogits
    const dnf = rt.empty([rows, dim]);
    await matmul(rt, logits, this.#cls, { m: rows, n: dim, k: c.vocab }, { out: dnf, batch });
    let dh = rt.empty([rows, dim]);
    await rmsnormBackward(rt, batch, {
      dx: dh,
      x: tape.final,
      w: this.#finalNorm,
      inv: tape.invf,
      dy: dnf,
      accumulate: false,
    });
    const scratch: GpuTensor[] = [dnf];
    for (let l = c.layers - 1; l >= 0; l--) {
      const s = tape.layers[l];
      const key = (m: TargetModule) => adapterKey(l, m);
      // MLP: h2 = h1 + down(swiglu(gate(n2), up(n2)))
      const dact = rt.empty([rows, hiddenDim]);
      await this.#linearBackward(batch, key("down"), s.act, dh, dact, rows, false);
      const dg = rt.empty([rows, hiddenDim]);
      const du = rt.empty([rows, hiddenDim]);
      await swigluBackward(rt, batch, { da: dg, db: du, a: s.g, b: s.u, dh: dact });
      const dn2 = rt.empty([rows, dim]);
      await this.#linearBackward(batch, key("gate"), s.n2, dg, dn2, rows, false);
      await this.#linearBackward(batch, key("up"), s.n2, du, dn2, rows, true);
      const dh1 = rt.empty([rows, dim]);
      batch.copy(dh.buffer, 0, dh1.buffer, 0, dh.byteLength); // residual path
      await rmsnormBackward(rt, batch, {
        dx: dh1,
        x: s.h1,
        w: this.#norms[l].ffn,
        inv: s.inv2,
        dy: dn2,
        accumulate: true,
      });
      // attention: h1 = h + o(attn(rope(q), rope(k), v))
      const dattOut = rt.empty([rows, dim]);
      await this.#linearBackward(batch, key("o"), s.attOut, dh1, dattOut, rows, false);
      const dq = rt.empty(s.q.shape);
      const dk = rt.empty(s.k.shape);
      const dv = rt.empty(s.v.shape);
      const ds = rt.empty(s.att.shape);
      await attentionBackward(rt, batch, {
        dq,
        dk,
        dv,
        ds,
        q: s.q,
        k: s.k,
        v: s.v,
        att: s.att,
        dout: dattOut,
        dims,
      });
      await rope(rt, batch, {
        x: dq,
        cos: this.#cos,
        sin: this.#sin,
        heads: c.heads,
        headSize: hs,
        seq,
        inverse: true,
      });
      await rope(rt, batch, {
        x: dk,
        cos: this.#cos,
        sin: this.#sin,
        heads: c.kvHeads,
        headSize: hs,
        seq,
        inverse: true,
      });
      const dn1 = rt.empty([rows, dim]);
      await this.#linearBackward(batch, key("q"), s.n1, dq, dn1, rows, false);
      await this.#linearBackward(batch, key("k"), s.n1, dk, dn1, rows, true);
      await this.#linearBackward(batch, key("v"), s.n1, dv, dn1, rows, true);
      const dx = rt.empty([rows, dim]);
      batch.copy(dh1.buffer, 0, dx.buffer, 0, dh1.byteLength);
      await rmsnormBackward(rt, batch, {
        dx,
        x: s.input,
        w: this.#norms[l].attn,
        inv: s.inv1,
        dy: dn1,
        accumulate: true,
      });
      scratch.push(dact, dg, du, dn2, dh1, dattOut, dq, dk, dv, ds, dn1, dh);
      dh = dx;
    }
    scratch.push(dh);
    for (const t of scratch) batch.releaseAfter(t);
    this.#dropTape(batch);
    return loss;
  }

  /** Free every GPU buffer of the model and its adapters. */
  release(): void {
    this.detach();
    const ts = [
      this.#emb,
      this.#finalNorm,
      this.#cos,
      this.#sin,
      ...this.#norms.flatMap((n) => [n.attn, n.ffn]),
    ];
    if (this.#cls !== this.#emb) ts.push(this.#cls);
    for (const t of ts) t.release();
    for (const w of this.#weights.values()) {
      if (w.kind === "f32") w.t.release();
      else w.w.release();
    }
  }
}

/**
 * Keys and values of every layer for `slots` sequences: k[l], v[l] are [slots, maxSeq, kvDim].
 * Beam search reorders slots with {@link KvCache.reorder} (copies from a parent slot).
 */
export class KvCache {
  /** Keys per layer. */
  k: GpuTensor[];
  /** Values per layer. */
  v: GpuTensor[];
  /** Sequences held. */
  readonly slots: number;
  /** Positions per sequence. */
  readonly maxSeq: number;
  readonly #rt: GpuRuntime;
  readonly #width: number;

  /** Allocate (contents undefined until written). */
  constructor(rt: GpuRuntime, layers: number, slots: number, maxSeq: number, width: number) {
    this.#rt = rt;
    this.slots = slots;
    this.maxSeq = maxSeq;
    this.#width = width;
    this.k = Array.from({ length: layers }, () => rt.empty([slots, maxSeq, width]));
    this.v = Array.from({ length: layers }, () => rt.empty([slots, maxSeq, width]));
  }

  /** Copy one sequence's k/v [seq, width] (a prefill) into positions [0, seq) of every slot. */
  fill(batch: Batch, layer: number, k: GpuTensor, v: GpuTensor, seq: number): void {
    const bytes = seq * this.#width * 4;
    for (let s = 0; s < this.slots; s++) {
      const at = s * this.maxSeq * this.#width * 4;
      batch.copy(k.buffer, 0, this.k[layer].buffer, at, bytes);
      batch.copy(v.buffer, 0, this.v[layer].buffer, at, bytes);
    }
  }

  /** Write row s of k/v [slots, width] at position `pos` of slot s. */
  write(batch: Batch, layer: number, k: GpuTensor, v: GpuTensor, pos: number): void {
    const row = this.#width * 4;
    for (let s = 0; s < this.slots; s++) {
      const at = (s * this.maxSeq + pos) * row;
      batch.copy(k.buffer, s * row, this.k[layer].buffer, at, row);
      batch.copy(v.buffer, s * row, this.v[layer].buffer, at, row);
    }
  }

  /** Slot s takes over positions [0, length) of slot parents[s] (through fresh buffers). */
  reorder(batch: Batch, parents: number[], length: number): void {
    if (parents.length !== this.slots) {
      throw new RangeError(`reorder: ${parents.length} parents for ${this.slots} slots`);
    }
    if (parents.every((p, s) => p === s)) return;
    const bytes = length * this.#width * 4;
    const stride = this.maxSeq * this.#width * 4;
    const move = (old: GpuTensor[]) =>
      old.map((t) => {
        const next = this.#rt.empty(t.shape);
        parents.forEach((p, s) => batch.copy(t.buffer, p * stride, next.buffer, s * stride, bytes));
        batch.releaseAfter(t);
        return next;
      });
    this.k = move(this.k);
    this.v = move(this.v);
  }

  /** Free the cache. */
  release(): void {
    for (const t of [...this.k, ...this.v]) t.release();
  }
}
