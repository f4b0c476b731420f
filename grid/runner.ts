/**
 * Runs grid cells: load and quantize the base once per process, attach the run's adapters
 * (seeded; detached again after the run), fine-tune
 * and evaluate through the task pipelines, save the adapter file, write `report.json` (validated)
 * last. A run whose report exists with the same config hash is skipped; a run interrupted after
 * a training checkpoint resumes from it (`ckpt.safetensors` in the run folder). Each run is
 * claimed first (grid/claim.ts), so processes sharing an output folder split the runs.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { encodeAdapters } from "../models/adapters/io.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { openModel } from "../models/llama/open.ts";
import { progressLine, Trainer } from "../models/llama/train.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import { majorityBaseline, wilsonInterval } from "../evals/stats.ts";
import { type InstructionRecord, PROTOCOL } from "../tasks/alpaca.ts";
import {
  COMMONSENSE_TASKS,
  type CommonsenseTask,
  loadCommonsense,
  loadRecordFile,
  parseTask,
} from "../tasks/commonsense/data.ts";
import {
  commonsenseTrainRecords,
  evaluateHeldOut,
  runCommonsense,
  runMmlu,
  toExamples,
} from "./pipeline.ts";
import {
  type ChoiceAccuracy,
  parseRunReport,
  type RunReport,
  RunReportSchema,
  type TaskAccuracy,
} from "./schema.ts";
import {
  canonicalJson,
  checkContext,
  type GridConfig,
  type PlannedRun,
  runConfig,
  sha256,
} from "./config.ts";
import { claimRun, type RunClaim, writeFileAtomic } from "./claim.ts";

/** The grid's base model on the GPU and its tokenizer, shared by the runs of one process. */
export interface LoadedModel {
  /** Path shown in reports. */
  path: string;
  /** Architecture. */
  config: LlamaConfig;
  /** The frozen base on the GPU (adapters are attached per run). */
  gpu: GpuLlama;
  /** Tokenizer. */
  tok: TextTokenizer;
}

/**
 * Load the grid's model (llama2.c file or HF folder) onto the GPU once, in the grid's base
 * format: `c.model`, or `fallback` (the CLI's embedded default) when the config names none. The
 * families' `maxLen` is checked against the model's context before the weights go to the GPU.
 */
export async function loadGridModel(
  rt: GpuRuntime,
  c: GridConfig,
  fallback: string,
): Promise<LoadedModel> {
  const opened = await openModel(c.model ?? fallback, c.tokenizer ?? undefined);
  try {
    checkContext(c, opened.source.config.seqLen, `grid ${c.profile}`);
    const gpu = await GpuLlama.load(rt, opened.source, { base: c.base });
    return { path: opened.path, config: opened.source.config, gpu, tok: opened.tok };
  } finally {
    opened.source.close();
  }
}

/** The commit of the code that runs: `MOKA_COMMIT` when set (a copy without .git), else git's. */
export async function gitCommit(): Promise<string> {
  try {
    const pinned = Deno.env.get("MOKA_COMMIT");
    if (pinned) return pinned;
  } catch { /* no --allow-env */ }
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "HEAD"],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

/** The finished report of `run` if it exists and matches the config hash, else null. */
export async function finishedReport(dir: string, hash: string): Promise<RunReport | null> {
  try {
    const r = parseRunReport(await Deno.readTextFile(`${dir}/report.json`), `${dir}/report.json`);
    return r.configHash === hash ? r : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e; // a corrupt report is an error to look at, not something to overwrite silently
  }
}

type CommonsenseResult = Awaited<ReturnType<typeof runCommonsense>>;
type CommonsenseFamily = NonNullable<GridConfig["commonsense"]>;

/** Gold answers of the evaluated records of each task (the generation and the choice sets). */
async function goldAnswers(dataDir: string, cs: CommonsenseFamily) {
  const limits = [cs.testLimit, cs.choiceLimit ?? cs.testLimit];
  const limit = limits.includes(undefined) ? undefined : Math.max(...limits as number[]);
  const out: Record<string, string[]> = {};
  for (const t of cs.tasks.map(parseTask)) {
    out[t] = (await loadCommonsense(dataDir, t, "test", limit)).map((r) => r.answer ?? "");
  }
  return out;
}

