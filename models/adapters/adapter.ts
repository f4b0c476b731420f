/**
 * What every adapter provides, PEFT-style: a zod-validated config, parameters with seeded init,
 * a float64 CPU reference (forward, backward, merge) that is the oracle for the GPU layer and for
 * finite-difference checks, and a GPU layer that records its kernels into a caller's batch.
 *
 * Layer convention (as `nn.Linear`): the frozen base weight W is [dOut, dIn] row-major, tokens are
 * rows, y = x·Wᵀ. An adapter turns the base output into the adapted output; for additive adapters
 * (LoRA, KronA, LoKr, MoKA) that is y + x·ΔWᵀ, for DoRA a rescaling as well.
 */
import type { KronGpuOptions } from "./kron_gpu.ts";
import type { FrozenMatrix } from "../../kernels/quant/frozen.ts";
import type { Batch } from "../../kernels/runtime/batch.ts";
import type { ProductEpilogue } from "../../kernels/runtime/epilogue.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../kernels/runtime/tensor.ts";
import { TensorArena } from "../../kernels/runtime/arena.ts";

/** Parameters by name, f32 as they live on the GPU and in files. */
export type Params = Record<string, Float32Array>;
/** Parameters by name in float64, for the CPU reference and finite differences. */
export type F64Params = Record<string, Float64Array>;

/** Run-time options of a GPU adapter layer: memory/speed trade-offs that leave results unchanged. */
export type GpuLayerOptions = KronGpuOptions & {
  /**
   * Where the trainable parameters and their gradients live (views of a model-wide
   * `TensorArena`, so the optimizer updates every adapter in one dispatch per buffer); without
   * it the layer packs its own into one buffer each.
   */
  storage?: ParamStorage;
};

/** Pre-made GPU tensors for an adapter's trainable parameters and gradients, by spec name. */
export interface ParamStorage {
  /** Trainable parameters (written with the adapter's values on upload). */
  params: Record<string, GpuTensor>;
  /** Their gradients. */
  grads: Record<string, GpuTensor>;
}

// Arenas a layer packed for itself, freed with the layer.
const ownArenas = new WeakMap<Record<string, GpuTensor>, TensorArena[]>();

/** Name, shape and role of one parameter tensor. */
export interface ParamSpec {
  /** Name in the safetensors file and in `params`. */
  name: string;
  /** Row-major shape. */
  shape: number[];
  /** False for tensors that are saved but not trained (a frozen gate). */
  trainable: boolean;
}

/** Per-call options of a training forward pass. */
export interface PassOptions {
  /** Training mode: dropout is applied (default false: inference). */
  train?: boolean;
  /** Seed of the dropout mask for this step (the backward pass reuses the forward's). */
  dropoutSeed?: number;
  /**
   * Keep what the backward needs (default true). False when no backward follows this forward
   * (inference, or a checkpointed forward that will be recomputed).
   */
  keep?: boolean;
}

/** Result of the CPU backward pass. */
export interface CpuGradients {
  /** ∂L/∂x including the frozen base layer's part, [tokens, dIn]. */
  dx: Float64Array;
  /** ∂L/∂p for every trainable parameter. */
  grads: F64Params;
}

/**
 * The float64 reference of an adapter, as pure functions of (params, W, x). Tests check the GPU
 * layer against it and it against central finite differences.
 */
export interface AdapterMath {
  /** Adapted output [tokens, dOut] of the layer with frozen weight `w`. */
  forward(
    p: F64Params,
    w: Float64Array,
    x: Float64Array,
    tokens: number,
    pass?: PassOptions,
  ): Float64Array;
  /** Gradients of L = ⟨dy, forward(...)⟩. */
  backward(
    p: F64Params,
    w: Float64Array,
    x: Float64Array,
    tokens: number,
    dy: Float64Array,
    pass?: PassOptions,
  ): CpuGradients;
  /** The merged weight W' with x·W'ᵀ = forward(x) in inference mode. */
  merged(p: F64Params, w: Float64Array): Float64Array;
}

/**
 * The adapter on the GPU. Forward and backward only record into `batch`; the caller submits.
 * State the backward needs (activations of the forward) is kept inside until the next forward.
 */
