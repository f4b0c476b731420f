/**
 * `deno task scale`: the whole kit on one model of a real size, stage by stage — stream-load with
 * an NF4 (or other) base, a forward pass, one MoKA training step on q,k,v,up,down, one MMLU 5-shot
 * scoring batch, greedy generation — and one JSON object on stdout with each stage's time, peak
 * host RSS and GPU pool bytes. `--shape NAME` synthesizes a checkpoint of that shape first (into
 * a temporary folder, removed afterwards). Progress goes to stderr.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { countTrainableParams } from "../models/adapters/count.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import { describeStepMemory, estimateStepMemory } from "../models/llama/memory.ts";
import { LLAMA3_8B } from "../models/llama_shapes.ts";
import { generateOnGpu } from "../models/llama/generate.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { openModel } from "../models/llama/open.ts";
import { type Example, Trainer } from "../models/llama/train.ts";
import { dataDir } from "../testing/paths.ts";
import { rng } from "../kernels/cpu/random.ts";
import { SYNTHETIC_SHAPES, writeSyntheticHf } from "../models/synthetic.ts";
import { MMLU_SUBJECTS } from "../tasks/mmlu/data.ts";
import { runMmlu } from "../grid/pipeline.ts";
import { choiceOption, type CommandSpec, intOption, runCli, UsageError } from "./cli.ts";
import { formatBytes, progressPrinter } from "./progress.ts";
import { recordResult } from "../bench/perfdoc.ts";

/** The MoKA configuration trained at scale: the full profile's four components. */
export const SCALE_MOKA = { kind: "moka", components: [[64, 64], [32, 32], [128, 128], [16, 16]] };
/** The modules it adapts (the paper's). */
export const SCALE_TARGETS = ["q", "k", "v", "up", "down"];

export const SPEC: CommandSpec = {
  name: "deno task scale",
  summary: "Load a paper-size model and run every stage once (load, forward, a MoKA training " +
    "step, an MMLU 5-shot batch, greedy generation); print one JSON object of times and memory.",
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
    batch: { type: "string", value: "B", default: "1", description: "Training sequences." },
    seq: { type: "string", value: "S", default: "32", description: "Training tokens each." },
    "mmlu-subject": {
      type: "string",
      value: "NAME",
      default: "high_school_biology",
      description: "MMLU subject of the scoring batch (8 questions, 5-shot).",
    },
    generate: { type: "string", value: "N", default: "16", description: "Greedy tokens." },
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
  },
  notes: "Stages that fail are reported in the JSON (`ok: false`, `error`), and the others " +
    "still run. Peak RSS is the process's high-water mark; on a CPU adapter (llvmpipe) the GPU " +
    "pool lives in host memory and counts in it.",
  examples: [
    "deno task scale --shape tinyllama-1.1b",
    "deno task scale --model /models/Meta-Llama-3-8B --batch 4 --seq 256",
    "deno task scale --shape llama3-8b --stages forward,train",
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

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    if (!values.shape === !values.model) throw new UsageError("give --shape NAME or --model DIR");
    const shape = values.shape
      ? choiceOption("shape", values.shape, Object.keys(SYNTHETIC_SHAPES))
      : undefined;
    const base = choiceOption("base", values.base, ["nf4", "int4", "bf16", "f16", "f32"] as const);
    const promptTokens = intOption("prompt-tokens", values["prompt-tokens"], 1)!;
    const batch = intOption("batch", values.batch, 1)!;
    const seq = intOption("seq", values.seq, 2)!;
    const genTokens = intOption("generate", values.generate, 1)!;
    const subject = choiceOption("mmlu-subject", values["mmlu-subject"], MMLU_SUBJECTS);
    const ckptMode = choiceOption("checkpointing", values.checkpointing, ["on", "off", "auto"]);
    const checkpointing = ckptMode === "auto" ? "auto" : ckptMode === "on";
    const data = (values.data as string | undefined) ?? dataDir();
    const known = ["forward", "train", "mmlu", "generate"];
    const stages = (values.stages as string).split(",").filter((x) => x !== "");
    for (const s of stages) {
      if (!known.includes(s)) throw new UsageError(`--stages: unknown stage "${s}" (${known})`);
    }
    const log = (m: string) => console.error(`[scale] ${m}`);
    const result: Record<string, unknown> = {
      shape: shape ?? values.model,
      ok: true,
      base,
      batch,
      seq,
    };
    const errors: string[] = [];
    const stage = async (name: string, fn: () => Promise<void>) => {
      if (name !== "load" && !stages.includes(name.replace("_step", ""))) return;
      log(`${name} ...`);
      const t = performance.now();
      try {
        await fn();
        result[`${name}_s`] = Math.round((performance.now() - t) / 10) / 100;
        log(`${name}: ${result[`${name}_s`]} s, peak RSS ${formatBytes(peakRss())}`);
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
    result.device = rt.gpu.description;
    result.max_binding_bytes = rt.device.limits.maxStorageBufferBindingSize;
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
        const adapters = await adaptersForModel(c, SCALE_MOKA, 1, { targets: SCALE_TARGETS });
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
        const scores = await runMmlu(rt, m, opened.tok, {
          dataDir: data,
          subjects: [subject],
          limit: 8,
          shots: 5,
          batch: 8,
        });
        result.mmlu_questions = scores.subjects[subject].total;
      });
      await stage("generate", async () => {
        const prompt = opened.tok.encode("The following are multiple choice questions", {
          bos: true,
        });
        const out = await generateOnGpu(rt, m, prompt, { maxNew: genTokens, eos: -1 });
        result.generated_tokens = out.length;
      });
    } finally {
      result.peak_rss_bytes = peakRss();
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
      log(`recorded ${await recordResult("scale", name, String(result.device), result)}`);
    }
    return result.ok ? 0 : 1;
  });
}
