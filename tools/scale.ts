/**
 * `deno task scale`: the whole kit on one model of a real size, stage by stage — stream-load with
 * an NF4 (or other) base, a forward pass, one MoKA training step on q,k,v,up,down, one MMLU 5-shot
 * scoring batch, greedy generation — and one JSON object on stdout with each stage's time, peak
 * host RSS and GPU pool bytes. `--shape NAME` synthesizes a checkpoint of that shape first (into
 * a temporary folder, removed afterwards). Progress goes to stderr.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { variantsName } from "../kernels/runtime/variants.ts";
import { countTrainableParams } from "../models/adapters/count.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import { describeStepMemory, estimateStepMemory } from "../models/llama/memory.ts";
import { LLAMA3_8B, LLAMA_SHAPES } from "../models/llama_shapes.ts";
import { logitsAt, searchManyOnGpu } from "../models/llama/generate.ts";
import { CHECKPOINT_ABOVE_BYTES, GpuLlama } from "../models/llama/gpu/model.ts";
import { type LlamaSource, type LlamaTensorName, tensorShape } from "../models/llama/source.ts";
import { linearDims, type LlamaConfig } from "../models/llama/config.ts";
import { PROFILES } from "../grid/config.ts";
import { openModel } from "../models/llama/open.ts";
import { type Example, Trainer } from "../models/llama/train.ts";
import { dataDir } from "../testing/paths.ts";
import { rng } from "../kernels/cpu/random.ts";
import { SYNTHETIC_SHAPES, writeSyntheticHf } from "../models/synthetic.ts";
import { MMLU_SUBJECTS } from "../tasks/mmlu/data.ts";
import { runMmlu } from "../grid/pipeline.ts";
import {
  choiceOption,
  type CommandSpec,
  intOption,
  numberOption,
  runCli,
  UsageError,
} from "./cli.ts";
import { formatBytes, progressPrinter } from "./progress.ts";
import { readResults, recordResult, type ResultsPlace, resultsPlace } from "../bench/perfdoc.ts";
import { roofline, withRooflineFractions } from "../bench/roofline.ts";
import { kvDim } from "../models/llama/config.ts";
import {
  type BatchSizing,
  GPU_PROMPTS_CAP,
  GPU_QUESTIONS_CAP,
  questionsPerBatch,
} from "../evals/batching.ts";
import { sig3 } from "../bench/timing.ts";
import { blockFlops, mokaModuleFlops } from "../bench/model_perf.ts";
import { MemorySampler } from "./memory.ts";

/** The grid profile whose MoKA configuration and targets a shape trains at scale. */
export function scaleProfileName(shape: string | undefined): "full-llama3-8b" | "full-llama2-7b" {
  return shape === "llama2-7b" ? "full-llama2-7b" : "full-llama3-8b";
}

/** The MoKA configuration and target modules of a full grid profile (the paper's budget). */
export function profileMoka(
  name: "full-llama3-8b" | "full-llama2-7b",
): { moka: { kind: string; components: [number, number][] }; targets: string[] } {
  const p = PROFILES[name] as {
    adapters: { moka: { kind: string; components: [number, number][] } };
    targets: string[];
  };
  return { moka: p.adapters.moka, targets: p.targets };
}

/** The MoKA configuration trained at scale: the full-llama3-8b profile's (3,735,872 on 8B). */
export const SCALE_MOKA = profileMoka("full-llama3-8b").moka;
/** The modules it adapts (the profile's, the paper's: q, k, v, up, down). */
export const SCALE_TARGETS = profileMoka("full-llama3-8b").targets;

