/**
 * Adapter fine-tuning of a {@link GpuLlama}: AdamW (decoupled weight decay), linear warm-up then
 * linear or cosine decay, gradient accumulation, global-norm clipping, a seeded data order, a
 * progress line (loss, tokens/s, ETA) and checkpoints (adapters + optimizer state + data position)
 * that a resumed run continues from exactly.
 *
 * Examples are token ids with per-position targets (−1 = no loss, e.g. prompt tokens); each
 * micro-batch packs `batchSize` examples padded to `seq` tokens.
 */
import { z } from "../../deps/zod.ts";
import { dotInto } from "../../kernels/adapters/ops.ts";
import { addInto } from "../../kernels/llama/ops.ts";
import { type AdamWStep, adamwStep, adamwStepCpu } from "../../kernels/optim/adamw.ts";
import { TensorArena } from "../../kernels/runtime/arena.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../kernels/runtime/tensor.ts";
import { assertFinite, encodeSafetensors, parseSafetensors } from "../safetensors.ts";
import { hash32, rng } from "../../kernels/cpu/random.ts";
import { issueText, type Same, type Schema } from "../schema.ts";
import type { CpuAdapters, CpuLlama } from "./cpu/model.ts";
import type { GpuLlama } from "./gpu/model.ts";

const TrainConfigZod = z.object({
  /** Optimizer steps. */
  steps: z.number().int().positive(),
  /** Peak learning rate. */
  lr: z.number().positive(),
  /** Warm-up steps (linear from 0). */
  warmup: z.number().int().nonnegative().default(0),
  /** Decay after warm-up, to 0 at `steps`. */
  schedule: z.enum(["linear", "cosine", "constant"]).default("linear"),
  /** AdamW decoupled weight decay. */
  weightDecay: z.number().nonnegative().default(0),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Micro-batches per optimizer step. */
  gradAccum: z.number().int().positive().default(1),
  /** Clip the global gradient norm to this (0: off). */
  clipNorm: z.number().nonnegative().default(1),
  /** Examples per micro-batch. */
  batchSize: z.number().int().positive(),
  /** Tokens per example (longer ones are cut, shorter ones padded). */
  seq: z.number().int().positive(),
  /** Seed of the data order. */
  seed: z.number().int().default(0),
  /** Save a checkpoint every N optimizer steps (0: never). */
  checkpointEvery: z.number().int().nonnegative().default(0),
}).strict();

/** Each schema of a shape with its `.default()` removed (the field optional instead). */
type WithoutDefaults<S> = {
  [K in keyof S]: S[K] extends z.ZodDefault<infer I> ? z.ZodOptional<I> : S[K];
};

/**
 * The trainer options as a config file writes them: the same fields and checks, strict, but no
 * defaults filled in, so what is hashed is what the file says (defaults added later would change
 * every finished run's hash).
 */
export const TrainOptionsZod = z.object(
  Object.fromEntries(
    Object.entries(TrainConfigZod.shape).map((
      [k, s],
    ) => [k, s instanceof z.ZodDefault ? s.unwrap().optional() : s]),
  ) as WithoutDefaults<typeof TrainConfigZod.shape>,
).strict();

/** Validated training configuration. */
export interface TrainConfig {
  /** Optimizer steps. */
  steps: number;
  /** Peak learning rate. */
  lr: number;
  /** Warm-up steps. */
  warmup: number;
  /** Decay shape after warm-up. */
  schedule: "linear" | "cosine" | "constant";
  /** Decoupled weight decay. */
  weightDecay: number;
  /** Adam β1. */
  beta1: number;
  /** Adam β2. */
  beta2: number;
  /** Adam ε. */
  eps: number;
  /** Micro-batches per step. */
  gradAccum: number;
  /** Global-norm clip (0 = off). */
  clipNorm: number;
  /** Examples per micro-batch. */
  batchSize: number;
  /** Tokens per example. */
  seq: number;
  /** Data-order seed. */
  seed: number;
  /** Checkpoint interval in steps (0 = never). */
  checkpointEvery: number;
}

/** zod schema of {@link TrainConfig}. */
export const TrainConfigSchema: Schema<TrainConfig> = TrainConfigZod;

// Written out for the documentation; checked both ways against what the schema outputs.
const _configMatchesSchema: Same<TrainConfig, z.output<typeof TrainConfigZod>> = true;

/** One training example. */
export interface Example {
  /** Input ids. */
  ids: number[];
  /** Target per position (the next token), −1 where no loss is taken. */
  targets: number[];
}