/** Per-task accuracies with n, a 95 % Wilson interval, chance and majority; multiple choice. */
function commonsenseMetrics(
  r: CommonsenseResult,
  gold: Record<string, string[]>,
): NonNullable<RunReport["metrics"]["commonsense"]> {
  const tasks: Record<string, TaskAccuracy> = {};
  for (const [t, score] of Object.entries(r.eval.tasks)) {
    const options = COMMONSENSE_TASKS[t as CommonsenseTask].source.split("|").length;
    tasks[t] = {
      ...score!,
      ci: wilsonInterval(score!.correct, score!.total),
      // Generation can also answer nothing; a uniform guess among the task's answer words.
      chance: 1 / options,
      // The most frequent answer over the larger evaluated set (the multiple-choice one).
      majority: majorityBaseline(
        (gold[t] ?? []).slice(
          0,
          Math.max(score!.total, r.choice[t as CommonsenseTask]?.total ?? 0),
        ),
      ),
    };
  }
  const choice: Record<string, ChoiceAccuracy> = {};
  for (const [t, c] of Object.entries(r.choice)) {
    choice[t] = { ...c!, ci: wilsonInterval(c!.correct, c!.total) };
  }
  const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
  const choices = Object.values(choice);
  return {
    tasks,
    average: r.eval.average,
    ...(choices.length
      ? {
        choice,
        choiceAverage: mean(choices.map((c) => c.acc)),
        chanceAverage: mean(choices.map((c) => c.chance)),
      }
      : {}),
  };
}

/** The first `n` generations of each task with the extracted and the gold answer. */
function commonsenseSamples(r: CommonsenseResult, gold: Record<string, string[]>, n: number) {
  return Object.entries(r.eval.generations).flatMap(([task, texts]) =>
    texts.slice(0, n).map((response, i) => ({
      task,
      response,
      extracted: r.eval.predictions[task][i],
      gold: gold[task]?.[i] ?? "",
    }))
  );
}

/** Test records of the fallback tasks (the MMLU family's held-out set when no train file). */
async function heldOutFallback(dataDir: string, tasks: string[], limit: number) {
  const out: InstructionRecord[] = [];
  for (const t of tasks.map(parseTask)) {
    for (const r of await loadCommonsense(dataDir, t, "test")) out.push(r); // no spread: size
  }
  return out.slice(0, limit);
}

/** Options of {@link executeRun}. */
export interface RunOptions {
  /** Output folder (the run writes `runs/<id>/`). */
  out: string;
  /** Data folder. */
  dataDir: string;
  /** Progress lines. */
  log: (m: string) => void;
  /**
   * Called once for each run this process finishes, after its `report.json` is in place (renamed
   * from its temp file), with the report and the run folder: the place to publish a result. Not
   * called for runs found already done or left to another process. An error it throws fails the
   * run's call (the report stays written, so a rerun skips the run and does not call it again).
   */
  onRunFinished?: (report: RunReport, runDir: string) => Promise<void>;
}

/** What {@link executeRun} did with a run. */
export type RunOutcome =
  | {
    /** "ran": finished in this process; "done": its report was already there. */
    status: "ran" | "done";
    /** The run's report. */
    report: RunReport;
    /** Whether the run was already done (status "done"). */
    skipped: boolean;
  }
  | {
    /** Another process holds the run's claim: left to it. */
    status: "claimed";
    /** The holder (null: its lock is unreadable). */
    heldBy: RunClaim | null;
    /** The lock file. */
    lock: string;
  };

/**
 * Execute one run, or return its existing report, or leave it to the process that has claimed
 * it. `log` gets progress lines (and a line when a stale claim is taken over).
 */