export const SPEC: CommandSpec = {
  name: "deno task scale",
  summary: "Load a paper-size model and run every stage once (load, forward, a MoKA training " +
    "step, an MMLU 5-shot batch, decoding: greedy, 4 beams, a commonsense-style batch); print " +
    "one JSON object of times, rates and memory.",
  options: {
    shape: {
      type: "string",
      value: "NAME",
      description: `Synthesize this shape first: ${Object.keys(SYNTHETIC_SHAPES).join(", ")}.`,
    },
    model: { type: "string", value: "DIR", description: "A Hugging Face folder instead." },
    base: {
      type: "string",
      value: "FORMAT",
      default: "nf4",
      description: "Base storage: nf4, int4, bf16, f16, f32.",
    },
    "prompt-tokens": {
      type: "string",
      value: "N",
      default: "32",
      description: "Tokens of the forward stage's prompt.",
    },
    batch: {
      type: "string",
      value: "B",
      description: "Training sequences (default: 1; 4 with --block).",
    },
    seq: {
      type: "string",
      value: "S",
      description: "Training tokens each (default: 32; 256 with --block).",
    },
    block: {
      type: "boolean",
      description: "Time one transformer block of --shape (default llama3-8b) instead: seeded " +
        "random weights in memory, forward + backward with per-kernel GPU timestamps, and the " +
        "whole model extrapolated from it.",
    },
    vocab: {
      type: "string",
      value: "V",
      default: "512",
      description: "With --block: the block model's vocabulary (the classifier and the loss " +
        "are timed apart at the shape's real vocabulary).",
    },
    "mmlu-subject": {
      type: "string",
      value: "NAME",
      default: "high_school_biology",
      description: "MMLU subject of the scoring batch.",
    },
    "mmlu-shots": {
      type: "string",
      value: "K",
      description: "Exemplars of each MMLU prompt (default: the protocol's 5; 0 on a CPU adapter).",
    },
    "mmlu-questions": {
      type: "string",
      value: "N",
      description: "MMLU questions scored (default: the batch chooser's largest batch, up to 32, " +
        "on a GPU; 1 on a CPU adapter).",
    },
    generate: {
      type: "string",
      value: "N",
      description: "New tokens of each decode figure: greedy, 4 beams, the commonsense batch " +
        "(default 16; 4 on a CPU adapter).",
    },
    "decode-prompt": {
      type: "string",
      value: "N",
      description: "Prompt tokens of the decode figures (default 128, about a commonsense " +
        "evaluation prompt; 16 on a CPU adapter).",
    },
    questions: {
      type: "string",
      value: "N",
      description: "Questions of the commonsense-style batch (default: the batch chooser's " +
        "pick on a GPU; 2 on a CPU adapter, where the chooser's 8 is recorded only).",
    },
    "device-memory": {
      type: "string",
      value: "GIB",
      description: "Device memory the batch chooser budgets from (default: the device's " +
        "maxBufferSize); a batch takes at most half of it.",
    },
    checkpointing: {
      type: "string",
      value: "MODE",
      default: "auto",
      description: "Activation checkpointing of the training step: on, off or auto.",
    },
    stages: {
      type: "string",
      value: "LIST",
      default: "forward,train,mmlu,generate",
      description: "Stages after the load, comma-separated (a CPU adapter at 8B: forward,train).",
    },
    data: { type: "string", value: "DIR", description: "Data folder (MOKA_DATA_DIR)." },
    keep: { type: "boolean", description: "Keep the synthesized folder (path on stderr)." },
    record: {
      type: "boolean",
      description: "Record the result in bench/results and render PERFORMANCE.md again.",
    },
    results: {
      type: "string",
      value: "DIR",
      description: "With --record: record into DIR and render DIR/PERFORMANCE.md instead.",
    },
  },
  notes: "Stages that fail are reported in the JSON (`ok: false`, `error`), and the others " +
    "still run. Decode figures time the decode steps alone: a run of N new tokens minus a run " +
    "of 1 (the same prefill), after a warm-up; bytes per token are the frozen linear weights " +
    "in their format, the classifier and the KV cache read at the mean position, shared by the " +
    "rows of a step; GB/s is set against the copy bandwidth of the latest perf record of this " +
    "device (measured here when there is none). Peak RSS is the process's high-water mark; on a CPU adapter (llvmpipe) the GPU " +
    "pool lives in host memory and counts in it. MoKA is the full grid profile's (full-llama3-8b; " +
    "full-llama2-7b for llama2-7b) on its targets.\n\n" +
    "--block builds a 1-layer model of the shape (NF4 base, MoKA on the profile's targets, " +
    "checkpointing as the whole model would have it) with a small vocabulary, and a 0-layer " +
    "model at the real vocabulary (one table as embedding and classifier) for the embedding " +
    "gather, final norm, classifier and loss. The block's " +
    "GPU time is the 1-layer model's minus a 0-layer model's at the same small vocabulary, per " +
    "kernel label; the whole-model step is extrapolated as layers × block + head (labelled " +
    "extrapolated). Prints one JSON object; no checkpoint is written.",
  examples: [
    "deno task scale --shape tinyllama-1.1b",
    "deno task scale --block",
    "deno task scale --block --shape tinyllama-1.1b --batch 1 --seq 32",
    "deno task scale --model /models/Meta-Llama-3-8B --batch 4 --seq 256",
    "deno task scale --shape llama3-8b --stages forward,train",
    "deno task scale --shape tinyllama-1.1b --stages generate,mmlu",
  ],
};

/** Peak resident set of this process in bytes (Linux VmHWM), or the current RSS elsewhere. */
export function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

/** Read up to `limit` bytes of the folder's safetensors files: the disk's rate for this run. */
async function readFloor(dir: string, limit: number): Promise<number> {
  const buf = new Uint8Array(16 * 2 ** 20);
  let bytes = 0;
  const started = performance.now();
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".safetensors")) continue;
    const f = await Deno.open(`${dir}/${e.name}`);
    try {
      while (bytes < limit) {
        const n = await f.read(buf);
        if (n === null) break;
        bytes += n;
      }
    } finally {
      f.close();
    }
    if (bytes >= limit) break;
  }
  return bytes / ((performance.now() - started) / 1000);
}

/** A 32-bit hash of a tensor name (FNV-1a), so every tensor gets its own stream. */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Seeded random weights of `config`, generated row block by row block as the loader asks for them
 * (nothing is kept, nothing is written): linear weights uniform with variance 1/dIn, norms near
 * 1, embedding and classifier ±0.05. Row r of a tensor is the same whichever block reads it.
 */