export interface GpuAdapterLayer {
  /** Parameters on the GPU (trainable and frozen). */
  readonly params: Record<string, GpuTensor>;
  /** Gradients of the trainable parameters, overwritten by each backward. */
  readonly grads: Record<string, GpuTensor>;
  /**
   * Whether `forward` only adds x·ΔWᵀ to y (LoRA, KronA, LoKr, MoKA), so y may hold more than
   * the base output on entry (a residual sum); false where it rescales y (DoRA).
   */
  readonly additive: boolean;
  /** y holds the base output x·Wᵀ on entry and the adapted output on exit. */
  forward(
    batch: Batch,
    x: GpuTensor,
    y: GpuTensor,
    tokens: number,
    pass?: PassOptions,
  ): Promise<void>;
  /**
   * The forward of `tokens` rows as a product epilogue, for the base layer's frozen-weight
   * product to add in its own dispatch (then `forward` is not called); null, or absent, when
   * the adapter runs its own forward for this call. Only where the forward keeps nothing for
   * the backward and the result is the same.
   */
  epilogue?(tokens: number, pass?: PassOptions): ProductEpilogue | null;
  /**
   * Overwrites dx with the adapter's part of ∂L/∂x and fills `grads`. Returns the output gradient
   * the frozen base layer must propagate (dy itself, except for DoRA's rescaling); the caller
   * then adds that·W into dx.
   */
  backward(
    batch: Batch,
    x: GpuTensor,
    dy: GpuTensor,
    dx: GpuTensor,
    tokens: number,
  ): Promise<GpuTensor>;
  /** Copy the parameters back to the host. */
  download(): Promise<Params>;
  /** Overwrite the GPU parameters from host values (e.g. after loading a checkpoint). */
  upload(params: Params): void;
  /** Free every GPU buffer. */
  release(): void;
}

/**
 * The row norms ‖W_r‖ of a frozen weight: all DoRA's init needs of it, computed where the weight
 * lives (on the GPU, from its stored format) instead of from a host copy.
 */
export interface BaseRowNorms {
  /** ‖W_r‖₂ per output row, [dOut]. */
  rowNorms: Float32Array;
}

/** How an adapter gets its first parameter values. */
export type AdapterStart =
  | { seed: number; weight?: Float32Array | BaseRowNorms }
  | { params: Params; source?: string };

/** Base of every adapter: config, shapes, parameters and the shared plumbing. */
export abstract class Adapter<C extends { kind: string }> {
  /** Validated configuration. */
  readonly config: C;
  /** Input features of the adapted linear layer. */
  readonly dIn: number;
  /** Output features of the adapted linear layer. */
  readonly dOut: number;
  /** Current parameter values (f32), by spec name. */
  params: Params;

