/**
 * Runs grid cells: load and quantize the base once per process, attach the run's adapters
 * (seeded; detached again after the run), fine-tune
 * and evaluate through the task pipelines, save the adapter file, write `report.json` (validated)
 * last. A run whose report exists with the same config hash is skipped; a run interrupted after
 * a training checkpoint resumes from it (`ckpt.safetensors` in the run folder).
 */
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import { encodeAdapters } from "../../models/adapters/io.ts";
import { adaptersForModel } from "../../models/llama/attach.ts";
import type { LlamaConfig } from "../../models/llama/config.ts";
import { GpuLlama } from "../../models/llama/gpu/model.ts";
import { openModel } from "../../models/llama/open.ts";
import { progressLine, Trainer } from "../../models/llama/train.ts";
import { defaultModelPath } from "../../models/paths.ts";
import type { TextTokenizer } from "../../models/tokenizer/tokenizer.ts";
import { PROTOCOL } from "../../tasks/alpaca.ts";
import { loadRecordFile, parseTask } from "../../tasks/commonsense/data.ts";
import {
  commonsenseTrainRecords,
  runCommonsense,
  runMmlu,
  toExamples,
} from "../../tasks/pipeline.ts";
import { parseRunReport, type RunReport, RunReportSchema } from "../schema.ts";
import { canonicalJson, type GridConfig, type PlannedRun, runConfig, sha256 } from "./config.ts";

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

/** Load the grid's model (llama2.c file or HF folder) onto the GPU once, in the grid's base format. */
export async function loadGridModel(rt: GpuRuntime, c: GridConfig): Promise<LoadedModel> {
  const opened = await openModel(
    c.model ?? defaultModelPath("stories260K.bin"),
    c.tokenizer ?? undefined,
  );
  try {
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

/** Execute one run (or return its existing report). `log` gets progress lines. */
export async function executeRun(
  rt: GpuRuntime,
  c: GridConfig,
  run: PlannedRun,
  model: LoadedModel,
  options: { out: string; dataDir: string; log: (m: string) => void },
): Promise<{ report: RunReport; skipped: boolean }> {
  const dir = `${options.out}/runs/${run.id}`;
  const config = runConfig(c, run);
  const configHash = await sha256(canonicalJson(config));
  const done = await finishedReport(dir, configHash);
  if (done) return { report: done, skipped: true };
  await Deno.mkdir(dir, { recursive: true });
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
      options.log(`${run.id}: ${progressLine(log, Number(c.train.steps), eta)}`);
    const metrics: RunReport["metrics"] = {};
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
      });
      history = r.history.map((h) => [h.step, h.loss]);
      trainSeconds = r.history.reduce((s, h) => s + h.seconds, 0);
      tokens = r.history.reduce((s, h) => s + h.tokens, 0);
      metrics.commonsense = {
        tasks: r.eval.tasks as Record<string, never>,
        average: r.eval.average,
      };
    } else {
      const ins = c.instruction!;
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
        const trainer = new Trainer(rt, gpu, { seq: ins.maxLen, ...train }, examples, configHash);
        try {
          try {
            await trainer.resume(`${dir}/ckpt.safetensors`);
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
      const m = await runMmlu(rt, gpu, model.tok, {
        dataDir: options.dataDir,
        subjects: ins.subjects ?? undefined,
        limit: ins.mmluLimit,
        shots: ins.shots,
      });
      metrics.mmlu = { ...m, categories: m.categories as Record<string, number> };
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
      await Deno.writeFile(`${dir}/adapters.safetensors`, bytes);
      adapterChecksum = await sha256(bytes);
    }
    const report: RunReport = RunReportSchema.parse({
      kind: "run",
      id: run.id,
      profile: c.profile,
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
      lossCurve: history,
      timings: {
        trainSeconds,
        evalSeconds,
        trainTokensPerSecond: trainSeconds > 0 ? tokens / trainSeconds : null,
      },
      adapterChecksum,
      date: new Date().toISOString(),
    });
    const tmp = `${dir}/report.json.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(report, null, 2) + "\n");
    await Deno.rename(tmp, `${dir}/report.json`); // last: its presence means the run is complete
    return { report, skipped: false };
  } finally {
    gpu.detach();
  }
}