export function randomSource(config: LlamaConfig, seed = 0): LlamaSource {
  return {
    config,
    description: `seeded random weights (seed ${seed})`,
    dtype: () => "F32",
    origin: (name) => `random weights: ${name}`,
    readRows(name: LlamaTensorName, start: number, count: number) {
      const [rows, cols] = tensorShape(config, name);
      if (start < 0 || count < 0 || start + count > rows) {
        throw new RangeError(`random weights: rows [${start}, ${start + count}) of ${name}`);
      }
      const norm = name.endsWith("norm");
      const table = name === "embed" || name === "classifier";
      const a = norm ? 0.1 : table ? 0.05 : Math.sqrt(3 / cols);
      const offset = norm ? 1 : 0;
      const scale = (2 * a) / 2 ** 32;
      const out = new Float32Array(count * cols);
      const h = nameHash(name) ^ Math.imul(seed + 1, 0x9e3779b9);
      for (let r = 0; r < count; r++) {
        let x = (Math.imul(h ^ (start + r), 0x85ebca6b) ^ 0x2545f491) >>> 0 || 1;
        const base = r * cols;
        for (let i = 0; i < cols; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          out[base + i] = offset - a + (x >>> 0) * scale;
        }
      }
      return Promise.resolve({ dtype: "F32" as const, bytes: new Uint8Array(out.buffer) });
    },
    close() {},
  };
}

/** GPU time of one profiled training step, per kernel label. */
interface ProfiledStep {
  /** Label → [nanoseconds, dispatches]. */
  byLabel: Map<string, [number, number]>;
  forwardNs: number;
  backwardNs: number;
  wallMs: number;
  dispatches: number;
  profiled: number;
}

/** Forward (keep) + loss and backward of `model` in one profiled batch: the fastest of `reps`. */
async function profiledStep(
  rt: GpuRuntime,
  model: GpuLlama,
  rows: number,
  seq: number,
  checkpointing: boolean,
  reps: number,
): Promise<ProfiledStep> {
  const next = rng(11);
  const vocab = model.config.vocab;
  const ids = Array.from({ length: rows + 1 }, () => Math.floor(next() * vocab));
  const idsT = rt.upload(Uint32Array.from(ids.slice(0, rows)), [rows]);
  const targets = rt.upload(Uint32Array.from(ids.slice(1)), [rows]);
  let best: ProfiledStep | null = null;
  try {
    for (let r = 0; r <= reps; r++) { // the first run compiles and warms up
      const b = rt.batch({ profile: r > 0 });
      await model.forward(b, idsT, seq, { keep: true, logits: "none", checkpointing });
      const forwardDispatches = b.dispatchCount;
      const loss = await model.lossAndBackward(b, targets, rows);
      const t0 = performance.now();
      await b.submit();
      const wallMs = performance.now() - t0;
      loss.release();
      if (r === 0) continue;
      const byLabel = new Map<string, [number, number]>();
      let forwardNs = 0;
      let backwardNs = 0;
      for (const [i, t] of b.durations().entries()) {
        const e = byLabel.get(t.label) ?? [0, 0];
        byLabel.set(t.label, [e[0] + t.ns, e[1] + 1]);
        if (i < forwardDispatches) forwardNs += t.ns;
        else backwardNs += t.ns;
      }
      const step = {
        byLabel,
        forwardNs,
        backwardNs,
        wallMs,
        dispatches: b.dispatchCount,
        profiled: b.durations().length,
      };
      if (!best || step.forwardNs + step.backwardNs < best.forwardNs + best.backwardNs) {
        best = step;
      }
    }
  } finally {
    idsT.release();
    targets.release();
  }
  return best!;
}

/** A sorted split of GPU time by kernel label: [{ kernel, ms, share, dispatches }]. */
function split(byLabel: Map<string, [number, number]>): {
  kernel: string;
  ms: number;
  share: number;
  dispatches: number;
}[] {
  const total = [...byLabel.values()].reduce((n, [ns]) => n + Math.max(0, ns), 0);
  return [...byLabel].filter(([, [ns]]) => ns > 0).sort((a, b) => b[1][0] - a[1][0]).map((
    [kernel, [ns, n]],
  ) => ({ kernel, ms: sig3(ns / 1e6), share: sig3(ns / total), dispatches: n }));
}

/** One group of kernels by label, with the FLOPs it executes where they are known. */
interface FlopGroup {
  group: string;
  ms: number;
  dispatches: number;
  gflop?: number;
  gflops?: number;
  fraction_of_roofline?: number;
}

/**
 * GPU time by kernel group, with the FLOPs each group executes where known: frozen linear
 * forward (`qmatmul/…`) and input gradient (`qmatmul-bwd/…`), attention forward and backward,
 * the adapters' kernels (`matmul/…`, `adapter/…`), the rest without FLOPs. `useful` gives each
 * group's model FLOPs for one pass; a group run more often than its backward (checkpointing's
 * recomputation, the loss's second pass) executes them that many times.
 */
function flopGroups(
  byLabel: Map<string, [number, number]>,
  useful: Record<string, { flops: number; passes?: (count: (re: RegExp) => number) => number }>,
  match: Record<string, RegExp>,
  roofGflops: number,
): FlopGroup[] {
  const count = (re: RegExp) =>
    [...byLabel].filter(([l]) => re.test(l)).reduce((n, [, [, c]]) => n + c, 0);
  const groups = new Map<string, [number, number]>();
  for (const [label, [ns, n]] of byLabel) {
    const group = Object.keys(match).find((g) => match[g].test(label)) ?? "other (no FLOPs)";
    const e = groups.get(group) ?? [0, 0];
    groups.set(group, [e[0] + ns, e[1] + n]);
  }
  return [...groups].sort((a, b) => b[1][0] - a[1][0]).map(([group, [ns, n]]) => {
    const g: FlopGroup = { group, ms: sig3(ns / 1e6), dispatches: n };
    const u = useful[group];
    if (u && ns > 0) {
      const flops = u.flops * (u.passes?.(count) ?? 1);
      g.gflop = sig3(flops / 1e9);
      g.gflops = sig3(flops / ns);
      g.fraction_of_roofline = sig3(flops / ns / roofGflops);
    }
    return g;
  });
}

