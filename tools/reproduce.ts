/**
 * `deno task reproduce`: the main job. First the kernel self-check (a broken adapter fails in
 * seconds), then the reproduction grid — adapters × task families × seeds — of a profile
 * (`smoke`, the default on this machine; `full`, the paper's protocol, needs --model and the data
 * files) or a JSON config. Finished runs are skipped, interrupted ones resume. Every argument,
 * the config and the paths are checked before the GPU starts.
 *
 *   deno task reproduce [--profile smoke|full] [--config grid.json] [--model PATH]
 *                       [--shard i/n|auto] [--out DIR] [--data DIR] [--only-selfcheck]
 *                       [--publish URL [--publish-adapters]]
 *   deno task reproduce merge --out DIR SHARD_DIR...
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { selfCheck } from "../kernels/selfcheck.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import {
  checkContext,
  type GridConfig,
  parseGridConfig,
  parseShard,
  planGrid,
  type PlannedRun,
  profile,
  PROFILES,
  shardFromEnv,
  shardRuns,
} from "../grid/config.ts";
import { executeRun, loadGridModel } from "../grid/runner.ts";
import { describeClaim, tempPath, writeFileAtomic } from "../grid/claim.ts";
import { readModelConfig } from "../models/llama/open.ts";
import { collectReports, mergeShards, writeGridSummary } from "../grid/summary.ts";
import { writeStaticPages } from "../reports/html.ts";
import { publishAdapters, publishRun } from "../reports/publish.ts";
import type { RunReport } from "../grid/schema.ts";
import { ensureSystem } from "./setup.ts";
import {
  choiceOption,
  type CommandSpec,
  type ParsedCli,
  pathOption,
  runCli,
  UsageError,
} from "./cli.ts";

/** The names `--profile` accepts: the named profiles, and `full` for `full-llama3-8b`. */
export const PROFILE_NAMES: string[] = [...Object.keys(PROFILES), "full"];

/** The command-line interface of `deno task reproduce`. */
export const SPEC: CommandSpec = {
  name: "deno task reproduce",
  summary: "Run the kernel self-check, then the reproduction grid (adapters × task families × " +
    "seeds) of a profile or a JSON config, skipping finished runs and resuming interrupted ones.",
  positionals: "[merge SHARD_DIR...]",
  options: {
    out: {
      type: "string",
      value: "DIR",
      default: "reports/out",
      description: "Output: selfcheck.json, runs/<id>/, grid.json, HTML.",
    },
    profile: {
      type: "string",
      value: "NAME",
      default: "smoke",
      description: `${PROFILE_NAMES.join(", ")} (full = full-llama3-8b; full ones need --model).`,
    },
    config: {
      type: "string",
      value: "FILE",
      description: "JSON grid config used instead of --profile (default: none).",
    },
    model: {
      type: "string",
      value: "PATH",
      description: "HF folder or llama2.c .bin (default: the config's, else stories260K).",
    },
    shard: {
      type: "string",
      value: "i/n|auto",
      description: "Only every n-th run from run i, 0 ≤ i < n; auto: i from " +
        "JOB_COMPLETION_INDEX, n from MOKA_SHARDS (default: all runs).",
    },
    publish: {
      type: "string",
      value: "URL",
      description: "Report server to POST each finished run to, with the bearer token in " +
        "MOKA_PUBLISH_TOKEN (default: none).",
    },
    "publish-adapters": {
      type: "boolean",
      description: "With --publish, also upload each run's adapters.safetensors.",
    },
    data: {
      type: "string",
      value: "DIR",
      description: "Data folder (default: MOKA_DATA_DIR, else ../shared/data).",
    },
    "only-selfcheck": { type: "boolean", description: "Stop after the kernel self-check." },
  },
  notes: [
    "Order: the options, the --config file (read, parsed as JSON, validated field by field), the",
    "shard, the model path, a test write into --out, the --data folder and maxLen against the",
    "model's context (its header) are all checked first; only then does the GPU start, for the",
    "self-check (written to DIR/selfcheck.json) and the grid.",
    "",
    "Several processes may share one --out: each run is claimed (runs/<id>/run.lock) by the",
    "first to reach it, the others go on to the next run and list at the end the runs they left.",
    "A claim whose process is gone from this host is taken over.",
    "",
    "Exit codes: 0 done; 2 a bad option, an unreadable, non-JSON or invalid --config (the message",
    "names the file and the field) or a missing path, found before any GPU work, so an existing",
    "selfcheck.json is left as it is; 1 a failed self-check or a failed run.",
    "",
    "--publish: every finished run of this shard (also one finished earlier, so a restarted",
    "process publishes what a crash left unpublished) goes to POST URL/api/runs; the server",
    "answers an identical report with 200, a different one under the same id with 409 (named at",
    "the end, exit 1, the grid goes on). Network errors and 5xx are retried with backoff.",
    "",
    "merge: check every SHARD_DIR (each must hold finished runs) and what --out holds, then copy",
    "the runs into --out and write grid.json and the HTML pages. A run id found twice must have",
    "equal reports; a conflict is named and nothing is written.",
  ].join("\n"),
  examples: [
    "deno task reproduce --out /tmp/smoke",
    "deno task reproduce --profile full --model /models/Meta-Llama-3-8B --shard 0/4 --out out-0",
    "deno task reproduce merge --out reports/out out-0 out-1 out-2 out-3",
    "MOKA_PUBLISH_TOKEN=… deno task reproduce --shard auto --publish https://reports.example",
  ],
};