/** AdamW settings of 1-based `step`: scheduled lr, and the gradient scale of global-norm clipping. */
export function adamwHyper(c: TrainConfig, step: number, gradNorm: number): AdamWStep {
  return {
    lr: learningRate(c, step),
    step,
    beta1: c.beta1,
    beta2: c.beta2,
    eps: c.eps,
    weightDecay: c.weightDecay,
    gradScale: c.clipNorm > 0 && gradNorm > c.clipNorm ? c.clipNorm / gradNorm : 1,
  };
}

/** Learning rate at 1-based `step`. */
export function learningRate(c: TrainConfig, step: number): number {
  if (step <= c.warmup) return (c.lr * step) / Math.max(1, c.warmup);
  if (c.schedule === "constant") return c.lr;
  const progress = (step - c.warmup) / Math.max(1, c.steps - c.warmup);
  return c.schedule === "linear"
    ? c.lr * (1 - progress)
    : 0.5 * c.lr * (1 + Math.cos(Math.PI * progress));
}

/** Where the data order stands: epoch and index into that epoch's permutation. */
export interface DataPosition {
  /** Epoch number (each has its own seeded permutation). */
  epoch: number;
  /** Next example within the epoch. */
  index: number;
}

/** The permutation of `n` examples for `epoch` (Fisher–Yates with a seeded PRNG). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const next = rng((seed * 1000003 + epoch) >>> 0);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** One step's record. */
export interface StepLog {
  /** 1-based step. */
  step: number;
  /** Mean loss over the step's target tokens. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Learning rate used. */
  lr: number;
  /** Tokens (inputs) processed in the step. */
  tokens: number;
  /** Wall seconds of the step. */
  seconds: number;
}

/** Saved training state (inside the checkpoint's metadata). */
interface TrainState {
  step: number;
  position: DataPosition;
  history: StepLog[];
  fingerprint: string;
}

const count = z.number().int().nonnegative();
const TrainStateSchema = z.object({
  step: count,
  position: z.object({ epoch: count, index: count }),
  history: z.array(z.object({
    step: count,
    loss: z.number(),
    gradNorm: z.number(),
    lr: z.number(),
    tokens: count,
    seconds: z.number(),
  })),
  fingerprint: z.string(),
});
const _stateMatchesSchema: Same<TrainState, z.output<typeof TrainStateSchema>> = true;

/** `__metadata__.format` of training checkpoints. */
export const CHECKPOINT_FORMAT = "moka-train-checkpoint";
const CHECKPOINT_VERSION = "1";

/** A checkpoint's contents, validated: its state and the tensors in the order asked for. */
export interface CheckpointContents {
  /** Step, data position, history and fingerprint. */
  state: TrainState;
  /** The tensors of `want`, in its order. */
  values: Float32Array[];
}

/**
 * Parse and validate a training checkpoint (`path` names it in errors) before anything is
 * restored: format, state (zod), fingerprint, the exact tensor set with `want`'s shapes, a step
 * within `steps`, and finite values — a diverged run's NaNs must not resume as a finished run.
 */
export function readCheckpoint(
  bytes: Uint8Array,
  path: string,
  expect: { fingerprint: string; steps: number; tensors: { name: string; shape: number[] }[] },
): CheckpointContents {
  const file = parseSafetensors(bytes, path);
  if (
    file.metadata.format !== CHECKPOINT_FORMAT || file.metadata.version !== CHECKPOINT_VERSION
  ) {
    throw new Error(`${path}: not a version-${CHECKPOINT_VERSION} training checkpoint`);
  }
  let json: unknown;
  try {
    json = JSON.parse(file.metadata.state ?? "");
  } catch {
    throw new Error(`${path}: corrupt training state (__metadata__.state is not JSON)`);
  }
  const parsed = TrainStateSchema.safeParse(json);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new Error(`${path}: training state field ${i.path.join(".")}: ${i.message}`);
  }
  const state = parsed.data;
  if (state.fingerprint !== expect.fingerprint) {
    throw new Error(
      `${path}: checkpoint of a different run (adapters, data or train config changed)`,
    );
  }
  if (state.step > expect.steps) {
    throw new Error(`${path}: training state field step: ${state.step} > ${expect.steps} steps`);
  }
  const missing = expect.tensors.filter((t) => !file.entries.has(t.name)).map((t) => t.name);
  if (missing.length || file.entries.size !== expect.tensors.length) {
    throw new Error(
      `${path}: tensors do not match the attached adapters (missing ${
        missing.slice(0, 3).join(", ")
      })`,
    );
  }
  for (const t of expect.tensors) {
    const shape = file.entries.get(t.name)!.shape;
    if (shape.join(",") !== t.shape.join(",")) {
      throw new Error(`${path}: tensor "${t.name}" has shape [${shape}], expected [${t.shape}]`);
    }
  }
  const values = expect.tensors.map((t) => assertFinite(file.tensor(t.name), path, t.name));
  return { state, values };
}