/** Options of {@link scaleBlock}. */
interface BlockOptions {
  shape: string;
  base: "nf4" | "int4" | "bf16" | "f16" | "f32";
  batch: number;
  seq: number;
  vocab: number;
  checkpointing: "on" | "off" | "auto";
  log: (m: string) => void;
}

/**
 * `scale --block`: one transformer block of `shape` at batch × seq, timed forward + backward per
 * kernel, and the whole model's step extrapolated from it (see the SPEC's notes).
 */
export async function scaleBlock(o: BlockOptions): Promise<Record<string, unknown>> {
  const full = SYNTHETIC_SHAPES[o.shape].config;
  const rows = o.batch * o.seq;
  if (o.seq > full.seqLen) throw new UsageError(`--seq=${o.seq}: over ${o.shape}'s ${full.seqLen}`);
  const trained = profileMoka(scaleProfileName(o.shape));
  const result: Record<string, unknown> = {
    block: true,
    shape: o.shape,
    ok: true,
    base: o.base,
    batch: o.batch,
    seq: o.seq,
    block_vocab: o.vocab,
    vocab: full.vocab,
    layers: full.layers,
    moka: trained.moka,
    targets: trained.targets,
  };
  const rt = await GpuRuntime.create();
  result.device = rt.gpu.description;
  result.variants = variantsName(rt.variants);
  result.timestamps = rt.gpu.hasTimestamps;
  o.log(`${result.device} (${result.variants}); ${o.shape} block, ${o.batch} × ${o.seq} tokens`);
  const roof = await roofline(rt, o.log);
  Object.assign(result, roof);
  const models: GpuLlama[] = [];
  const load = async (c: LlamaConfig, what: string) => {
    o.log(`loading ${what} (seeded random weights) ...`);
    const t0 = performance.now();
    // Checkpointing follows the whole model (its tape is `layers` blocks): set per forward.
    const m = await GpuLlama.load(rt, randomSource(c), {
      base: o.base,
      embedding: "bf16",
      checkpointing: false,
    });
    models.push(m);
    o.log(`  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return m;
  };
  try {
    const one = await load({ ...full, layers: 1, vocab: o.vocab }, "a 1-layer model");
    const ckpt = o.checkpointing === "auto"
      ? full.layers * one.tapeBytesPerBlock(rows, o.seq) > CHECKPOINT_ABOVE_BYTES
      : o.checkpointing === "on";
    result.checkpointing = ckpt;
    const adapters = await adaptersForModel(one.config, trained.moka, 1, {
      targets: trained.targets,
    });
    result.trainable_params_block = [...adapters.values()].reduce(
      (n, a) => n + a.trainableParams(),
      0,
    );
    result.trainable_params = countTrainableParams(
      LLAMA_SHAPES[o.shape],
      trained.targets,
      trained.moka,
    ).total;
    await one.attach(adapters);
    result.block_weight_bytes = one.linearWeightBytes;
    o.log(`1-layer model, MoKA ${JSON.stringify(trained.moka.components)}, checkpointing ${ckpt}`);
    let t0 = performance.now();
    const step1 = await profiledStep(rt, one, rows, o.seq, ckpt, 2);
    o.log(`  block steps: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    one.release();
    models.length = 0;
    const none = await load({ ...full, layers: 0, vocab: o.vocab }, "a 0-layer model");
    const step0 = await profiledStep(rt, none, rows, o.seq, ckpt, 2);
    none.release();
    models.length = 0;
    // One table serves as embedding and classifier: the same shapes and kernels as two, half
    // the random weights to generate.
    const head = await load(
      { ...full, layers: 0, sharedClassifier: true },
      `the head at the real vocabulary ${full.vocab}`,
    );
    t0 = performance.now();
    const stepH = await profiledStep(rt, head, rows, o.seq, ckpt, 2);
    o.log(`  head steps: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    head.release();
    models.length = 0;

    // The block: the 1-layer model's time per label minus the 0-layer model's.
    const byLabel = new Map<string, [number, number]>();
    // Labels the head has as often as the block model (the loss's kernels) are the head's.
    for (const [label, [ns, n]] of step1.byLabel) {
      const [ns0, n0] = step0.byLabel.get(label) ?? [0, 0];
      if (n > n0) byLabel.set(label, [ns - ns0, n - n0]);
    }
    // A profiled batch times its first 2048 dispatches: past that, the wall time stands in.
    const allProfiled = [step1, step0, stepH].every((s) => s.profiled === s.dispatches);
    const gpuOrWall = (s: ProfiledStep) =>
      allProfiled ? s.forwardNs + s.backwardNs : s.wallMs * 1e6;
    const blockNs = gpuOrWall(step1) - gpuOrWall(step0);
    const headNs = gpuOrWall(stepH);
    result.time_source = allProfiled ? "gpu-timestamp" : "wall (over 2048 dispatches)";
    const flops = blockFlops(one.config, rows, o.seq, trained.moka, trained.targets);
    const headFlops = 2 * 2 * rows * full.vocab * full.dim; // classifier forward + dx
    const f32 = roof.roofline_f32_gflops as number;
    result.dispatches_block = step1.dispatches - step0.dispatches;
    result.profiled_all_dispatches = allProfiled;
    result.block_forward_gpu_ms = sig3((step1.forwardNs - step0.forwardNs) / 1e6);
    result.block_backward_gpu_ms = sig3((step1.backwardNs - step0.backwardNs) / 1e6);
    result.block_step_gpu_ms = sig3(
      (step1.forwardNs + step1.backwardNs - step0.forwardNs -
        step0.backwardNs) / 1e6,
    );
    result.block_step_ms = sig3(blockNs / 1e6);
    result.block_step_wall_ms = sig3(step1.wallMs - step0.wallMs);
    result.block_gflop = sig3(flops.total / 1e9);
    result.block_gflop_split = {
      linear: sig3(flops.linear / 1e9),
      attention: sig3(flops.attention / 1e9),
      adapters: sig3(flops.adapters / 1e9),
    };
    if (blockNs > 0) {
      result.block_gflops = sig3(flops.total / blockNs);
      result.block_fraction_of_roofline = sig3(flops.total / blockNs / f32);
    }
    result.block_kernels = split(byLabel);
    // Executed FLOPs per group: a group recorded more often than its backward (checkpointing's
    // recomputation) runs its forward that many times.
    const fwd = /^qmatmul(?!-bwd)/;
    const bwd = /^qmatmul-bwd/;
    const ratio = (count: (re: RegExp) => number) => count(bwd) > 0 ? count(fwd) / count(bwd) : 1;
    const attnFwd = flops.attention / 3;
    const adapterFwd = trained.targets.reduce((n, m) => {
      const [dIn, dOut] = linearDims(one.config, m as "q");
      return n + mokaModuleFlops(dIn, dOut, rows, trained.moka.components).forward;
    }, 0);
    result.block_groups = flopGroups(byLabel, {
      "frozen linear forward": { flops: flops.linear / 2, passes: ratio },
      "frozen linear input gradient": { flops: flops.linear / 2 },
      "attention forward": { flops: attnFwd, passes: () => (ckpt ? 2 : 1) },
      "attention backward": { flops: 2 * attnFwd },
      "adapters": { flops: flops.adapters + (ckpt ? adapterFwd : 0) },
    }, {
      "frozen linear forward": fwd,
      "frozen linear input gradient": bwd,
      "attention forward": /^llama\/attention-(gpu-fwd-)?hs/,
      "attention backward": /^llama\/attention-.*(bwd|dd)/,
      "adapters": /^(matmul|adapter)\//,
    }, f32);
    result.head_step_gpu_ms = sig3((stepH.forwardNs + stepH.backwardNs) / 1e6);
    result.head_step_ms = sig3(headNs / 1e6);
    result.head_step_wall_ms = sig3(stepH.wallMs);
    result.head_gflop = sig3(headFlops / 1e9);
    if (headNs > 0) {
      result.head_gflops = sig3(headFlops / headNs);
      result.head_fraction_of_roofline = sig3(headFlops / headNs / f32);
    }
    result.head_kernels = split(stepH.byLabel);
    result.head_groups = flopGroups(stepH.byLabel, {
      "classifier logits": { flops: headFlops / 2, passes: ratio },
      "classifier input gradient": { flops: headFlops / 2 },
    }, {
      "classifier logits": fwd,
      "classifier input gradient": bwd,
      "loss and norms": /^llama\//,
    }, f32);
    // The whole model, extrapolated: layers × block + head (embedding, final norm, classifier,
    // loss at the real vocabulary). The optimizer step (a few dispatches) is not included.
    const modelNs = full.layers * blockNs + headNs;
    const modelFlops = full.layers * flops.total + headFlops;
    result.extrapolated = true;
    result.extrapolated_model_step_s = sig3(modelNs / 1e9);
    result.extrapolated_model_tokens_per_s = sig3(rows / (modelNs / 1e9));
    result.extrapolated_model_gflops = sig3(modelFlops / modelNs);
    result.extrapolated_model_fraction_of_roofline = sig3(modelFlops / modelNs / f32);
    result.extrapolated_model_tflop = sig3(modelFlops / 1e12);
  } catch (e) {
    result.ok = false;
    result.error = (e as Error).message;
    o.log(`FAILED: ${(e as Error).message}`);
  } finally {
    for (const m of models) m.release();
    result.peak_gpu_bytes = rt.pool.stats.peakInUseBytes;
    result.peak_rss_bytes = peakRss();
  }
  return result;
}

/**
 * The device's copy bandwidth for the decode figures: `roofline_copy_gbps` of the latest perf
 * record of this device (in `place`, then in bench/results), else measured here once.
 */
export async function copyBandwidth(
  rt: GpuRuntime,
  place: ResultsPlace,
  log: (m: string) => void,
): Promise<Record<string, number | string>> {
  const device = rt.gpu.description;
  for (const where of [place, resultsPlace()]) {
    let records: Awaited<ReturnType<typeof readResults>>;
    try {
      records = await readResults(where);
    } catch (e) {
      log(`roofline: ${where.results.pathname} not read (${(e as Error).message})`);
      continue;
    }
    const perf = records.find((r) =>
      r.kind === "perf" && r.device === device && typeof r.result.roofline_copy_gbps === "number"
    );
    if (perf) {
      return {
        roofline_copy_gbps: perf.result.roofline_copy_gbps as number,
        roofline_source: `perf record of ${perf.date.slice(0, 10)}, commit ${perf.commit}`,
      };
    }
  }
  const measured = await roofline(rt, log, { minMs: 10, reps: 1 });
  return {
    roofline_copy_gbps: measured.roofline_copy_gbps,
    roofline_source: "measured in this run",
  };
}

/** The `*_gbps` figures of a result (for their fractions of the copy bandwidth). */
function pickGbps(result: Record<string, unknown>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(result).filter(([k, v]) =>
      k.endsWith("_gbps") && typeof v === "number" &&
      !k.startsWith("roofline_")
    ) as [string, number][],
  );
}

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    const log = (m: string) => console.error(`[scale] ${m}`);
    const place = values.results === undefined
      ? resultsPlace()
      : resultsPlace(values.results as string);
    if (values.block) {
      if (values.model) throw new UsageError("--block synthesizes its weights: no --model");
      const shape = choiceOption(
        "shape",
        values.shape ?? "llama3-8b",
        Object.keys(SYNTHETIC_SHAPES),
      );
      const result = await scaleBlock({
        shape,
        base: choiceOption("base", values.base, ["nf4", "int4", "bf16", "f16", "f32"] as const),
        batch: intOption("batch", values.batch ?? "4", 1)!,
        seq: intOption("seq", values.seq ?? "256", 2)!,
        vocab: intOption("vocab", values.vocab, 16)!,
        checkpointing: choiceOption("checkpointing", values.checkpointing, ["on", "off", "auto"]),
        log,
      });
      console.log(JSON.stringify(result));
      if (values.record) {
        const name = `${shape} block ${result.device}`;
        log(`recorded ${await recordResult("scale", name, String(result.device), result, place)}`);
      }
      return result.ok ? 0 : 1;
    }
    if (!values.shape === !values.model) throw new UsageError("give --shape NAME or --model DIR");
    const shape = values.shape
      ? choiceOption("shape", values.shape, Object.keys(SYNTHETIC_SHAPES))
      : undefined;
    const base = choiceOption("base", values.base, ["nf4", "int4", "bf16", "f16", "f32"] as const);
    const promptTokens = intOption("prompt-tokens", values["prompt-tokens"], 1)!;
    const batch = intOption("batch", values.batch ?? "1", 1)!;
    const seq = intOption("seq", values.seq ?? "32", 2)!;
    // Defaults that depend on the adapter are resolved once the runtime exists.
    const genOption = intOption("generate", values.generate, 2);
    const decodePromptOption = intOption("decode-prompt", values["decode-prompt"], 1);
    const questions = intOption("questions", values.questions, 1);
    const mmluShotsOption = intOption("mmlu-shots", values["mmlu-shots"], 0);
    const mmluQuestionsOption = intOption("mmlu-questions", values["mmlu-questions"], 1);
    const deviceGib = numberOption("device-memory", values["device-memory"], 1 / 1024);
    const sizing: BatchSizing = deviceGib === undefined ? {} : { deviceBytes: deviceGib * 2 ** 30 };
    const subject = choiceOption("mmlu-subject", values["mmlu-subject"], MMLU_SUBJECTS);
    const ckptMode = choiceOption("checkpointing", values.checkpointing, ["on", "off", "auto"]);
    const checkpointing = ckptMode === "auto" ? "auto" : ckptMode === "on";
    const data = (values.data as string | undefined) ?? dataDir();
    const known = ["forward", "train", "mmlu", "generate"];
    const stages = (values.stages as string).split(",").filter((x) => x !== "");
    for (const s of stages) {
      if (!known.includes(s)) throw new UsageError(`--stages: unknown stage "${s}" (${known})`);
    }
    const result: Record<string, unknown> = {
      shape: shape ?? values.model,
      ok: true,
      base,
      batch,
      seq,
    };
    const errors: string[] = [];
    // Peak and unexplained RSS per stage (set once the runtime exists).
    let memory: MemorySampler | null = null;
    const stage = async (name: string, fn: () => Promise<void>) => {
      if (name !== "load" && !stages.includes(name.replace("_step", ""))) return;
      log(`${name} ...`);
      const t = performance.now();
      try {
        await (memory ? memory.stage(name, fn) : fn());
        result[`${name}_s`] = Math.round((performance.now() - t) / 10) / 100;
        const m = memory?.stages.at(-1);
        log(
          `${name}: ${result[`${name}_s`]} s, peak RSS ${
            formatBytes(m?.peakRssBytes ?? peakRss())
          }` + (m ? ` (${formatBytes(m.unexplainedRssBytes)} beside the pool)` : ""),
        );
      } catch (e) {
        result.ok = false;
        errors.push(`${name}: ${(e as Error).message}`);
        log(`${name} FAILED: ${(e as Error).message}`);
      }
    };

    let dir = values.model as string | undefined;
    if (shape) {
      dir = await Deno.makeTempDir({ prefix: `moka-${shape}-` });
      log(`synthesizing ${shape} into ${dir}`);
      const t = performance.now();
      const progress = progressPrinter("synth", 10_000);
      let corpus: string | undefined;
      try { // the MMLU dev texts teach the tokenizer realistic merges, when they are here
        corpus = "";
        for await (const e of Deno.readDir(`${data}/mmlu/dev`)) {
          corpus += await Deno.readTextFile(`${data}/mmlu/dev/${e.name}`);
        }
      } catch {
        corpus = undefined;
      }
      await writeSyntheticHf(dir, SYNTHETIC_SHAPES[shape], { corpus, progress });
      progress.done();
      result.synth_s = Math.round((performance.now() - t) / 10) / 100;
    }
    const rt = await GpuRuntime.create();
    memory = new MemorySampler({ pool: rt.pool, poolInHost: rt.variants.target === "cpu-adapter" });
    result.device = rt.gpu.description;
    result.variants = variantsName(rt.variants);
    result.max_binding_bytes = rt.device.limits.maxStorageBufferBindingSize;
    result.max_buffer_bytes = rt.device.limits.maxBufferSize;
    // A CPU adapter (llvmpipe) runs the decode and MMLU stages small: minutes, not hours.
    const cpuAdapter = rt.variants.target === "cpu-adapter";
    const genTokens = genOption ?? (cpuAdapter ? 4 : 16);
    const decodePrompt = decodePromptOption ?? (cpuAdapter ? 16 : 128);
    const mmluShots = mmluShotsOption ?? (cpuAdapter ? 0 : 5);
    const mmluQuestions = mmluQuestionsOption ?? (cpuAdapter ? 1 : sizing.cap ?? GPU_PROMPTS_CAP);
    let model: GpuLlama | null = null;
    let gpuPeak = 0;
    try {
      result.read_floor_mb_s = Math.round(await readFloor(dir!, 2 ** 31) / 1e6);
      const opened = await openModel(dir!);
      const c = opened.source.config;
      result.config = c;
      const loadProgress = progressPrinter("load", 10_000);
      await stage("load", async () => {
        try {
          model = await GpuLlama.load(rt, opened.source, {
            base,
            checkpointing,
            progress: loadProgress,
          });
        } finally {
          opened.source.close();
        }
        loadProgress.done();
        result.load_mb_s = Math.round(model.loadStats.bytesRead / model.loadStats.seconds / 1e6);
        result.weight_bytes = model.weightBytes;
      });
      if (!model) throw new Error(errors[0]);
      const m = model as GpuLlama;
      const next = rng(7);
      const randomIds = (n: number) =>
        Array.from({ length: n }, () => 3 + Math.floor(next() * (c.vocab - 300)));
      await stage("forward", async () => {
        const ids = rt.upload(Uint32Array.from(randomIds(promptTokens)), [promptTokens]);
        const b = rt.batch();
        const logits = (await m.forward(b, ids, promptTokens, { logits: [promptTokens - 1] }))!;
        await b.submit();
        const row = await rt.read(logits) as Float32Array;
        if (!row.every(Number.isFinite)) throw new Error("non-finite logits");
        ids.release();
        logits.release();
      });
      await stage("train_step", async () => {
        // The full grid profile's MoKA at the paper's budget (LLaMA-2 shapes: full-llama2-7b's).
        const llama2 = shape === "llama2-7b" || (!shape && c.dim === 4096 && c.vocab === 32000);
        const trained = profileMoka(llama2 ? "full-llama2-7b" : "full-llama3-8b");
        result.moka = trained.moka;
        result.targets = trained.targets;
        const adapters = await adaptersForModel(c, trained.moka, 1, { targets: trained.targets });
        result.trainable_params = [...adapters.values()].reduce(
          (n, a) => n + a.trainableParams(),
          0,
        );
        await m.attach(adapters);
        const examples: Example[] = Array.from({ length: batch }, () => {
          const ids = randomIds(seq + 1);
          return { ids: ids.slice(0, seq), targets: ids.slice(1) };
        });
        const trainer = new Trainer(
          rt,
          m,
          { steps: 1, lr: 1e-4, batchSize: batch, seq },
          examples,
          "scale",
        );
        gpuPeak = Math.max(gpuPeak, rt.pool.stats.peakInUseBytes);
        rt.pool.resetPeak();
        const before = rt.pool.stats.inUseBytes;
        const log1 = await trainer.trainStep();
        result.train_step_gpu_bytes = rt.pool.stats.peakInUseBytes - before;
        result.checkpointing = m.checkpoints(batch * seq, seq);
        const settings = {
          base,
          embedding: m.frozen.embed.format,
          checkpointing: m.checkpoints(batch * seq, seq),
          logitsChunkBytes: Math.min(64 * 2 ** 20, rt.device.limits.maxStorageBufferBindingSize),
        };
        const here = estimateStepMemory(c, {
          ...settings,
          batch,
          seq,
          adapterParams: result.trainable_params as number,
        });
        result.estimated_step_bytes = here;
        // The paper's setting: LLaMA-3-8B, MoKA on q,k,v,up,down, micro-batch 4 × 256.
        const l3 = SYNTHETIC_SHAPES["llama3-8b"].config;
        result.estimated_gpu_bytes_llama3_8b = estimateStepMemory(l3, {
          ...settings,
          embedding: "bf16",
          checkpointing: ckptMode === "auto" ? true : ckptMode === "on",
          batch: 4,
          seq: 256,
          adapterParams: countTrainableParams(LLAMA3_8B, SCALE_TARGETS, SCALE_MOKA).total,
        }).total;
        log(`estimate here: ${describeStepMemory(here)}`);
        result.train_tokens_per_s = Math.round(log1.tokens / log1.seconds * 10) / 10;
        result.train_loss = log1.loss;
        if (!Number.isFinite(log1.loss)) throw new Error(`loss ${log1.loss}`);
        trainer.release();
      });
      await stage("mmlu", async () => {
        // A warm-up (a forward of 8 tokens) compiles the forward's kernels first.
        await logitsAt(rt, m, [randomIds(8)], [[7]]);
        const batches: number[] = [];
        const t0 = performance.now();
        const scores = await runMmlu(rt, m, opened.tok, {
          dataDir: data,
          subjects: [subject],
          limit: mmluQuestions,
          shots: mmluShots,
          sizing,
          onBatch: (n) => batches.push(n),
        });
        const seconds = (performance.now() - t0) / 1000;
        const n = scores.subjects[subject].total;
        result.mmlu_questions = n;
        result.mmlu_shots = mmluShots;
        result.mmlu_batch = batches[0];
        result.mmlu_batches = batches.length;
        result.mmlu_scoring_s = sig3(seconds);
        result.mmlu_prompts_per_s = sig3(n / seconds);
      });
      await stage("generate", async () => {
        const roof = await copyBandwidth(rt, place, log);
        Object.assign(result, roof);
        const prompt = randomIds(Math.min(decodePrompt, c.seqLen - genTokens));
        const steps = genTokens - 1;
        result.decode_prompt_tokens = prompt.length;
        result.decode_steps = steps;
        // Bytes a decode step reads: every frozen linear weight and the classifier once for all
        // rows, each row's keys and values at the mean position of the timed steps.
        const weightBytes = m.linearWeightBytes + m.frozen.classifier.bytes;
        const kvRow = 2 * c.layers * kvDim(c) * 4 * (prompt.length + 1 + steps / 2);
        result.decode_weight_bytes_per_step = weightBytes;
        const figure = async (
          key: string,
          prompts: number[][],
          beams: number,
        ) => {
          const run = async (maxNew: number) => {
            const t0 = performance.now();
            const out = await searchManyOnGpu(rt, m, prompts, { maxNew, beams, eos: -1 });
            if (out.some((g) => g.ids.length !== maxNew)) throw new Error(`${key}: stopped early`);
            return (performance.now() - t0) / 1000;
          };
          await run(2); // compiles the prefill's and the decode step's kernels
          const prefill = await run(1);
          const all = await run(genTokens);
          const seconds = Math.max(all - prefill, 1e-9);
          const rows = prompts.length * beams;
          const bytesPerStep = weightBytes + rows * kvRow;
          result[`${key}_tokens_per_s`] = sig3(rows * steps / seconds);
          result[`${key}_step_ms`] = sig3(seconds / steps * 1000);
          result[`${key}_prefill_s`] = sig3(prefill);
          result[`${key}_bytes_per_token`] = Math.round(bytesPerStep / rows);
          result[`${key}_gbps`] = sig3(bytesPerStep * steps / seconds / 1e9);
          log(
            `  ${key}: ${result[`${key}_tokens_per_s`]} tokens/s, ` +
              `${result[`${key}_step_ms`]} ms/step, ${result[`${key}_gbps`]} GB/s`,
          );
        };
        // Batch-1 greedy decoding (every run checks it generated all its tokens).
        await figure("decode", [prompt], 1);
        result.generated_tokens = genTokens;
        // Beam search (the commonsense protocol's 4 beams): beam-tokens/s.
        await figure("beam4", [prompt], 4);
        // A commonsense-style batch: the chooser's questions × 4 beams in one search.
        const chosen = questionsPerBatch(
          rt,
          c,
          Array(GPU_QUESTIONS_CAP).fill(prompt.length),
          { beams: 4, maxNew: genTokens },
          sizing,
        );
        result.commonsense_batch_chooser = chosen;
        // A CPU adapter decodes 2 questions by default: its prefill of 8 takes minutes.
        const pick = questions ?? (cpuAdapter ? Math.min(2, chosen) : chosen);
        result.commonsense_batch_questions = pick;
        await figure(
          "commonsense_batch",
          Array.from({ length: pick }, (_, q) => q === 0 ? prompt : randomIds(prompt.length)),
          4,
        );
        Object.assign(result, withRooflineFractions({ ...roof, ...pickGbps(result) }));
      });
    } finally {
      result.peak_rss_bytes = Math.max(peakRss(), ...memory.stages.map((m) => m.peakRssBytes));
      Object.assign(result, memory.fields());
      result.peak_gpu_bytes = Math.max(gpuPeak, rt.pool.stats.peakInUseBytes);
      (model as GpuLlama | null)?.release();
      if (shape && dir) {
        if (values.keep) log(`kept ${dir}`);
        else await Deno.remove(dir, { recursive: true });
      }
    }
    if (errors.length) result.error = errors.join("; ");
    console.log(JSON.stringify(result));
    if (values.record) {
      const name = `${
        shape ?? String(values.model).split("/").filter(Boolean).at(-1)
      } ${result.device}`;
      log(`recorded ${await recordResult("scale", name, String(result.device), result, place)}`);
    }
    return result.ok ? 0 : 1;
  });
}
