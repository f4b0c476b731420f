/**
 * The LLaMA model on the GPU: frozen base weights streamed from a checkpoint into row-blocked
 * storage (f32, bf16, f16, or 4-bit NF4/int4 through the fused kernels), adapters attached by
 * module, forward to logits where they are needed, and the backward from a masked cross-entropy
 * to every adapter parameter. Everything one step needs is recorded in one batch.
 *
 * Memory, at any scale:
 * - every temporary of a step is scratch of its batch, handed to later dispatches of the same
 *   batch at its last use (`batch.recycle`), so a forward holds a few layer-sized buffers;
 * - attention keeps no [seq, seq] matrix (`kernels/llama/attention.ts`);
 * - with activation checkpointing a training forward keeps only each block's input and the
 *   backward recomputes one block at a time (on by default when the whole tape would exceed
 *   {@link CHECKPOINT_ABOVE_BYTES});
 * - logits are never formed for a whole batch of a big vocabulary: training takes the loss in row
 *   and vocabulary chunks (`lossAndBackward`), scoring and generation ask for the positions they
 *   read (`forward(..., { logits: positions })`).
 *
 * The transformer block is written once (`#block`) for prefill, training and KV-cached decoding,
 * and its backward once (`#blockBackward`); `CpuLlama` (models/llama/cpu/model.ts) mirrors both
 * layer for layer and the tests hold the two together.
 */
import { attentionBackward, attentionForward } from "../../../kernels/llama/attention.ts";
import { ceFinish, ceGrad, ceStats } from "../../../kernels/llama/cross_entropy.ts";
import {
  addInto,
  attentionDecode,
  rmsnormBackward,
  rmsnormForward,
  rope,
  ropeDecode,
  ropeTables,
  swigluBackward,
  swigluForward,
} from "../../../kernels/llama/ops.ts";
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
import type {
  Adapter,
  GpuAdapterLayer,
  GpuLayerOptions,
  PassOptions,
} from "../../adapters/adapter.ts";
import type { AdapterConfig } from "../../adapters/registry.ts";
import type { LlamaWeights } from "../weights.ts";
import { TARGET_MODULES, type TargetModule } from "../../llama_shapes.ts";
import { TensorArena } from "../../../kernels/runtime/arena.ts";
import { hash32 } from "../../../kernels/cpu/random.ts";
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

/** What a block keeps for its backward. */
interface BlockTape {
  input: GpuTensor;
  n1: GpuTensor;
  inv1: GpuTensor;
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  attOut: GpuTensor;
  lse: GpuTensor;
  h1: GpuTensor;
  n2: GpuTensor;
  inv2: GpuTensor;
  g: GpuTensor;
  u: GpuTensor;
  act: GpuTensor;
}

/**
 * With "auto" checkpointing, a training forward keeps only each block's input when the whole tape
 * (every block's activations) would take more than this: 256 MiB.
 */
export const CHECKPOINT_ABOVE_BYTES = 256 * 2 ** 20;

/** Options of {@link GpuLlama.load}. */
export interface GpuLlamaOptions extends WeightLoadOptions {
  /**
   * Largest logits chunk of the training loss in bytes (default 64 MiB, or the device's binding
   * limit when smaller): rows × vocabulary-block floats computed at once.
   */
  logitsChunkBytes?: number;
  /**
   * Activation checkpointing of training forwards: `true`, `false`, or `"auto"` (default): on
   * when the tape of all blocks would exceed {@link CHECKPOINT_ABOVE_BYTES}.
   */
  checkpointing?: boolean | "auto";
}

/**
 * What {@link GpuLlama.forward} computes after the last block: all logits, none, the logits of
 * some rows, or — `{ targets }` — each row's cross-entropy against the targets (i32, −1 masked,
 * in a u32 tensor), without materialising the logits (held-out loss of a big vocabulary).
 */
export type LogitsRequest = "all" | "none" | readonly number[] | { targets: GpuTensor };

/** Options of {@link GpuLlama.forward}. */
export interface ForwardOptions {
  /** Keep what {@link GpuLlama.lossAndBackward} needs (a training forward; default false). */
  keep?: boolean;
  /** Fill this KV cache with the keys and values (a prefill). */
  cache?: KvCache;
  /** Logits to compute (default "all"). */
  logits?: LogitsRequest;
  /** Override the model's checkpointing setting for this forward. */
  checkpointing?: boolean;
  /** Seed of this step's dropout masks (training forwards); each module derives its own. */
  dropoutSeed?: number;
}