/** Trains the adapters attached to a model. */
export class Trainer {
  readonly #rt: GpuRuntime;
  readonly #model: GpuLlama;
  readonly #config: TrainConfig;
  readonly #data: Example[];
  readonly #fingerprint: string;
  readonly #state: {
    key: string;
    name: string;
    param: GpuTensor;
    grad: GpuTensor;
    acc: GpuTensor;
    m: GpuTensor;
    v: GpuTensor;
  }[];
  // The same tensors packed (the arenas' buffers): what the optimizer updates, one dispatch each.
  readonly #packed: {
    param: GpuTensor;
    grad: GpuTensor;
    acc: GpuTensor;
    m: GpuTensor;
    v: GpuTensor;
  }[];
  readonly #moments: TensorArena[];
  #step = 0;
  #position: DataPosition = { epoch: 0, index: 0 };
  /** Every completed step, in order. */
  history: StepLog[] = [];

  /**
   * `fingerprint` identifies the run (adapter configs, data, anything whose change must forbid
   * resuming); a checkpoint with another fingerprint is refused.
   */
  constructor(
    rt: GpuRuntime,
    model: GpuLlama,
    config: unknown,
    data: Example[],
    fingerprint: string,
  ) {
    this.#rt = rt;
    this.#model = model;
    const parsed = TrainConfigZod.safeParse(config);
    if (!parsed.success) {
      const known = () => Object.keys(TrainConfigZod.shape);
      throw new Error(`train config: ${issueText(parsed.error.issues, known)}`);
    }
    this.#config = parsed.data;
    if (data.length === 0) throw new Error("train: no examples");
    data.forEach((e, i) => {
      if (e.ids.length !== e.targets.length || e.ids.length === 0) {
        throw new Error(
          `train: example ${i} has ${e.ids.length} ids and ${e.targets.length} targets`,
        );
      }
      if (!e.targets.some((t) => t >= 0)) {
        throw new Error(`train: example ${i} has no target token`);
      }
    });
    this.#data = data;
    this.#fingerprint = `${fingerprint}|${JSON.stringify(this.#config)}`;
    const trainables = model.trainables;
    if (!trainables || trainables.names.every((n) => n.names.length === 0)) {
      throw new Error("train: the model has no trainable adapter attached");
    }
    const groups = trainables.params.slots.map((g) => g.map((slot) => slot.shape));
    // Accumulated gradient and Adam moments in the parameters' layout (zeroed).
    this.#moments = [0, 1, 2].map(() => new TensorArena(rt, groups));
    const [acc, m, v] = this.#moments;
    this.#state = trainables.names.flatMap(({ key, names }, g) =>
      names.map((name, k) => ({
        key,
        name,
        param: trainables.params.groups[g][k],
        grad: trainables.grads.groups[g][k],
        acc: acc.groups[g][k],
        m: m.groups[g][k],
        v: v.groups[g][k],
      }))
    );
    this.#packed = trainables.params.buffers.map((param, j) => ({
      param,
      grad: trainables.grads.buffers[j],
      acc: acc.buffers[j],
      m: m.buffers[j],
      v: v.buffers[j],
    }));
  }

  /** Optimizer steps done. */
  get step(): number {
    return this.#step;
  }

  /** The validated config. */
  get config(): TrainConfig {
    return this.#config;
  }

  #nextExamples(count: number): Example[] {
    const out: Example[] = [];
    while (out.length < count) {
      const order = epochOrder(this.#data.length, this.#config.seed, this.#position.epoch);
      out.push(this.#data[order[this.#position.index]]);
      this.#position.index++;
      if (this.#position.index === this.#data.length) {
        this.#position = { epoch: this.#position.epoch + 1, index: 0 };
      }
    }
    return out;
  }

  #pack(examples: Example[]): { ids: Uint32Array; targets: Uint32Array; count: number } {
    const { seq } = this.#config;
    const ids = new Uint32Array(examples.length * seq);
    const targets = new Uint32Array(examples.length * seq).fill(0xffffffff); // −1 as i32
    let count = 0;
    examples.forEach((e, b) => {
      for (let t = 0; t < Math.min(seq, e.ids.length); t++) {
        ids[b * seq + t] = e.ids[t];
        if (e.targets[t] >= 0) {
          targets[b * seq + t] = e.targets[t];
          count++;
        }
      }
    });
    return { ids, targets, count };
  }

  /** Run one optimizer step (gradAccum micro-batches); returns its log line. */
  async trainStep(): Promise<StepLog> {
    const c = this.#config;
    const rt = this.#rt;
    const started = performance.now();
    const micro = Array.from(
      { length: c.gradAccum },
      () => this.#pack(this.#nextExamples(c.batchSize)),
    );
    const total = micro.reduce((n, m) => n + m.count, 0);
    if (total === 0) {
      throw new Error("train: a step without target tokens (every target cut by seq?)");
    }
    // Losses, and the squared norms of the accumulated gradients taken by the last micro-batch,
    // come back as snapshots mapped with their batch: each wait costs the runtime's polling
    // interval, so a step waits once per micro-batch and once for the optimizer. (One batch at a
    // time: queued together, their scratch would all be live at once.)
    const sq = rt.empty([this.#packed.length]);
    let lossSum = 0;
    let norms!: { read(): Promise<ArrayBuffer> };
    for (const [i, m] of micro.entries()) {
      const ids = rt.upload(m.ids, [m.ids.length]);
      const targets = rt.upload(m.targets, [m.targets.length]);
      const b = rt.batch();
      // Dropout masks are a function of the run's seed, the step and the micro-batch: a resumed
      // run draws the same ones.
      const dropoutSeed = hash32((c.seed * 1000003 + this.#step * 64 + i) >>> 0);
      await this.#model.forward(b, ids, c.seq, { keep: true, logits: "none", dropoutSeed });
      // Dividing by the step's total count makes the accumulated sum the mean over the step.
      const loss = await this.#model.lossAndBackward(b, targets, total);
      for (const s of this.#packed) {
        if (i === 0) b.copy(s.grad.buffer, 0, s.acc.buffer, 0, s.grad.byteLength);
        else await addInto(rt, b, { dst: s.acc, src: s.grad });
      }
      const lossCopy = b.snapshot(loss);
      if (i === micro.length - 1) {
        for (const [j, s] of this.#packed.entries()) {
          await dotInto(rt, b, { out: sq, index: j, a: s.acc, b: s.acc });
        }
        norms = b.snapshot(sq);
        b.releaseAfter(sq);
      }
      for (const t of [ids, targets, loss]) b.releaseAfter(t);
      await b.submit();
      lossSum += new Float32Array(await lossCopy.read()).reduce((x, y) => x + y, 0);
    }
    let normSq = 0;
    for (const x of new Float32Array(await norms.read())) normSq += x;
    const gradNorm = Math.sqrt(normSq);
    const step = this.#step + 1;
    const hyper = adamwHyper(c, step, gradNorm);
    const lr = hyper.lr;
    const b = rt.batch();
    for (const s of this.#packed) {
      await adamwStep(rt, b, { param: s.param, grad: s.acc, m: s.m, v: s.v }, hyper);
    }
    await b.submit();
    this.#step = step;
    const log: StepLog = {
      step,
      loss: lossSum / total,
      gradNorm,
      lr,
      tokens: micro.length * c.batchSize * c.seq,
      seconds: (performance.now() - started) / 1000,
    };
    this.history.push(log);
    return log;
  }

  /**
   * Train until `config.steps`, saving a checkpoint to `checkpointPath` every `checkpointEvery`
   * steps and at the end; `stopAfter` ends early (tests, time limits). `progress` gets each step.
   */
  async run(
    options: {
      checkpointPath?: string;
      stopAfter?: number;
      progress?: (log: StepLog, eta: number) => void;
    } = {},
  ): Promise<StepLog[]> {
    const c = this.#config;
    const started = performance.now();
    const first = this.#step;
    while (
      this.#step < c.steps && (options.stopAfter === undefined || this.#step < options.stopAfter)
    ) {
      const log = await this.trainStep();
      const perStep = (performance.now() - started) / 1000 / (this.#step - first);
      options.progress?.(log, perStep * (c.steps - this.#step));
      if (options.checkpointPath && c.checkpointEvery > 0 && this.#step % c.checkpointEvery === 0) {
        await this.save(options.checkpointPath);
      }
    }
    if (options.checkpointPath) await this.save(options.checkpointPath);
    return this.history;
  }

  /** Save adapters, optimizer state, step and data position (temp file + rename). */
  async save(path: string): Promise<void> {
    const tensors = [];
    for (const s of this.#state) {
      const shape = [...s.param.shape];
      tensors.push({
        name: `param.${s.key}.${s.name}`,
        shape,
        data: await this.#rt.read(s.param) as Float32Array,
      });
      tensors.push({
        name: `adam_m.${s.key}.${s.name}`,
        shape,
        data: await this.#rt.read(s.m) as Float32Array,
      });
      tensors.push({
        name: `adam_v.${s.key}.${s.name}`,
        shape,
        data: await this.#rt.read(s.v) as Float32Array,
      });
    }
    const state: TrainState = {
      step: this.#step,
      position: this.#position,
      history: this.history,
      fingerprint: this.#fingerprint,
    };
    const bytes = encodeSafetensors(tensors, {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      state: JSON.stringify(state),
    });
    // Unique per process and call: two writers never share a temp file.
    const tmp = `${path}.${Deno.pid}-${
      crypto.getRandomValues(new Uint32Array(1))[0].toString(36)
    }.tmp`;
    try {
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  }

  /** Restore from a checkpoint of the same run (everything checked first, see readCheckpoint). */
  async resume(path: string): Promise<void> {
    const tensors = this.#state.flatMap((s) =>
      ["param", "adam_m", "adam_v"].map((p) => ({
        name: `${p}.${s.key}.${s.name}`,
        shape: [...s.param.shape],
      }))
    );
    // Everything is decoded and checked before the GPU is touched.
    const { state, values } = readCheckpoint(await Deno.readFile(path), path, {
      fingerprint: this.#fingerprint,
      steps: this.#config.steps,
      tensors,
    });
    this.#state.forEach((s, i) => {
      this.#rt.write(s.param, values[3 * i]);
      this.#rt.write(s.m, values[3 * i + 1]);
      this.#rt.write(s.v, values[3 * i + 2]);
    });
    this.#step = state.step;
    this.#position = state.position;
    this.history = state.history;
  }

  /** Free optimizer buffers (the adapters belong to the model). */
  release(): void {
    for (const a of this.#moments) a.release();
  }
}

/** One human-readable progress line: step, loss, tokens/s, ETA. */
export function progressLine(log: StepLog, totalSteps: number, etaSeconds: number): string {
  const eta = etaSeconds >= 3600
    ? `${Math.floor(etaSeconds / 3600)}h${
      String(Math.round((etaSeconds % 3600) / 60)).padStart(2, "0")
    }m`
    : etaSeconds >= 60
    ? `${Math.floor(etaSeconds / 60)}m${String(Math.round(etaSeconds % 60)).padStart(2, "0")}s`
    : `${Math.round(etaSeconds)}s`;
  return `step ${log.step}/${totalSteps} · loss ${log.loss.toFixed(4)} · lr ${
    log.lr.toExponential(2)
  } · ` +
    `|g| ${log.gradNorm.toFixed(3)} · ${(log.tokens / log.seconds).toFixed(1)} tok/s · ETA ${eta}`;
}

/**
 * The same optimisation on the float64 CPU model (every example in every step, AdamW, the
 * schedule and clipping of `config`): the reference the GPU trainer is compared with.
 */
export function trainCpu(
  model: CpuLlama,
  adapters: CpuAdapters,
  data: Example[],
  config: unknown,
): number[] {
  const c = TrainConfigZod.parse(config);
  const state = new Map<string, { m: Float64Array; v: Float64Array }>();
  const losses: number[] = [];
  for (let step = 1; step <= c.steps; step++) {
    const total = data.reduce(
      (n, e) => n + e.targets.slice(0, c.seq).filter((t) => t >= 0).length,
      0,
    );
    const grads = new Map<string, Record<string, Float64Array>>();
    let loss = 0;
    for (const e of data) {
      const n = e.targets.slice(0, c.seq).filter((t) => t >= 0).length;
      const r = model.lossAndGrads(e.ids.slice(0, c.seq), e.targets.slice(0, c.seq), adapters);
      loss += r.loss * n;
      for (const [k, g] of r.grads) {
        const acc = grads.get(k) ?? {};
        for (const [name, v] of Object.entries(g)) {
          acc[name] ??= new Float64Array(v.length);
          for (let i = 0; i < v.length; i++) acc[name][i] += (v[i] * n) / total;
        }
        grads.set(k, acc);
      }
    }
    losses.push(loss / total);
    let sq = 0;
    for (const g of grads.values()) {
      for (const v of Object.values(g)) for (const x of v) sq += x * x;
    }
    const hyper = adamwHyper(c, step, Math.sqrt(sq));
    for (const [k, g] of grads) {
      const { params } = adapters.get(k)!;
      for (const [name, grad] of Object.entries(g)) {
        const key = `${k}.${name}`;
        if (!state.has(key)) {
          state.set(key, { m: new Float64Array(grad.length), v: new Float64Array(grad.length) });
        }
        adamwStepCpu({ param: params[name], grad, ...state.get(key)! }, hyper);
      }
    }
  }
  return losses;
}