/** Everything a reproduction needs, checked before the GPU starts. */
export interface ReproducePlan {
  /** Output folder. */
  out: string;
  /** The validated grid. */
  grid: GridConfig;
  /** Every run of the grid. */
  all: PlannedRun[];
  /** The runs of this shard (all of them without --shard). */
  runs: PlannedRun[];
  /** Where finished runs are published (--publish), if anywhere. */
  publish?: PublishTarget;
  /** Data folder. */
  dataDir: string;
  /** Stop after the self-check. */
  onlySelfcheck: boolean;
}

/** The raw grid config of `--config FILE` (read and parsed as JSON) or of the named profile. */
async function rawConfig(values: ParsedCli["values"]): Promise<unknown> {
  const file = values.config as string | undefined;
  if (file === undefined) {
    return profile(choiceOption("profile", values.profile, PROFILE_NAMES));
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "not found" : (e as Error).message;
    throw new UsageError(`--config ${file}: ${why}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--config ${file}: not JSON (${(e as Error).message})`);
  }
}

/** `path` exists, else a {@link UsageError} naming the config field it came from. */
async function configPath(source: string, field: string, path: string): Promise<void> {
  try {
    await Deno.stat(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "not found" : (e as Error).message;
    throw new UsageError(`${source}: field ${field}: ${path}: ${why}`);
  }
}

/**
 * Check the arguments, the grid config, the model paths, that --out can be written (creating
 * it), the data paths and the families' maxLen against the model's header, in that order, without
 * touching the GPU; every problem is a {@link UsageError} naming the option, file or field.
 */
export async function planReproduction(values: ParsedCli["values"]): Promise<ReproducePlan> {
  const out = values.out as string;
  const onlySelfcheck = values["only-selfcheck"] === true;
  let shard;
  if (values.shard !== undefined) {
    try {
      shard = values.shard === "auto"
        ? shardFromEnv((name) => Deno.env.get(name))
        : parseShard(values.shard as string);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const publish = publishTarget(values);
  const raw = await rawConfig(values);
  const source = values.config !== undefined
    ? `--config ${values.config}`
    : `profile ${values.profile}`;
  const model = values.model as string | undefined;
  let grid: GridConfig;
  try {
    grid = parseGridConfig(model ? { ...raw as object, model } : raw, source);
  } catch (e) {
    // One line: adapter spec errors span several.
    throw new UsageError((e as Error).message.replace(/\s*\n\s*/g, " "));
  }
  if ((grid.profile === "full" || grid.profile.startsWith("full-")) && !grid.model) {
    throw new UsageError(`the ${grid.profile} profile needs --model PATH (a LLaMA checkpoint)`);
  }
  const all = planGrid(grid);
  const runs = shard ? shardRuns(all, shard) : all;
  if (model !== undefined) await pathOption("model", model);
  else if (grid.model) await configPath(source, "model", grid.model);
  if (grid.tokenizer) await configPath(source, "tokenizer", grid.tokenizer);
  // Before the data checks: a run must not get far only to find it cannot write its results.
  await writableFolder(out);
  const data = (values.data as string | undefined) ?? dataDir();
  // The self-check alone reads no data: a missing default folder does not stop it.
  if (values.data !== undefined || !onlySelfcheck) await pathOption("data", data, "dir");
  if (!onlySelfcheck) {
    const embedded = defaultModelPath("stories260K.bin");
    if (!grid.model && !await Deno.stat(embedded).then(() => true, () => false)) {
      throw new UsageError(`the embedded model ${embedded} is missing (MOKA_MODELS_DIR)`);
    }
    // Training files of this shard's trained runs (a non-null adapter config), resolved as the
    // runner does.
    const resolve = (p: string) => (p.startsWith("/") ? p : `${data}/${p}`);
    const trained = runs.filter((r) => grid.adapters[r.adapter] !== null);
    const csFile = grid.commonsense?.trainFile;
    if (csFile && trained.some((r) => r.family === "commonsense")) {
      await configPath(source, "commonsense.trainFile", resolve(csFile));
    }
    const mmluFile = grid.mmlu?.trainFile;
    if (mmluFile && trained.some((r) => r.family === "mmlu")) {
      await configPath(source, "mmlu.trainFile", resolve(mmluFile));
    }
    // The header alone (a .bin's first bytes, a folder's config.json): no weights are read.
    const modelPath = grid.model ?? embedded;
    let seqLen: number;
    try {
      seqLen = (await readModelConfig(modelPath)).seqLen;
    } catch (e) {
      throw new UsageError(`${modelPath}: ${(e as Error).message.replace(/\s*\n\s*/g, " ")}`);
    }
    try {
      checkContext(grid, seqLen, source);
    } catch (e) {
      throw new UsageError(`${(e as Error).message} (${modelPath})`);
    }
  }
  return { out, grid, all, runs, dataDir: data, onlySelfcheck, publish };
}

/** Where finished runs go: --publish's URL and the token from MOKA_PUBLISH_TOKEN. */
export interface PublishTarget {
  /** The report server's root URL. */
  url: string;
  /** Its bearer token. */
  token: string;
  /** Upload the adapter files too. */
  adapters: boolean;
}

function publishTarget(values: ParsedCli["values"]): PublishTarget | undefined {
  if (values.publish === undefined) {
    if (values["publish-adapters"]) throw new UsageError("--publish-adapters needs --publish URL");
    return undefined;
  }
  const url = values.publish as string;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--publish ${url}: not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UsageError(`--publish ${url}: expected an http:// or https:// URL`);
  }
  const token = Deno.env.get("MOKA_PUBLISH_TOKEN");
  if (!token) {
    throw new UsageError(
      "--publish needs the report server's bearer token in MOKA_PUBLISH_TOKEN",
    );
  }
  return { url, token, adapters: values["publish-adapters"] === true };
}

/** Publish one finished run (and its adapter file); the error line when that failed. */
async function publishFinished(
  target: PublishTarget,
  out: string,
  report: RunReport,
): Promise<string | null> {
  try {
    const r = await publishRun(target.url, target.token, report);
    let line = `published ${report.id} (${r.status})`;
    if (target.adapters && report.adapterChecksum) {
      const bytes = await Deno.readFile(`${out}/runs/${report.id}/adapters.safetensors`);
      const a = await publishAdapters(target.url, target.token, report.id, bytes);
      line += `, adapters (${a.status})`;
    }
    console.log(`  ${line}`);
    return null;
  } catch (e) {
    console.log(`  publish failed: ${(e as Error).message}`);
    return (e as Error).message;
  }
}

/**
 * `--out DIR` can be written: created if missing, then a file created and removed in it (and in
 * its runs/ folder when there is one); else one {@link UsageError} line naming the folder.
 */
export async function writableFolder(out: string): Promise<void> {
  const probe = async (dir: string) => {
    const path = tempPath(`${dir}/.write-check`);
    await Deno.writeTextFile(path, "", { createNew: true });
    await Deno.remove(path);
  };
  try {
    await Deno.mkdir(out, { recursive: true });
    await probe(out);
    if (await Deno.stat(`${out}/runs`).then((i) => i.isDirectory, () => false)) {
      await probe(`${out}/runs`);
    }
  } catch (e) {
    // Deno's messages end in the call and the path (ours, with a temp name): the reason is enough.
    const why = (e as Error).message.split(/: (?:open|mkdir|remove|stat) /)[0];
    throw new UsageError(`--out ${out}: not a writable folder (${why})`);
  }
}

/** A run of the base model alone: the `base` adapter or a null adapter config (no training). */
export function isBaseOnly(grid: GridConfig, run: PlannedRun): boolean {
  return run.adapter === "base" || grid.adapters[run.adapter] === null;
}

/**
 * What predicts a run's duration, most specific first: the same adapter in the same family, any
 * trained (or base-only) run of the family, any trained (or base-only) run.
 */
export function runKinds(grid: GridConfig, run: PlannedRun): string[] {
  const trained = isBaseOnly(grid, run) ? "base" : "trained";
  return [`${run.family}/${run.adapter}`, `${run.family}/${trained}`, trained];
}

/** A run that finished in this process (not skipped as already done), and how long it took. */
export interface MeasuredRun {
  /** {@link runKinds} of the run. */
  kinds: string[];
  /** Wall seconds. */
  seconds: number;
}

/**
 * Seconds the `remaining` runs (their {@link runKinds}) should take: each the mean of the measured
 * runs of its most specific kind that has any. Null when a remaining run has no measured kind at
 * all (no trained run has finished yet: base-only runs would say far too little).
 */
export function estimateRemainingSeconds(
  measured: MeasuredRun[],
  remaining: string[][],
): number | null {
  const byKind = new Map<string, number[]>();
  for (const m of measured) {
    for (const k of m.kinds) byKind.set(k, [...(byKind.get(k) ?? []), m.seconds]);
  }
  let total = 0;
  for (const kinds of remaining) {
    const hit = kinds.find((k) => byKind.has(k));
    if (hit === undefined) return null;
    const xs = byKind.get(hit)!;
    total += xs.reduce((a, b) => a + b, 0) / xs.length;
  }
  return total;
}

/** "42 s", "5 min 20 s" or "3 h 7 min". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * `merge --out DIR SHARD_DIR...`: the shard folders and --out are checked, then the runs merged
 * all or nothing ({@link mergeShards}).
 */
async function merge(out: string, shards: string[]): Promise<void> {
  if (shards.length === 0) throw new UsageError("merge needs at least one SHARD_DIR");
  for (const dir of shards) {
    try {
      await pathOption("merge", dir, "dir");
    } catch (e) {
      throw new UsageError((e as Error).message.replace(/^--merge /, "merge: shard folder "));
    }
  }
  await writableFolder(out);
  const n = await mergeShards(out, shards);
  await writeStaticPages(out, await collectReports(out));
  console.log(`merged ${n} runs from ${shards.length} shard folders into ${out}/grid.json`);
}

/** The self-check, then the grid's runs; the exit code. */
async function reproduce(plan: ReproducePlan): Promise<number> {
  const { out, grid, all, runs } = plan;
  // A machine without a GPU needs Mesa's Vulkan driver: installed here as root, else named.
  if (!(await ensureSystem("reproduce", { quiet: true }))) return 1;
  const rt = await GpuRuntime.create();
  console.log(`adapter: ${rt.gpu.description} (backend ${rt.gpu.backend}, f16 ${rt.gpu.hasF16})`);
  const started = performance.now();
  const results = await selfCheck(rt);
  const failed = results.filter((r) => !r.ok);
  for (const r of failed) {
    console.log(`FAIL ${r.kernel} ${JSON.stringify(r.spec)} rel.err ${r.relativeError}`);
  }
  await Deno.mkdir(out, { recursive: true });
  await writeFileAtomic(
    `${out}/selfcheck.json`,
    JSON.stringify(
      {
        kind: "selfcheck",
        date: new Date().toISOString(),
        adapter: rt.gpu.description,
        backend: rt.gpu.backend,
        deno: Deno.version.deno,
        seconds: (performance.now() - started) / 1000,
        results,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(
    `kernel self-check: ${results.length - failed.length} passed, ${failed.length} failed`,
  );
  if (failed.length) return 1;
  if (plan.onlySelfcheck) return 0;

  const model = await loadGridModel(rt, grid, defaultModelPath("stories260K.bin"));
  console.log(
    `grid ${grid.profile}: ${runs.length} of ${all.length} runs on ${model.path} (${grid.base} base)`,
  );
  const measured: MeasuredRun[] = [];
  const leftToOthers: string[] = [];
  const publishFailures: string[] = [];
  for (const [i, run] of runs.entries()) {
    const t = performance.now();
    const outcome = await executeRun(rt, grid, run, model, {
      out,
      dataDir: plan.dataDir,
      log: (m) => console.log(`  ${m}`),
    });
    if (outcome.status === "claimed") {
      leftToOthers.push(`${run.id} (${describeClaim(outcome.heldBy)}; ${outcome.lock})`);
      console.log(`[${i + 1}/${runs.length}] ${run.id}: claimed by another process, skipped`);
      continue;
    }
    const { report, skipped } = outcome;
    if (plan.publish) {
      const failed = await publishFinished(plan.publish, out, report);
      if (failed) publishFailures.push(failed);
    }
    const seconds = (performance.now() - t) / 1000;
    // A skipped run took no time and says nothing about how long the others take.
    if (!skipped) measured.push({ kinds: runKinds(grid, run), seconds });
    const eta = estimateRemainingSeconds(
      measured,
      runs.slice(i + 1).map((r) => runKinds(grid, r)),
    );
    const m = report.metrics;
    const scores = [
      m.heldOut ? `held-out loss ${m.heldOut.loss.toFixed(3)}` : "",
      m.commonsense?.choiceAverage !== undefined
        ? `multiple choice ${(100 * m.commonsense.choiceAverage).toFixed(1)} %`
        : "",
      m.commonsense ? `generation ${(100 * m.commonsense.average).toFixed(1)} %` : "",
      m.mmlu ? `MMLU ${(100 * m.mmlu.average).toFixed(1)} %` : "",
    ].filter(Boolean).join(", ");
    console.log(
      `[${i + 1}/${runs.length}] ${run.id}: ${
        skipped ? "already done" : `${seconds.toFixed(0)} s`
      }, ${scores}, ${report.trainableParams} trainable · ETA ${
        eta === null ? "after the first trained run" : formatDuration(eta)
      }`,
    );
  }
  const rows = await writeGridSummary(out);
  await writeStaticPages(out, await collectReports(out));
  console.log(
    `wrote ${out}/grid.json and index.html (${rows.length} runs), runs/<id>/{report.json,index.html}`,
  );
  if (leftToOthers.length) {
    // Not a failure: the holders write those reports; rerun (or merge) once they are done.
    console.log(`${leftToOthers.length} runs left to other processes:`);
    for (const line of leftToOthers) console.log(`  ${line}`);
  }
  if (publishFailures.length) {
    // The results are safe in --out: rerun with --publish (finished runs are published again).
    console.error(`${publishFailures.length} runs not published:`);
    for (const line of publishFailures) console.error(`  ${line}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  await runCli(SPEC, async ({ values, positionals }) => {
    if (positionals[0] === "merge") return await merge(values.out as string, positionals.slice(1));
    if (positionals.length) {
      throw new UsageError(`unknown command ${positionals[0]} (only "merge")`);
    }
    return await reproduce(await planReproduction(values));
  });
}
