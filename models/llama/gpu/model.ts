/**
 * The LLaMA model on the GPU: frozen base weights streamed from a checkpoint into row-blocked
 * storage (f32, bf16, f16, or 4-bit NF4/int4 through the fused kernels), adapters attached by
 * module, forward to logits where they are needed, and the backward from a masked cross-entropy
 * to every adapter parameter. Everything one step needs is recorded in one batch.
 *
 * Logits are never formed for a whole batch of a big vocabulary: training takes the loss in row
 * and vocabulary chunks (`lossAndBackward`), scoring and generation ask for the positions they
 * read (`forward(..., { logits: positions })`).
 *
 * Mirrors `CpuLlama` (models/llama/cpu/model.ts) layer for layer; the tests hold the two together.
 */
import {
  addInto,
  attentionBackward,
  attentionDecode,
  attentionForward,
  rmsnormBackward,
  rmsnormForward,
  rope,
  ropeTables,
  swigluBackward,
  swigluForward,
} from "../../../kernels/llama/ops.ts";
import { ceFinish, ceGrad, ceStats } from "../../../kernels/llama/cross_entropy.ts";
import {
  frozenBlockBackward,
  frozenBlockMatmul,
  frozenDequantize,
  frozenGather,
  frozenMatmul,
  frozenMatmulBackward,
  type FrozenMatrix,
  frozenRowNorms,
} from "../../../kernels/quant/frozen.ts";
import type { Batch } from "../../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../../kernels/runtime/runtime.ts";
import { type GpuTensor, rowAlignment } from "../../../kernels/runtime/tensor.ts";
import type { Adapter, GpuAdapterLayer } from "../../adapters/adapter.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import type { Llama2cCheckpoint } from "../../llama2c.ts";
import type { TargetModule } from "../../llama_shapes.ts";
import { headSize, kvDim, linearDims, type LlamaConfig } from "../config.ts";
import { adapterKey } from "../cpu/model.ts";
import { hostSource, type LlamaSource } from "../source.ts";
import {
  type LoadedWeights,
  loadWeights,
  type WeightFormat,
  type WeightLoadOptions,
} from "./weights.ts";

/** How the frozen linear weights are stored on the GPU. */
export type BaseFormat = WeightFormat;

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

/** Options of {@link GpuLlama.load}. */
export interface GpuLlamaOptions extends WeightLoadOptions {
  /**
   * Largest logits chunk of the training loss in bytes (default 64 MiB, or the device's binding
   * limit when smaller): rows × vocabulary-block floats computed at once.
   */
  logitsChunkBytes?: number;
}

/** Which logits {@link GpuLlama.forward} computes. */
export type LogitsRequest = "all" | "none" | readonly number[];