  /**
   * Build with freshly initialised parameters (`{ seed }`; DoRA also needs the base `weight`) or
   * with given ones (`{ params }`, checked against `specs()`, e.g. from a file).
   */
  constructor(config: C, dIn: number, dOut: number, start: AdapterStart) {
    for (const [k, v] of [["dIn", dIn], ["dOut", dOut]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${config.kind}: ${k}=${v}`);
    }
    this.config = config;
    this.dIn = dIn;
    this.dOut = dOut;
    this.params = {};
    if ("params" in start) this.setParams(start.params, start.source);
    else this.params = this.init(start.seed, start.weight);
  }

  /** The parameter tensors this adapter has on a dIn → dOut layer. */
  abstract specs(): ParamSpec[];
  /** Fresh parameters, ΔW = 0 (seeded); `weight` is the frozen W or its row norms (DoRA). */
  abstract init(seed: number, weight?: Float32Array | BaseRowNorms): Params;
  /** The float64 reference. */
  abstract readonly math: AdapterMath;
  /**
   * Upload to the GPU; `weight` is the frozen base [dOut, dIn] in its stored format, for adapters
   * that read it (DoRA); `options` trade memory for speed where an adapter has such a choice
   * (Kronecker adapters).
   */
  abstract toGpu(
    rt: GpuRuntime,
    weight?: FrozenMatrix,
    options?: GpuLayerOptions,
  ): Promise<GpuAdapterLayer>;

  /** Number of trainable scalars (what papers report as "trainable parameters"). */
  trainableParams(): number {
    return this.specs().filter((s) => s.trainable).reduce((n, s) => n + numel(s.shape), 0);
  }

  /** Parameters as float64 copies. */
  paramsF64(): F64Params {
    return Object.fromEntries(
      Object.entries(this.params).map(([k, v]) => [k, Float64Array.from(v)]),
    );
  }

  /** W' = merge of the adapter into the base weight [dOut, dIn], for deployment. */
  merge(weight: Float32Array): Float32Array {
    checkLength(`${this.config.kind}.merge weight`, weight.length, this.dOut * this.dIn);
    return Float32Array.from(this.math.merged(this.paramsF64(), Float64Array.from(weight)));
  }

  /** Replace all parameters, checking names and sizes against `specs()`. */
  setParams(params: Params, source = "params"): void {
    const specs = this.specs();
    for (const s of specs) {
      const v = params[s.name];
      if (!v) throw new Error(`${source}: missing tensor "${s.name}" for ${this.config.kind}`);
      checkLength(`${source}: tensor "${s.name}"`, v.length, numel(s.shape));
    }
    const extra = Object.keys(params).filter((k) => !specs.some((s) => s.name === k));
    if (extra.length) throw new Error(`${source}: unexpected tensors ${extra.join(", ")}`);
    this.params = Object.fromEntries(specs.map((s) => [s.name, Float32Array.from(params[s.name])]));
  }
}

/** Product of a shape's dimensions. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Throw a RangeError naming `what` when a length is wrong. */
export function checkLength(what: string, got: number, want: number): void {
  if (got !== want) throw new RangeError(`${what} has ${got} elements, expected ${want}`);
}

/** Upload every spec'd parameter and allocate gradients for the trainable ones. */
export function uploadParams(
  rt: GpuRuntime,
  specs: ParamSpec[],
  params: Params,
  storage?: ParamStorage,
): { params: Record<string, GpuTensor>; grads: Record<string, GpuTensor> } {
  const gpuParams: Record<string, GpuTensor> = {};
  const grads: Record<string, GpuTensor> = {};
  const trainable = specs.filter((s) => s.trainable);
  let own: TensorArena[] = [];
  if (!storage) {
    // One buffer for the trainable parameters, one for their gradients.
    const group = [trainable.map((s) => s.shape)];
    own = [new TensorArena(rt, group), new TensorArena(rt, group)];
    storage = {
      params: Object.fromEntries(trainable.map((s, i) => [s.name, own[0].groups[0][i]])),
      grads: Object.fromEntries(trainable.map((s, i) => [s.name, own[1].groups[0][i]])),
    };
  }
  for (const s of specs) {
    if (!s.trainable) {
      gpuParams[s.name] = rt.upload(params[s.name], s.shape);
      continue;
    }
    const [p, g] = [storage.params[s.name], storage.grads[s.name]];
    if (!p || !g || p.size !== numel(s.shape) || g.size !== p.size) {
      throw new Error(`uploadParams: no storage of ${numel(s.shape)} elements for "${s.name}"`);
    }
    rt.write(p, params[s.name]);
    gpuParams[s.name] = p;
    grads[s.name] = g;
  }
  if (own.length) ownArenas.set(gpuParams, own);
  return { params: gpuParams, grads };
}

/**
 * Assemble a GPU layer from its forward/backward: adds download, upload and a release that frees
 * `params`, `grads` and whatever `cleanup` owns.
 */
export function gpuLayer(
  rt: GpuRuntime,
  params: Record<string, GpuTensor>,
  grads: Record<string, GpuTensor>,
  impl: Pick<GpuAdapterLayer, "additive" | "forward" | "backward" | "epilogue"> & {
    cleanup?: () => void;
  },
): GpuAdapterLayer {
  return {
    params,
    grads,
    additive: impl.additive,
    forward: impl.forward,
    epilogue: impl.epilogue,
    backward: impl.backward,
    download: () => downloadParams(rt, params),
    upload: (p: Params) => writeParams(rt, params, p),
    release() {
      impl.cleanup?.();
      for (const t of [...Object.values(params), ...Object.values(grads)]) t.release();
      for (const a of ownArenas.get(params) ?? []) a.release();
    },
  };
}

/** Host copies of GPU parameters. */
export async function downloadParams(
  rt: GpuRuntime,
  params: Record<string, GpuTensor>,
): Promise<Params> {
  const out: Params = {};
  for (const [k, t] of Object.entries(params)) out[k] = await rt.read(t) as Float32Array;
  return out;
}

/** Write host values into existing GPU parameters (same names and sizes). */
export function writeParams(rt: GpuRuntime, gpu: Record<string, GpuTensor>, params: Params): void {
  for (const [k, t] of Object.entries(gpu)) {
    const v = params[k];
    if (!v) throw new Error(`upload: missing parameter "${k}"`);
    rt.write(t, v);
  }
}

/** ⟨dy, ·⟩ helper shared by the references: y = x·Wᵀ in float64, [tokens, dOut]. */
export function baseForward(
  w: Float64Array,
  x: Float64Array,
  tokens: number,
  dIn: number,
  dOut: number,
): Float64Array {
  const y = new Float64Array(tokens * dOut);
  for (let t = 0; t < tokens; t++) {
    for (let o = 0; o < dOut; o++) {
      let s = 0;
      for (let i = 0; i < dIn; i++) s += x[t * dIn + i] * w[o * dIn + i];
      y[t * dOut + o] = s;
    }
  }
  return y;
}

/** dx += dy·W in float64 ([tokens, dOut] · [dOut, dIn]). */
export function baseBackward(
  w: Float64Array,
  dy: Float64Array,
  tokens: number,
  dIn: number,
  dOut: number,
  dx: Float64Array,
): void {
  for (let t = 0; t < tokens; t++) {
    for (let o = 0; o < dOut; o++) {
      const g = dy[t * dOut + o];
      if (g === 0) continue;
      for (let i = 0; i < dIn; i++) dx[t * dIn + i] += g * w[o * dIn + i];
    }
  }
}