export async function executeRun(
  rt: GpuRuntime,
  c: GridConfig,
  run: PlannedRun,
  model: LoadedModel,
  options: RunOptions,
): Promise<RunOutcome> {
  const dir = `${options.out}/runs/${run.id}`;
  const config = runConfig(c, run);
  const configHash = await sha256(canonicalJson(config));
  const done = await finishedReport(dir, configHash);
  if (done) return { status: "done", report: done, skipped: true };
  const claim = await claimRun(dir);
  if (!claim.claimed) return { status: "claimed", heldBy: claim.heldBy, lock: claim.lock };
  try {
    if (claim.tookOver) {
      const t = claim.tookOver;
      options.log(
        `${run.id}: took over the claim of pid ${t.pid} (since ${t.started}), gone from this host`,
      );
    }
    // Finished by another process between the check above and the claim.
    const finished = await finishedReport(dir, configHash);
    if (finished) return { status: "done", report: finished, skipped: true };
    const report = await trainAndEvaluate(rt, c, run, model, options, dir, config, configHash);
    await options.onRunFinished?.(report, dir);
    return { status: "ran", report, skipped: false };
  } finally {
    await claim.release();
  }
}

/** The run itself, in its claimed folder: train, evaluate, write the adapters and the report. */
async function trainAndEvaluate(
  rt: GpuRuntime,
  c: GridConfig,
  run: PlannedRun,
  model: LoadedModel,
  options: RunOptions,
  dir: string,
  config: Record<string, unknown>,
  configHash: string,
): Promise<RunReport> {
  const adapterConfig = c.adapters[run.adapter] as Record<string, unknown> | null;
  const gpu = model.gpu;
  const resolve = (p: string) => (p.startsWith("/") ? p : `${options.dataDir}/${p}`);
  try {
    // Host-side adapters: attached now, refreshed from the GPU and saved after training.
    const adapters = adapterConfig
      ? await adaptersForModel(model.config, adapterConfig, run.seed, {
        targets: c.targets,
        weights: async (key) => ({ rowNorms: await gpu.baseRowNorms(key) }),
      })
      : null;
    const trainableParams = adapters
      ? [...adapters.values()].reduce((n, a) => n + a.trainableParams(), 0)
      : 0;
    if (adapters) await gpu.attach(adapters);
    const train = adapterConfig ? { ...c.train, seed: run.seed } : undefined;
    const progress = (log: Parameters<typeof progressLine>[0], eta: number) =>
      options.log(`${run.id}: ${progressLine(log, c.train.steps, eta)}`);
    const metrics: RunReport["metrics"] = {};
    let samples: RunReport["samples"] = undefined;
    let heldOutRecords: InstructionRecord[] | null = null;
    let history: RunReport["lossCurve"] = [];
    let trainSeconds = 0;
    let tokens = 0;
    const t0 = performance.now();
    let evalStart = t0;
    if (run.family === "commonsense") {
      const cs = c.commonsense!;
      const kind = (adapterConfig as { kind?: string } | null)?.kind;
      const protocol = PROTOCOL[
        cs.protocol === "auto" ? (kind === "dora" ? "dora" : "llm-adapters") : cs.protocol
      ];
      const r = await runCommonsense(rt, gpu, model.tok, {
        protocol,
        dataDir: options.dataDir,
        tasks: cs.tasks.map(parseTask),
        trainFile: cs.trainFile ? resolve(cs.trainFile) : undefined,
        trainLimit: cs.trainLimit,
        testLimit: cs.testLimit,
        maxLen: cs.maxLen,
        train,
        eval: { beams: cs.beams, maxNew: cs.maxNew },
        fingerprint: configHash,
        checkpointPath: `${dir}/ckpt.safetensors`,
        progress,
        heldOutLimit: cs.heldOutLimit,
        choiceLimit: cs.choiceLimit,
      });
      history = r.history.map((h) => [h.step, h.loss]);
      trainSeconds = r.history.reduce((s, h) => s + h.seconds, 0);
      tokens = r.history.reduce((s, h) => s + h.tokens, 0);
      if (r.heldOut) metrics.heldOut = r.heldOut;
      const gold = await goldAnswers(options.dataDir, cs);
      metrics.commonsense = commonsenseMetrics(r, gold);
      samples = commonsenseSamples(r, gold, cs.samples);
    } else {
      const ins = c.mmlu!;
      if (train) {
        const records = ins.trainFile
          ? await loadRecordFile(resolve(ins.trainFile), false)
          : await commonsenseTrainRecords(options.dataDir, ins.fallbackTasks.map(parseTask), {
            limit: ins.trainLimit,
          });
        const examples = toExamples(
          model.tok,
          ins.trainLimit ? records.slice(0, ins.trainLimit) : records,
          ins.maxLen,
        );
        heldOutRecords = ins.trainFile
          ? records.slice(ins.trainLimit ?? records.length).slice(0, ins.heldOutLimit)
          : null;
        const trainer = new Trainer(rt, gpu, { seq: ins.maxLen, ...train }, examples, configHash);
        try {
          try {
            await trainer.resume(`${dir}/ckpt.safetensors`);
            options.log(`${run.id}: resumed from its checkpoint at step ${trainer.step}`);
          } catch (e) {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          }
          const h = await trainer.run({ checkpointPath: `${dir}/ckpt.safetensors`, progress });
          history = h.map((x) => [x.step, x.loss]);
          trainSeconds = h.reduce((s, x) => s + x.seconds, 0);
          tokens = h.reduce((s, x) => s + x.tokens, 0);
        } finally {
          trainer.release();
        }
      }
      evalStart = performance.now();
      if (ins.heldOutLimit > 0) {
        // Without a train file the fallback tasks' test splits are the records never trained on.
        heldOutRecords ??= ins.trainFile
          ? (await loadRecordFile(resolve(ins.trainFile), false))
            .slice(ins.trainLimit ?? Infinity).slice(0, ins.heldOutLimit)
          : await heldOutFallback(options.dataDir, ins.fallbackTasks, ins.heldOutLimit);
        if (heldOutRecords.length) {
          metrics.heldOut = await evaluateHeldOut(
            rt,
            gpu,
            model.tok,
            heldOutRecords,
            model.config.seqLen,
          );
        }
      }
      const m = await runMmlu(rt, gpu, model.tok, {
        dataDir: options.dataDir,
        subjects: ins.subjects ?? undefined,
        limit: ins.mmluLimit,
        shots: ins.shots,
      });
      metrics.mmlu = {
        ...m,
        categories: m.categories as Record<string, number>,
        ci: wilsonInterval(m.correct, m.total),
      };
    }
    const evalSeconds = run.family === "commonsense"
      ? Math.max(0, (performance.now() - t0) / 1000 - trainSeconds)
      : (performance.now() - evalStart) / 1000;
    let adapterChecksum: string | null = null;
    if (adapters) {
      for (const [key, layer] of gpu.adapters) {
        adapters.get(key)!.setParams(await layer.download(), `${run.id} ${key}`);
      }
      const bytes = encodeAdapters(Object.fromEntries(adapters), { run: run.id });
      await writeFileAtomic(`${dir}/adapters.safetensors`, bytes);
      adapterChecksum = await sha256(bytes);
    }
    const report: RunReport = RunReportSchema.parse({
      kind: "run",
      id: run.id,
      profile: c.profile,
      profileDescription: c.description || undefined,
      adapter: run.adapter,
      adapterConfig,
      family: run.family,
      seed: run.seed,
      configHash,
      config,
      git: await gitCommit(),
      deno: Deno.version.deno,
      device: rt.gpu.description,
      model: model.path,
      base: c.base,
      trainableParams,
      paperTrainableParams: c.paperParams[run.adapter] ?? null,
      metrics,
      samples,
      lossCurve: history,
      timings: {
        trainSeconds,
        evalSeconds,
        trainTokensPerSecond: trainSeconds > 0 ? tokens / trainSeconds : null,
      },
      adapterChecksum,
      date: new Date().toISOString(),
    });
    // Last: its presence means the run is complete.
    await writeFileAtomic(`${dir}/report.json`, JSON.stringify(report, null, 2) + "\n");
    return report;
  } finally {
    gpu.detach();
  }
}