/** A LLaMA model whose weights live on the GPU. */
export class GpuLlama {
  /** Architecture. */
  readonly config: LlamaConfig;
  /** Base weight storage. */
  readonly base: BaseFormat;
  /** Bytes read and seconds taken by the load. */
  readonly loadStats: { bytesRead: number; seconds: number };
  readonly #rt: GpuRuntime;
  readonly #emb: FrozenMatrix;
  readonly #cls: FrozenMatrix;
  readonly #finalNorm: GpuTensor;
  readonly #norms: { attn: GpuTensor; ffn: GpuTensor }[];
  readonly #weights: Map<string, FrozenMatrix>;
  readonly #cos: GpuTensor;
  readonly #sin: GpuTensor;
  readonly #logitsChunkBytes: number;
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
    weights: LoadedWeights,
    base: BaseFormat,
    logitsChunkBytes: number,
  ) {
    this.#rt = rt;
    this.config = config;
    this.base = base;
    this.loadStats = weights.stats;
    this.#emb = weights.embed;
    this.#cls = weights.classifier;
    this.#finalNorm = weights.finalNorm;
    this.#norms = weights.norms;
    this.#weights = weights.linear;
    this.#logitsChunkBytes = logitsChunkBytes;
    const tables = ropeTables(config.seqLen, headSize(config), config.ropeTheta);
    this.#cos = rt.upload(tables.cos, [tables.cos.length]);
    this.#sin = rt.upload(tables.sin, [tables.sin.length]);
  }

  /**
   * Stream a model's weights onto the GPU (`source`: `openHfSource(dir)`, or `hostSource` for
   * weights in memory); 4-bit bases are quantized on the GPU as they arrive.
   */
  static async load(
    rt: GpuRuntime,
    source: LlamaSource,
    options: GpuLlamaOptions = {},
  ): Promise<GpuLlama> {
    const weights = await loadWeights(rt, source, options);
    const limit = rt.device.limits.maxStorageBufferBindingSize;
    return new GpuLlama(
      rt,
      source.config,
      weights,
      options.base ?? "f32",
      Math.min(options.logitsChunkBytes ?? 64 * 2 ** 20, limit),
    );
  }

  /** {@link GpuLlama.load} from weights in host memory (a llama2.c checkpoint, a test model). */
  static create(
    rt: GpuRuntime,
    config: LlamaConfig,
    ckpt: Llama2cCheckpoint,
    options: GpuLlamaOptions = {},
  ): Promise<GpuLlama> {
    return GpuLlama.load(rt, hostSource(config, ckpt), options);
  }

  /** The stored embedding, classifier and linear weights (read-only use: tests, tools). */
  get frozen(): {
    embed: FrozenMatrix;
    classifier: FrozenMatrix;
    linear: ReadonlyMap<string, FrozenMatrix>;
  } {
    return { embed: this.#emb, classifier: this.#cls, linear: this.#weights };
  }

  /** ‖W_r‖ of every row of a module's stored base weight (DoRA's initial magnitude). */
  async baseRowNorms(key: string): Promise<Float32Array> {
    const w = this.#weights.get(key);
    if (!w) throw new Error(`baseRowNorms: no module "${key}"`);
    const out = this.#rt.empty([w.rows]);
    const b = this.#rt.batch();
    await frozenRowNorms(this.#rt, b, w, out);
    await b.submit();
    const norms = await this.#rt.read(out) as Float32Array;
    out.release();
    return norms;
  }

  /** A module's stored base weight dequantized to f32 on the host (tests, merging). */
  async baseWeight(key: string): Promise<Float32Array> {
    const w = this.#weights.get(key);
    if (!w) throw new Error(`baseWeight: no module "${key}"`);
    const b = this.#rt.batch();
    const t = await frozenDequantize(this.#rt, b, w);
    await b.submit();
    const out = await this.#rt.read(t) as Float32Array;
    t.release();
    return out;
  }

  /** Attach adapters by key `${layer}.${module}`; replaces any attached before. */
  async attach(adapters: Map<string, Adapter<AdapterConfig>>): Promise<void> {
    this.detach();
    for (const [key, a] of adapters) {
      const w = this.#weights.get(key);
      if (!w) throw new Error(`attach: no module "${key}" in a ${this.config.layers}-layer model`);
      const m = key.split(".")[1] as TargetModule;
      const [dIn, dOut] = linearDims(this.config, m);
      if (a.dIn !== dIn || a.dOut !== dOut) {
        throw new Error(
          `attach: adapter for ${key} is ${a.dOut}×${a.dIn}, the module is ${dOut}×${dIn}`,
        );
      }
      let f32: GpuTensor | undefined;
      if (a.config.kind === "dora") {
        if (w.format === "f32" && w.blocks.length === 1) f32 = w.blocks[0].weight.packed;
        else {
          const b = this.#rt.batch();
          f32 = await frozenDequantize(this.#rt, b, w);
          await b.submit();
          this.#f32Copies.set(key, f32);
        }
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
    for (const w of this.#weights.values()) n += w.bytes;
    return n;
  }

  /** Bytes of every frozen weight on the GPU: linear layers, embedding, classifier, norms. */
  get weightBytes(): number {
    const norms = (this.#norms.length * 2 + 1) * this.config.dim * 4;
    const cls = this.#cls === this.#emb ? 0 : this.#cls.bytes;
    return this.linearWeightBytes + this.#emb.bytes + cls + norms;
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
    await frozenMatmul(rt, batch, x, w, { out: y });
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
    await frozenMatmulBackward(rt, batch, dyBase, w, { out: target, beta });
    if (accumulate) {
      await addInto(rt, batch, { dst: dx, src: target });
      batch.releaseAfter(target);
    }
  }

  /**
   * The forward pass over `ids` (u32 [sequences·seq], each sequence `seq` long). `logits` says
   * which logits to compute: `"all"` [sequences·seq, vocab] (small models only: the tensor must
   * fit one buffer), `"none"` (training: the loss comes from {@link lossAndBackward}), or a list
   * of row indices → [positions, vocab] (scoring, the last token of each prompt). With `keep`, the
   * activations stay for the backward; with `cache`, the keys and values fill it (a prefill).
   */
  async forward(
    batch: Batch,
    ids: GpuTensor,
    seq: number,
    options: { keep?: boolean; cache?: KvCache; logits?: LogitsRequest } = {},
  ): Promise<GpuTensor | null> {
    const rt = this.#rt;
    const c = this.config;
    const rows = ids.size;
    if (rows % seq !== 0 || seq > c.seqLen) {
      throw new RangeError(
        `forward: ${rows} ids are not whole sequences of ${seq} (max ${c.seqLen})`,
      );
    }
    const request = options.logits ?? "all";
    this.#dropTape(batch);
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
    let h = rt.empty([rows, dim]);
    await frozenGather(rt, batch, ids, this.#emb, h);
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
      if (options.cache) options.cache.fill(batch, l, k, v, seq);
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
    const { nf, invf } = await this.#finalNormForward(batch, h, rows);
    const logits = await this.#logits(batch, nf, rows, request);
    for (const t of temps) batch.releaseAfter(t);
    this.#tape = { layers, final: h, nf, invf, rows, seq };
    if (!options.keep) this.#dropTape(batch);
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
    await frozenGather(rt, batch, ids, this.#emb, h);
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
    const { nf, invf } = await this.#finalNormForward(batch, h, rows);
    const logits = (await this.#logits(batch, nf, rows, "all"))!;
    for (const t of [...temps, nf, invf]) batch.releaseAfter(t);
    return logits;
  }

  /** Final RMSNorm: nf [rows, dim] and 1/rms, kept for the backward. */
  async #finalNormForward(batch: Batch, h: GpuTensor, rows: number) {
    const rt = this.#rt;
    const c = this.config;
    const nf = rt.empty([rows, c.dim]);
    const invf = rt.empty([rows]);
    await rmsnormForward(rt, batch, { y: nf, inv: invf, x: h, w: this.#finalNorm, eps: c.normEps });
    return { nf, invf };
  }

  /** The classifier on all rows of nf, on some of them, or on none. */
  async #logits(
    batch: Batch,
    nf: GpuTensor,
    rows: number,
    request: LogitsRequest,
  ): Promise<GpuTensor | null> {
    const rt = this.#rt;
    const { dim, vocab } = this.config;
    if (request === "none") return null;
    if (request === "all") {
      const bytes = rows * vocab * 4;
      if (bytes > rt.device.limits.maxStorageBufferBindingSize) {
        throw new RangeError(
          `forward: logits of all ${rows} rows need ${bytes} bytes, over this device's binding ` +
            `limit; ask for the positions you read (logits: [...]) or take the loss with ` +
            `lossAndBackward`,
        );
      }
      return await frozenMatmul(rt, batch, nf, this.#cls);
    }
    const picked = rt.empty([request.length, dim]);
    request.forEach((r, i) => {
      if (!Number.isInteger(r) || r < 0 || r >= rows) {
        throw new RangeError(`forward: logits of row ${r} of ${rows}`);
      }
      batch.copy(nf.buffer, nf.byteOffset + r * dim * 4, picked.buffer, i * dim * 4, dim * 4);
    });
    const logits = await frozenMatmul(rt, batch, picked, this.#cls);
    batch.releaseAfter(picked);
    return logits;
  }

  /** loss[r] and dnf = ∂L/∂nf of the classifier and the cross-entropy, in chunks (see above). */
  async #classifierLoss(
    batch: Batch,
    nf: GpuTensor,
    dnf: GpuTensor,
    targets: GpuTensor,
    loss: GpuTensor,
    count: number,
  ): Promise<void> {
    const rt = this.#rt;
    const { dim, vocab } = this.config;
    const blocks = this.#cls.blocks;
    const widest = Math.max(...blocks.map((b) => b.weight.rows));
    // Rows per chunk: within the budget for one block, whole windows of nf/dnf (bind offsets).
    const align = rowAlignment(dim * 4);
    const fit = Math.floor(this.#logitsChunkBytes / (widest * 4));
    if (fit < 1) throw new RangeError(`a ${widest}-entry logits row exceeds the chunk budget`);
    const chunkRows = fit >= nf.size / dim ? nf.size / dim : Math.max(align, fit - (fit % align));
    const rows = nf.size / dim;
    const keepAll = chunkRows * vocab * 4 <= this.#logitsChunkBytes;
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const n = Math.min(chunkRows, rows - r0);
      const x = nf.rows(r0, n);
      const dx = dnf.rows(r0, n);
      const m = batch.scratch([n]);
      const s = batch.scratch([n]);
      const tl = batch.scratch([n]);
      const kept: GpuTensor[] = [];
      const blockLogits = async (b: number) => {
        const out = batch.scratch([n, blocks[b].weight.rows]);
        await frozenBlockMatmul(rt, batch, x, this.#cls, b, out);
        return out;
      };
      for (let b = 0; b < blocks.length; b++) {
        const logits = await blockLogits(b);
        const chunk = { logits, rows: n, width: blocks[b].weight.rows, v0: blocks[b].rowStart, r0 };
        await ceStats(rt, batch, { chunk, targets, m, s, tl }, b === 0);
        if (keepAll) kept.push(logits);
        else batch.recycle(logits);
      }
      await ceFinish(rt, batch, { rows: n, r0, targets, m, s, tl, loss });
      for (let b = 0; b < blocks.length; b++) {
        const logits = keepAll ? kept[b] : await blockLogits(b);
        const chunk = { logits, rows: n, width: blocks[b].weight.rows, v0: blocks[b].rowStart, r0 };
        await ceGrad(rt, batch, { chunk, targets, lse: m, count });
        await frozenBlockBackward(rt, batch, logits, this.#cls, b, dx, b === 0 ? 0 : 1);
        batch.recycle(logits);
      }
      for (const t of [m, s, tl]) batch.recycle(t);
    }
  }

  #dropTape(batch: Batch): void {
    if (!this.#tape) return;
    for (const l of this.#tape.layers) for (const t of Object.values(l)) batch.releaseAfter(t);
    for (const t of [this.#tape.final, this.#tape.nf, this.#tape.invf]) batch.releaseAfter(t);
    this.#tape = null;
  }

  /**
   * Masked cross-entropy of the last `forward(..., { keep: true })` and the backward into every
   * adapter's gradients. `targets` are i32 (−1 masked) in a u32 tensor; `count` is the number of
   * unmasked rows of the step (the loss is summed over micro-batches, so the caller gives the
   * step's total). Returns the per-row loss tensor (sum / count = mean loss).
   *
   * The classifier and the cross-entropy run in chunks of rows × one vocabulary block of the
   * stored classifier, within `logitsChunkBytes`: the online log-sum-exp over the blocks, then
   * each block's gradient through the classifier into dnf. When a chunk's logits over the whole
   * vocabulary fit, they are kept between the two passes; otherwise they are recomputed.
   */
  async lossAndBackward(
    batch: Batch,
    targets: GpuTensor,
    count: number,
  ): Promise<GpuTensor> {
    const rt = this.#rt;
    const c = this.config;
    const tape = this.#tape;
    if (!tape) throw new Error("lossAndBackward: run forward(..., { keep: true }) first");
    if (targets.size !== tape.rows) {
      throw new RangeError(`lossAndBackward: ${targets.size} targets for ${tape.rows} rows`);
    }
    const { rows, seq } = tape;
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
    const loss = rt.empty([rows]);
    const dnf = rt.empty([rows, dim]);
    await this.#classifierLoss(batch, tape.nf, dnf, targets, loss, count);
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
      ...this.#weights.values(),
    ];
    if (this.#cls !== this.#emb) ts.push(this.#cls);
    for (const t of ts) t.release();
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