/** How a block's attention runs: over whole sequences, or one position against a KV cache. */
type Attend =
  | { kind: "sequence"; seq: number; cache?: KvCache }
  | { kind: "decode"; pos: number; cache: KvCache; scores: GpuTensor };

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
  readonly #checkpointing: boolean | "auto";
  #adapters = new Map<string, GpuAdapterLayer>();
  #trainables: Trainables | null = null;
  #tape: {
    batch: Batch;
    blocks: BlockTape[] | null; // null: checkpointed, `inputs` only
    inputs: GpuTensor[];
    final: GpuTensor;
    nf: GpuTensor;
    invf: GpuTensor;
    rows: number;
    seq: number;
    dropoutSeed: number;
  } | null = null;

  private constructor(
    rt: GpuRuntime,
    config: LlamaConfig,
    weights: LoadedWeights,
    options: GpuLlamaOptions,
  ) {
    this.#rt = rt;
    this.config = config;
    this.base = options.base ?? "f32";
    this.loadStats = weights.stats;
    this.#emb = weights.embed;
    this.#cls = weights.classifier;
    this.#finalNorm = weights.finalNorm;
    this.#norms = weights.norms;
    this.#weights = weights.linear;
    const limit = rt.device.limits.maxStorageBufferBindingSize;
    this.#logitsChunkBytes = Math.min(options.logitsChunkBytes ?? 64 * 2 ** 20, limit);
    this.#checkpointing = options.checkpointing ?? "auto";
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
    return new GpuLlama(rt, source.config, await loadWeights(rt, source, options), options);
  }

  /** {@link GpuLlama.load} from weights in host memory (a llama2.c checkpoint, a test model). */
  static create(
    rt: GpuRuntime,
    config: LlamaConfig,
    ckpt: LlamaWeights,
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

  /**
   * Attach adapters by key `${layer}.${module}`; replaces any attached before. Their trainable
   * parameters and gradients are packed into one {@link TensorArena} each (see
   * {@link GpuLlama.trainables}), so the optimizer touches every adapter in one dispatch per buffer;
   * `layerOptions` choose the adapters' kernels (e.g. `{ kernels: "matmul" }`).
   */
  async attach(
    adapters: Map<string, Adapter<AdapterConfig>>,
    layerOptions: Omit<GpuLayerOptions, "storage"> = {},
  ): Promise<void> {
    this.detach();
    for (const [key, a] of adapters) {
      const w = this.#weights.get(key);
      if (!w) throw new Error(`attach: no module "${key}" in a ${this.config.layers}-layer model`);
      const [dIn, dOut] = linearDims(this.config, key.split(".")[1] as TargetModule);
      if (a.dIn !== dIn || a.dOut !== dOut) {
        throw new Error(
          `attach: adapter for ${key} is ${a.dOut}×${a.dIn}, the module is ${dOut}×${dIn}`,
        );
      }
    }
    const names = [...adapters].map(([key, a]) => ({
      key,
      specs: a.specs().filter((s) => s.trainable),
    }));
    const groups = names.map((n) => n.specs.map((s) => s.shape));
    const params = new TensorArena(this.#rt, groups);
    const grads = new TensorArena(this.#rt, groups);
    this.#trainables = {
      params,
      grads,
      names: names.map((n) => ({ key: n.key, names: n.specs.map((s) => s.name) })),
    };
    for (const [g, [key, a]] of [...adapters].entries()) {
      const w = this.#weights.get(key)!;
      const storage = {
        params: Object.fromEntries(names[g].specs.map((s, i) => [s.name, params.groups[g][i]])),
        grads: Object.fromEntries(names[g].specs.map((s, i) => [s.name, grads.groups[g][i]])),
      };
      this.#adapters.set(key, await a.toGpu(this.#rt, w, { ...layerOptions, storage }));
    }
  }

  /**
   * The attached adapters' trainable parameters and gradients, packed: group g is adapter
   * `names[g].key`, its tensors in `names[g].names` order (null when none are attached).
   */
  get trainables(): Trainables | null {
    return this.#trainables;
  }

  /** The attached GPU adapter layers. */
  get adapters(): ReadonlyMap<string, GpuAdapterLayer> {
    return this.#adapters;
  }

  /** Free the attached adapters. */
  detach(): void {
    for (const a of this.#adapters.values()) a.release();
    this.#adapters.clear();
    this.#trainables?.params.release();
    this.#trainables?.grads.release();
    this.#trainables = null;
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

  /**
   * Bytes a training forward keeps per block without checkpointing (input, norms, q/k/v, the
   * attention output and its log-sum-exps, the MLP's three hidden-width activations).
   */
  tapeBytesPerBlock(rows: number, seq: number): number {
    const c = this.config;
    const floats = 6 * c.dim + 2 * kvDim(c) + 3 * c.hiddenDim + 2 + (c.heads * (rows / seq)) / rows;
    return Math.ceil(rows * floats) * 4;
  }

  /** Whether a training forward of `rows` tokens checkpoints (the option, or "auto"'s rule). */
  checkpoints(rows: number, seq: number): boolean {
    if (this.#checkpointing !== "auto") return this.#checkpointing;
    return this.config.layers * this.tapeBytesPerBlock(rows, seq) > CHECKPOINT_ABOVE_BYTES;
  }

  /** Dropout options of one module's adapter in a training pass (its own mask seed). */
  #pass(key: string, keep: boolean, dropoutSeed?: number): PassOptions {
    if (dropoutSeed === undefined) return { keep };
    const [l, m] = key.split(".");
    const salt = Number(l) * 8 + TARGET_MODULES.indexOf(m as TargetModule);
    return { keep, train: true, dropoutSeed: hash32((dropoutSeed ^ salt) >>> 0) };
  }

  /**
   * y = x·Wᵀ (+ the adapter) of module `key`: a new scratch tensor, or added into `into` (the
   * residual stream, updated in place). Where the adapter offers an epilogue it rides in the
   * base product's dispatch.
   */
  async #linear(
    batch: Batch,
    key: string,
    x: GpuTensor,
    rows: number,
    dOut: number,
    pass: PassOptions,
    into?: GpuTensor,
  ): Promise<GpuTensor> {
    const weight = this.#weights.get(key)!;
    const adapter = this.#adapters.get(key);
    if (into && adapter && !adapter.additive) {
      // The adapter rescales its base output: give it one of its own, then add.
      const y = await this.#linear(batch, key, x, rows, dOut, pass);
      await addInto(this.#rt, batch, { dst: into, src: y });
      batch.recycle(y);
      return into;
    }
    const y = into ?? batch.scratch([rows, dOut]);
    const epilogue = weight.takesEpilogue
      ? adapter?.epilogue?.(rows, pass) ?? undefined
      : undefined;
    await frozenMatmul(this.#rt, batch, x, weight, { out: y, beta: into ? 1 : 0, epilogue });
    if (!epilogue) await adapter?.forward(batch, x, y, rows, pass);
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
    const a = this.#adapters.get(key);
    const target = accumulate ? batch.scratch(dx.shape) : dx;
    let dyBase = dy;
    let beta = 0;
    if (a) {
      dyBase = await a.backward(batch, x, dy, target, rows);
      beta = 1;
    }
    await frozenMatmulBackward(rt, batch, dyBase, this.#weights.get(key)!, { out: target, beta });
    if (accumulate) {
      await addInto(rt, batch, { dst: dx, src: target });
      batch.recycle(target);
    }
  }

  /**
   * One transformer block on h [rows, dim] → h'. With `inPlace` (no tape: nothing else holds h)
   * the residual sums go into h itself and h' is h; otherwise h' is a new scratch tensor and h
   * is left alone. With `keep`, what the backward needs is returned and kept; otherwise every
   * temporary is recycled at its last use. Attention runs over whole sequences (prefill,
   * training; filling a cache when given) or one position per slot against a KV cache (decoding).
   */
  async #block(
    batch: Batch,
    l: number,
    h: GpuTensor,
    rows: number,
    attend: Attend,
    keep: boolean,
    inPlace: boolean,
    dropoutSeed?: number,
  ): Promise<{ out: GpuTensor; tape: BlockTape | null }> {
    if (inPlace && keep) throw new Error("block: a kept input cannot be updated in place");
    const rt = this.#rt;
    const c = this.config;
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const key = (m: TargetModule) => adapterKey(l, m);
    const pass = (m: TargetModule) => this.#pass(key(m), keep, dropoutSeed);
    const done = (...ts: GpuTensor[]) => {
      if (!keep) { for (const t of ts) batch.recycle(t); }
    };
    const n1 = batch.scratch([rows, dim]);
    const inv1 = batch.scratch([rows]);
    await rmsnormForward(rt, batch, {
      y: n1,
      inv: inv1,
      x: h,
      w: this.#norms[l].attn,
      eps: c.normEps,
    });
    const q = await this.#linear(batch, key("q"), n1, rows, dim, pass("q"));
    const k = await this.#linear(batch, key("k"), n1, rows, kvDim(c), pass("k"));
    const v = await this.#linear(batch, key("v"), n1, rows, kvDim(c), pass("v"));
    done(n1, inv1);
    const seq = attend.kind === "sequence" ? attend.seq : 1;
    const offset = attend.kind === "sequence" ? 0 : attend.pos;
    const r = { cos: this.#cos, sin: this.#sin, headSize: hs, seq, offset, layout: c.ropeLayout };
    if (attend.kind === "sequence") {
      await rope(rt, batch, { x: q, heads: c.heads, ...r });
      await rope(rt, batch, { x: k, heads: c.kvHeads, ...r });
    }
    const attOut = batch.scratch([rows, dim]);
    let lse: GpuTensor | null = null;
    if (attend.kind === "sequence") {
      attend.cache?.fill(batch, l, k, v, seq);
      lse = batch.scratch([rows / seq, c.heads, seq]);
      const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
      await attentionForward(rt, batch, { out: attOut, lse, q, k, v, dims });
    } else {
      // The cache of layer l at this step, as both decode kernels see it.
      const { cache } = attend;
      const step = {
        kc: cache.k[l],
        vc: cache.v[l],
        heads: c.heads,
        kvHeads: c.kvHeads,
        headSize: hs,
        pos: attend.pos,
        maxSeq: cache.maxSeq,
        offsets: cache.offsets,
      };
      // RoPE of q and k and the cache write of k and v in one dispatch.
      await ropeDecode(rt, batch, {
        ...step,
        q,
        k,
        v,
        cos: this.#cos,
        sin: this.#sin,
        layout: c.ropeLayout,
      });
      await attentionDecode(rt, batch, {
        ...step,
        out: attOut,
        scores: attend.scores,
        q,
        table: cache.table,
      });
    }
    done(q, k, v);
    if (lse) done(lse);
    // h1 = h + o(...): in place when nothing keeps h (inference), else a new tensor.
    let h1: GpuTensor;
    if (inPlace) h1 = await this.#linear(batch, key("o"), attOut, rows, dim, pass("o"), h);
    else {
      h1 = await this.#linear(batch, key("o"), attOut, rows, dim, pass("o"));
      await addInto(rt, batch, { dst: h1, src: h });
    }
    done(attOut);
    const n2 = batch.scratch([rows, dim]);
    const inv2 = batch.scratch([rows]);
    await rmsnormForward(rt, batch, {
      y: n2,
      inv: inv2,
      x: h1,
      w: this.#norms[l].ffn,
      eps: c.normEps,
    });
    const g = await this.#linear(batch, key("gate"), n2, rows, hiddenDim, pass("gate"));
    const u = await this.#linear(batch, key("up"), n2, rows, hiddenDim, pass("up"));
    done(n2, inv2);
    const act = batch.scratch([rows, hiddenDim]);
    await swigluForward(rt, batch, { h: act, a: g, b: u });
    done(g, u);
    // h2 = h1 + down(...), in place as above. (Not otherwise: a checkpointed forward must round
    // as its recomputation with the tape does.)
    let out: GpuTensor;
    if (inPlace) out = await this.#linear(batch, key("down"), act, rows, dim, pass("down"), h1);
    else {
      out = await this.#linear(batch, key("down"), act, rows, dim, pass("down"));
      await addInto(rt, batch, { dst: out, src: h1 });
      done(h1);
    }
    done(act);
    const tape = keep
      ? { input: h, n1, inv1, q, k, v, attOut, lse: lse!, h1, n2, inv2, g, u, act }
      : null;
    return { out, tape };
  }

  /**
   * The backward of one block: dh (∂L/∂ block output) becomes ∂L/∂ block input in place, every
   * adapter of the block gets its gradients, and the tape and temporaries are recycled.
   */
  async #blockBackward(batch: Batch, l: number, s: BlockTape, dh: GpuTensor, seq: number) {
    const rt = this.#rt;
    const c = this.config;
    const { dim, hiddenDim } = c;
    const hs = headSize(c);
    const rows = dh.size / dim;
    const key = (m: TargetModule) => adapterKey(l, m);
    const done = (...ts: GpuTensor[]) => {
      for (const t of ts) batch.recycle(t);
    };
    // MLP: h2 = h1 + down(swiglu(gate(n2), up(n2)))
    const dact = batch.scratch([rows, hiddenDim]);
    await this.#linearBackward(batch, key("down"), s.act, dh, dact, rows, false);
    done(s.act);
    const dg = batch.scratch([rows, hiddenDim]);
    const du = batch.scratch([rows, hiddenDim]);
    await swigluBackward(rt, batch, { da: dg, db: du, a: s.g, b: s.u, dh: dact });
    done(dact, s.g, s.u);
    const dn2 = batch.scratch([rows, dim]);
    await this.#linearBackward(batch, key("gate"), s.n2, dg, dn2, rows, false);
    await this.#linearBackward(batch, key("up"), s.n2, du, dn2, rows, true);
    done(dg, du, s.n2);
    // The residual path: dh1 = dh + rmsnorm'(dn2), accumulated in place.
    await rmsnormBackward(rt, batch, {
      dx: dh,
      x: s.h1,
      w: this.#norms[l].ffn,
      inv: s.inv2,
      dy: dn2,
      accumulate: true,
    });
    done(dn2, s.h1, s.inv2);
    // Attention: h1 = h + o(attn(rope(q), rope(k), v))
    const dattOut = batch.scratch([rows, dim]);
    await this.#linearBackward(batch, key("o"), s.attOut, dh, dattOut, rows, false);
    const dq = batch.scratch(s.q.shape);
    const dk = batch.scratch(s.k.shape);
    const dv = batch.scratch(s.v.shape);
    const dd = batch.scratch(s.lse.shape);
    const dims = { seq, heads: c.heads, kvHeads: c.kvHeads, headSize: hs };
    await attentionBackward(rt, batch, {
      dq,
      dk,
      dv,
      dd,
      q: s.q,
      k: s.k,
      v: s.v,
      out: s.attOut,
      lse: s.lse,
      dout: dattOut,
      dims,
    });
    done(dattOut, dd, s.attOut, s.lse, s.q, s.k, s.v);
    const r = {
      cos: this.#cos,
      sin: this.#sin,
      headSize: hs,
      seq,
      inverse: true,
      layout: c.ropeLayout,
    };
    await rope(rt, batch, { x: dq, heads: c.heads, ...r });
    await rope(rt, batch, { x: dk, heads: c.kvHeads, ...r });
    const dn1 = batch.scratch([rows, dim]);
    await this.#linearBackward(batch, key("q"), s.n1, dq, dn1, rows, false);
    await this.#linearBackward(batch, key("k"), s.n1, dk, dn1, rows, true);
    await this.#linearBackward(batch, key("v"), s.n1, dv, dn1, rows, true);
    done(dq, dk, dv, s.n1);
    await rmsnormBackward(rt, batch, {
      dx: dh,
      x: s.input,
      w: this.#norms[l].attn,
      inv: s.inv1,
      dy: dn1,
      accumulate: true,
    });
    done(dn1, s.inv1, s.input);
  }

  /**
   * The forward pass over `ids` (u32 [sequences·seq], each sequence `seq` long). `logits` says
   * which logits to compute: `"all"` [sequences·seq, vocab] (small models only: the tensor must
   * fit one buffer), `"none"` (training: the loss comes from {@link lossAndBackward}), or a list
   * of row indices → [positions, vocab] (scoring, the last token of each prompt). With `keep`, the
   * activations stay (or, checkpointed, each block's input) for `lossAndBackward` in the same
   * batch; with `cache`, the keys and values fill it (a prefill).
   */
  async forward(
    batch: Batch,
    ids: GpuTensor,
    seq: number,
    options: ForwardOptions = {},
  ): Promise<GpuTensor | null> {
    const rt = this.#rt;
    const c = this.config;
    const rows = ids.size;
    if (rows % seq !== 0 || seq > c.seqLen) {
      throw new RangeError(
        `forward: ${rows} ids are not whole sequences of ${seq} (max ${c.seqLen})`,
      );
    }
    const keep = options.keep ?? false;
    const checkpointed = keep && (options.checkpointing ?? this.checkpoints(rows, seq));
    this.#dropTape();
    let h = batch.scratch([rows, c.dim]);
    await frozenGather(rt, batch, ids, this.#emb, h);
    const blocks: BlockTape[] = [];
    const inputs: GpuTensor[] = [];
    const attend: Attend = { kind: "sequence", seq, cache: options.cache };
    for (let l = 0; l < c.layers; l++) {
      const keepBlock = keep && !checkpointed;
      const { out, tape } = await this.#block(
        batch,
        l,
        h,
        rows,
        attend,
        keepBlock,
        !keep, // checkpoints keep each block's input
        keep ? options.dropoutSeed : undefined,
      );
      if (tape) blocks.push(tape); // holds h as its input
      else if (checkpointed) inputs.push(h);
      h = out;
    }
    const { nf, invf } = await this.#finalNormForward(batch, h, rows);
    const request = options.logits ?? "all";
    let logits: GpuTensor | null;
    if (typeof request === "object" && "targets" in request) {
      if (request.targets.size !== rows) {
        throw new RangeError(`forward: ${request.targets.size} targets for ${rows} rows`);
      }
      logits = rt.empty([rows]);
      await this.#classifierLoss(batch, nf, null, request.targets, logits, 1);
    } else logits = await this.#logits(batch, nf, rows, request);
    if (keep) {
      this.#tape = {
        batch,
        blocks: checkpointed ? null : blocks,
        inputs,
        final: h,
        nf,
        invf,
        rows,
        seq,
        dropoutSeed: options.dropoutSeed ?? 0,
      };
    } else for (const t of [h, nf, invf]) batch.recycle(t);
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
   * One decoding step: `ids` (u32 [slots]) are the tokens at position `pos` of every slot (plus
   * the slot's {@link KvCache.setOffsets offset}: sequences of different lengths decode
   * together); their keys/values go into the cache, the logits [slots, vocab] come back
   * (inference only), in `out` when given (GPU-resident generation reuses one tensor for every
   * step). Slots whose position is past the cache are skipped (their logits are meaningless).
   */
  async decode(
    batch: Batch,
    ids: GpuTensor,
    pos: number,
    cache: KvCache,
    out?: GpuTensor,
  ): Promise<GpuTensor> {
    const rt = this.#rt;
    const c = this.config;
    const rows = ids.size;
    if (rows !== cache.slots || pos + cache.minOffset >= cache.maxSeq) {
      throw new RangeError(
        `decode: ${rows} ids for ${cache.slots} slots, position ${pos} of ${cache.maxSeq}`,
      );
    }
    this.#dropTape();
    let h = batch.scratch([rows, c.dim]);
    await frozenGather(rt, batch, ids, this.#emb, h);
    const scores = batch.scratch([rows, c.heads, cache.maxSeq]);
    const attend: Attend = { kind: "decode", pos, cache, scores };
    for (let l = 0; l < c.layers; l++) {
      h = (await this.#block(batch, l, h, rows, attend, false, true)).out;
    }
    batch.recycle(scores);
    const { nf, invf } = await this.#finalNormForward(batch, h, rows);
    if (out && out.size !== rows * c.vocab) {
      throw new RangeError("decode: out is not [slots, vocab]");
    }
    const logits = out
      ? await frozenMatmul(rt, batch, nf, this.#cls, { out })
      : (await this.#logits(batch, nf, rows, "all"))!;
    for (const t of [h, nf, invf]) batch.recycle(t);
    return logits;
  }

  /** Final RMSNorm: nf [rows, dim] and 1/rms (scratch of the batch). */
  async #finalNormForward(batch: Batch, h: GpuTensor, rows: number) {
    const c = this.config;
    const nf = batch.scratch([rows, c.dim]);
    const invf = batch.scratch([rows]);
    await rmsnormForward(this.#rt, batch, {
      y: nf,
      inv: invf,
      x: h,
      w: this.#finalNorm,
      eps: c.normEps,
    });
    return { nf, invf };
  }

  /** The classifier on all rows of nf, on some of them, or on none (a new tensor, or null). */
  async #logits(
    batch: Batch,
    nf: GpuTensor,
    rows: number,
    request: "all" | "none" | readonly number[],
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
    const picked = batch.scratch([request.length, dim]);
    request.forEach((r, i) => {
      if (!Number.isInteger(r) || r < 0 || r >= rows) {
        throw new RangeError(`forward: logits of row ${r} of ${rows}`);
      }
      batch.copy(nf.buffer, nf.byteOffset + r * dim * 4, picked.buffer, i * dim * 4, dim * 4);
    });
    const logits = await frozenMatmul(rt, batch, picked, this.#cls);
    batch.recycle(picked);
    return logits;
  }

  /**
   * Masked cross-entropy of the last `forward(..., { keep: true })` — recorded in the same batch —
   * and the backward into every adapter's gradients. `targets` are i32 (−1 masked) in a u32
   * tensor; `count` is the number of unmasked rows of the step (the loss is summed over
   * micro-batches, so the caller gives the step's total). Returns the per-row loss tensor
   * (sum / count = mean loss).
   *
   * The classifier and the cross-entropy run in chunks of rows × one vocabulary block of the
   * stored classifier, within `logitsChunkBytes`: the online log-sum-exp over the blocks, then
   * each block's gradient through the classifier into dnf. When a chunk's logits over the whole
   * vocabulary fit, they are kept between the two passes; otherwise they are recomputed. Blocks
   * then run backward from the last; a checkpointed forward recomputes each block first.
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
    if (tape.batch !== batch) {
      throw new Error(
        "lossAndBackward: record it in the batch of its forward(..., { keep: true })",
      );
    }
    if (targets.size !== tape.rows) {
      throw new RangeError(`lossAndBackward: ${targets.size} targets for ${tape.rows} rows`);
    }
    this.#tape = null;
    const { rows, seq } = tape;
    const loss = rt.empty([rows]);
    const dnf = batch.scratch([rows, c.dim]);
    await this.#classifierLoss(batch, tape.nf, dnf, targets, loss, count);
    const dh = batch.scratch([rows, c.dim]);
    await rmsnormBackward(rt, batch, {
      dx: dh,
      x: tape.final,
      w: this.#finalNorm,
      inv: tape.invf,
      dy: dnf,
      accumulate: false,
    });
    for (const t of [dnf, tape.final, tape.nf, tape.invf]) batch.recycle(t);
    const attend: Attend = { kind: "sequence", seq };
    for (let l = c.layers - 1; l >= 0; l--) {
      let block: BlockTape;
      if (tape.blocks) block = tape.blocks[l];
      else { // checkpointed: recompute the block from its input, keeping its tape this time
        const again = await this.#block(
          batch,
          l,
          tape.inputs[l],
          rows,
          attend,
          true,
          false,
          tape.dropoutSeed,
        );
        batch.recycle(again.out); // its gradient is dh already
        block = again.tape!;
      }
      await this.#blockBackward(batch, l, block, dh, seq);
    }
    batch.recycle(dh);
    return loss;
  }

  /**
   * loss[r] and dnf = ∂L/∂nf of the classifier and the cross-entropy, in chunks (see above); with
   * `dnf` null the loss only.
   */
  async #classifierLoss(
    batch: Batch,
    nf: GpuTensor,
    dnf: GpuTensor | null,
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
    const keepAll = dnf !== null && chunkRows * vocab * 4 <= this.#logitsChunkBytes;
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const n = Math.min(chunkRows, rows - r0);
      const x = nf.rows(r0, n);
      const dx = dnf?.rows(r0, n);
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
      for (let b = 0; dx && b < blocks.length; b++) {
        const logits = keepAll ? kept[b] : await blockLogits(b);
        const chunk = { logits, rows: n, width: blocks[b].weight.rows, v0: blocks[b].rowStart, r0 };
        await ceGrad(rt, batch, { chunk, targets, lse: m, count });
        await frozenBlockBackward(rt, batch, logits, this.#cls, b, dx, b === 0 ? 0 : 1);
        batch.recycle(logits);
      }
      for (const t of [m, s, tl]) batch.recycle(t);
    }
  }

  /** Forget the tape of an earlier forward (its buffers belong to that forward's batch). */
  #dropTape(): void {
    this.#tape = null;
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

/** Packed trainable parameters and gradients of the attached adapters. */
export interface Trainables {
  /** Parameters, one group per adapter. */
  params: TensorArena;
  /** Gradients, the same layout. */
  grads: TensorArena;
  /** Per group: the adapter key and its tensors' names. */
  names: { key: string; names: string[] }[];
}

/**
 * Keys and values of every layer for `slots` sequences: k[l], v[l] are [slots, maxSeq, kvDim],
 * and a slot table (u32 [slots, maxSeq]): position u of sequence s is row u of slot table[s, u].
 * Host-driven beam search reorders slots with {@link KvCache.reorder} (copies from a parent slot;
 * the table stays the identity); GPU-resident beam search rewrites the table instead
 * (`beamSelect` writes {@link KvCache.tableNext}, then {@link KvCache.swapTables}), so sequences
 * share their common prefix and no row is ever copied.
 */
export class KvCache {
  /** Keys per layer. */
  k: GpuTensor[];
  /** Values per layer. */
  v: GpuTensor[];
  /** The slot table attention reads. */
  table: GpuTensor;
  /** The slot table a GPU beam step writes. */
  tableNext: GpuTensor;
  /** u32 [slots]: slot s decodes position pos + offsets[s] (zeros unless set). */
  readonly offsets: GpuTensor;
  /** The smallest offset. */
  minOffset = 0;
  /** Sequences held. */
  readonly slots: number;
  /** Positions per sequence. */
  readonly maxSeq: number;
  readonly #rt: GpuRuntime;
  readonly #width: number;

  /** Bytes of one layer's keys (or values): what must fit one storage binding. */
  static layerBytes(slots: number, maxSeq: number, width: number): number {
    return slots * maxSeq * width * 4;
  }

  /** Allocate (contents undefined until written). */
  constructor(rt: GpuRuntime, layers: number, slots: number, maxSeq: number, width: number) {
    const bytes = KvCache.layerBytes(slots, maxSeq, width);
    if (bytes > rt.device.limits.maxStorageBufferBindingSize) {
      throw new RangeError(
        `a KV cache of ${slots} slots × ${maxSeq} positions × ${width} needs ${bytes} bytes per ` +
          `layer, over this device's binding limit: use fewer beams or fewer new tokens`,
      );
    }
    this.#rt = rt;
    this.slots = slots;
    this.maxSeq = maxSeq;
    this.#width = width;
    this.k = Array.from({ length: layers }, () => rt.empty([slots, maxSeq, width]));
    this.v = Array.from({ length: layers }, () => rt.empty([slots, maxSeq, width]));
    const identity = Uint32Array.from({ length: slots * maxSeq }, (_, i) => Math.floor(i / maxSeq));
    this.table = rt.upload(identity, [slots, maxSeq], "u32");
    this.tableNext = rt.upload(identity, [slots, maxSeq], "u32");
    this.offsets = rt.upload(new Uint32Array(slots), [slots], "u32");
  }

  /**
   * Per-slot position offsets: a decoding step at `pos` puts slot s at pos + offsets[s], so
   * prompts of different lengths decode in one batch (offsets = their lengths, pos = the step).
   */
  setOffsets(offsets: number[]): void {
    if (offsets.length !== this.slots || offsets.some((o) => !(o >= 0 && Number.isInteger(o)))) {
      throw new RangeError(`setOffsets: ${offsets.length} offsets for ${this.slots} slots`);
    }
    this.#rt.write(this.offsets, Uint32Array.from(offsets));
    let min = Infinity;
    for (const o of offsets) min = Math.min(min, o); // one per slot: no spread
    this.minOffset = min;
  }

  /** Make the table a beam step wrote the one attention reads (recorded order decides). */
  swapTables(): void {
    [this.table, this.tableNext] = [this.tableNext, this.table];
  }

  /**
   * Copy the k/v [n, seq, width] of n prefilled sequences into positions [0, seq) of the slots:
   * sequence i fills slots [i·slots/n, (i+1)·slots/n) (one sequence: every slot; n questions of
   * B beams: each question's beams).
   */
  fill(batch: Batch, layer: number, k: GpuTensor, v: GpuTensor, seq: number): void {
    const bytes = seq * this.#width * 4;
    const n = k.size / (seq * this.#width);
    if (!Number.isInteger(n) || this.slots % n !== 0 || seq > this.maxSeq) {
      throw new RangeError(`fill: ${n} sequences of ${seq} for ${this.slots} slots`);
    }
    for (let s = 0; s < this.slots; s++) {
      const from = Math.floor(s / (this.slots / n)) * bytes;
      const at = s * this.maxSeq * this.#width * 4;
      batch.copy(k.buffer, k.byteOffset + from, this.k[layer].buffer, at, bytes);
      batch.copy(v.buffer, v.byteOffset + from, this.v[layer].buffer, at, bytes);
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
    for (const t of [...this.k, ...this.v, this.table, this.tableNext, this.offsets]) t.release();
  }
}
