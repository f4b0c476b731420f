/**
 * `deno task device-check --out DIR`: the whole measurement of a GPU in one command, sized for a
 * lent machine's few minutes. Each step runs as a subprocess (the task's own `deno run` flags)
 * with its own time limit, all within `--budget` seconds (default 480):
 *
 * 1. `deno task perf` (full, recorded): the device's roofline, then every section, each rate
 *    beside its fraction of the roofline;
 * 2. `deno task scale --block --record`: one LLaMA-3-8B block at 4 × 256, per-kernel GPU time,
 *    the whole model extrapolated;
 * 3. `deno task scale --shape llama3-8b --batch 4 --seq 256 --record`: synthesize, stream-load
 *    with an NF4 base, a forward, one MoKA training step, an MMLU 5-shot batch and greedy
 *    decoding (every stage is timed on its own, and a stage that fails leaves the others).
 *
 * Each step's JSON (stdout) and log (stderr) go to DIR, with `summary.json` (device, kernel
 * variants, per-step ok / seconds / errors); PERFORMANCE.md is rendered again and the result
 * files the steps wrote are copied into DIR/results. `--small` runs small shapes instead (perf
 * roofline + a 256³ matmul, a block of mid-0.2b at 1 × 32, no 8B) so a test runs it on llvmpipe;
 * `--results DIR2` records into DIR2 (and DIR2/PERFORMANCE.md) instead of bench/results.
 *
 * On the lent GPU machine: `bash .device/on-device.sh deno task device-check --out $OUT`.
 */
import { z } from "../deps/zod.ts";
import { type CommandSpec, intOption, type ParsedCli, runCli, UsageError } from "../tools/cli.ts";
import { renderPerformance, resultsPlace } from "./perfdoc.ts";

/** The command to run on the lent GPU machine. */
export const DEVICE_COMMAND = "bash .device/on-device.sh deno task device-check --out $OUT";

/** The command-line interface of `deno task device-check`. */
export const SPEC: CommandSpec = {
  name: "deno task device-check",
  summary: "Measure a GPU in one command: perf with the device's roofline (recorded), one " +
    "LLaMA-3-8B block (scale --block), and the 8B end to end (scale --shape llama3-8b, 4 × 256); " +
    "each step's JSON, its log and a summary go to --out.",
  options: {
    out: { type: "string", value: "DIR", description: "Folder for the JSON, logs and summary." },
    small: {
      type: "boolean",
      description: "Small shapes for a CPU adapter: perf --only roofline,matmul --size 256, " +
        "scale --block --shape mid-0.2b --batch 1 --seq 32, no 8B.",
    },
    results: {
      type: "string",
      value: "DIR",
      description: "Record into this folder (and its PERFORMANCE.md) instead of bench/results.",
    },
    budget: {
      type: "string",
      value: "S",
      default: "480",
      description: "Seconds for all steps together; each also has its own limit.",
    },
  },
  notes: "Steps and their limits (seconds; never past the budget):\n" +
    "  perf    deno task perf --record                                  160 (small: 90)\n" +
    "  block   deno task scale --block --record                          80 (small: 120)\n" +
    "  scale   deno task scale --shape llama3-8b --batch 4 --seq 256\n" +
    "          --record (load, forward, train, mmlu, generate)          240 (not with --small)\n" +
    "Writes DIR/<step>.json (the step's stdout), DIR/<step>.log (stderr), DIR/summary.json,\n" +
    "DIR/PERFORMANCE.md and DIR/results/ (the result files the steps recorded). Exits 1 when\n" +
    "a step failed. On the lent GPU machine:\n" +
    `  ${DEVICE_COMMAND}`,
  examples: [
    "deno task device-check --out /tmp/check",
    "deno task device-check --small --out /tmp/check --results /tmp/check/recorded",
    DEVICE_COMMAND.replace("bash .device/on-device.sh ", ""),
  ],
};

/** One step's outcome in the summary. */
export const StepSummarySchema = z.object({
  name: z.enum(["perf", "block", "scale"]),
  command: z.array(z.string()),
  ok: z.boolean(),
  exit_code: z.number().int().nullable(),
  seconds: z.number().nonnegative(),
  timeout_s: z.number().positive(),
  timed_out: z.boolean(),
  json: z.string().nullable(),
  log: z.string(),
  error: z.string().optional(),
}).strict();

/** `summary.json`. */
export const SummarySchema = z.object({
  kind: z.literal("device-check"),
  command: z.literal(DEVICE_COMMAND),
  small: z.boolean(),
  device: z.string().nullable(),
  variants: z.string().nullable(),
  started: z.string(),
  seconds: z.number().nonnegative(),
  budget_s: z.number().positive(),
  ok: z.boolean(),
  steps: z.array(StepSummarySchema),
  results: z.string(),
  performance_md: z.string().nullable(),
  copied: z.array(z.string()),
}).strict();

/** The summary's type. */
export type DeviceCheckSummary = z.infer<typeof SummarySchema>;

/** What the perf step's JSON must hold (the roofline and the kernel variants at least). */
export const PerfStepSchema = z.object({
  adapter: z.string(),
  variants: z.string(),
  roofline_f32_gflops: z.number().positive(),
  roofline_copy_gbps: z.number().positive(),
  roofline_f16_gflops: z.number().positive().optional(),
  roofline_f32_timing: z.enum(["gpu-timestamp", "wall"]),
}).passthrough();

const KernelShare = z.object({
  kernel: z.string(),
  ms: z.number(),
  share: z.number(),
  dispatches: z.number().int(),
}).strict();

/** What the block step's JSON must hold. */
export const BlockStepSchema = z.object({
  block: z.literal(true),
  ok: z.boolean(),
  shape: z.string(),
  device: z.string(),
  variants: z.string(),
  batch: z.number().int().positive(),
  seq: z.number().int().positive(),
  checkpointing: z.boolean(),
  trainable_params: z.number().int().positive(),
  block_step_gpu_ms: z.number(),
  block_kernels: z.array(KernelShare).min(1),
  head_kernels: z.array(KernelShare).min(1),
  block_groups: z.array(z.object({ group: z.string(), ms: z.number() }).passthrough()),
  extrapolated: z.literal(true),
  extrapolated_model_step_s: z.number(),
}).passthrough();

/** What the end-to-end scale step's JSON must hold. */
export const ScaleStepSchema = z.object({
  shape: z.string(),
  ok: z.boolean(),
  device: z.string(),
  variants: z.string(),
  trainable_params: z.number().int().positive().optional(),
}).passthrough();

const ROOT = new URL("..", import.meta.url).pathname;

/** A task's `deno run` arguments from deno.json (its permission flags and script). */
function taskArgs(task: string): string[] {
  const tasks = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url))).tasks;
  const words = String(tasks[task]).trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run") throw new Error(`task ${task}: not deno run`);
  return words.slice(1);
}

interface Step {
  name: "perf" | "block" | "scale";
  task: string;
  args: string[];
  limit: number;
}

/** The steps of a check. */
function steps(small: boolean, results: string[]): Step[] {
  if (small) {
    return [
      {
        name: "perf",
        task: "perf",
        args: ["--only", "roofline,matmul", "--size", "256", "--record", ...results],
        limit: 90,
      },
      {
        name: "block",
        task: "scale",
        args: [
          "--block",
          "--shape",
          "mid-0.2b",
          "--batch",
          "1",
          "--seq",
          "32",
          "--vocab",
          "256",
          "--record",
          ...results,
        ],
        limit: 120,
      },
    ];
  }
  return [
    { name: "perf", task: "perf", args: ["--record", ...results], limit: 160 },
    { name: "block", task: "scale", args: ["--block", "--record", ...results], limit: 80 },
    {
      name: "scale",
      task: "scale",
      args: [
        "--shape",
        "llama3-8b",
        "--batch",
        "4",
        "--seq",
        "256",
        "--record",
        ...results,
      ],
      limit: 240,
    },
  ];
}

/** The JSON a step printed: all of stdout, else its last line that parses. */
function parseOutput(stdout: string): Record<string, unknown> | null {
  try {
    return JSON.parse(stdout);
  } catch {
    for (const line of stdout.trim().split("\n").reverse()) {
      try {
        return JSON.parse(line);
      } catch { /* not this line */ }
    }
    return null;
  }
}

/** Run the check; returns its summary (also written to `out/summary.json`). */
export async function deviceCheck(options: {
  out: string;
  small: boolean;
  results?: string;
  budgetS: number;
  log?: (m: string) => void;
}): Promise<DeviceCheckSummary> {
  const log = options.log ?? ((m: string) => console.error(`[device-check] ${m}`));
  const out = options.out;
  await Deno.mkdir(out, { recursive: true });
  // The steps run from the repository's root: a relative folder is resolved here first.
  const results = options.results === undefined
    ? undefined
    : options.results.startsWith("/")
    ? options.results
    : `${Deno.cwd()}/${options.results}`;
  const place = resultsPlace(results);
  const resultsArgs = results === undefined ? [] : ["--results", results];
  const started = new Date();
  const t0 = performance.now();
  const deadline = t0 + options.budgetS * 1000;
  const before = new Map<string, number>();
  try {
    for await (const e of Deno.readDir(place.results)) {
      const info = await Deno.stat(new URL(e.name, place.results));
      before.set(e.name, info.mtime?.getTime() ?? 0);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const summary: DeviceCheckSummary = {
    kind: "device-check",
    command: DEVICE_COMMAND,
    small: options.small,
    device: null,
    variants: null,
    started: started.toISOString(),
    seconds: 0,
    budget_s: options.budgetS,
    ok: true,
    steps: [],
    results: place.results.pathname,
    performance_md: null,
    copied: [],
  };
  for (const step of steps(options.small, resultsArgs)) {
    const left = (deadline - performance.now()) / 1000;
    const limit = Math.max(1, Math.min(step.limit, Math.floor(left)));
    const args = [...taskArgs(step.task), ...step.args];
    const entry: DeviceCheckSummary["steps"][number] = {
      name: step.name,
      command: ["deno", "task", step.task, ...step.args],
      ok: false,
      exit_code: null,
      seconds: 0,
      timeout_s: limit,
      timed_out: false,
      json: null,
      log: `${step.name}.log`,
    };
    summary.steps.push(entry);
    if (left < 5) {
      entry.error = `skipped: ${left.toFixed(0)} s of the ${options.budgetS} s budget left`;
      summary.ok = false;
      log(`${step.name}: ${entry.error}`);
      await Deno.writeTextFile(`${out}/${entry.log}`, entry.error + "\n");
      continue;
    }
    log(`${step.name}: deno task ${step.task} ${step.args.join(" ")} (limit ${limit} s)`);
    const s0 = performance.now();
    const controller = new AbortController();
    const timer = setTimeout(() => {
      entry.timed_out = true;
      controller.abort();
    }, limit * 1000);
    let stdout = "";
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args,
        cwd: ROOT,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: controller.signal,
      }).spawn();
      const logFile = await Deno.open(`${out}/${entry.log}`, {
        write: true,
        create: true,
        truncate: true,
      });
      const [status, text] = await Promise.all([
        child.status,
        new Response(child.stdout).text(),
        child.stderr.pipeTo(logFile.writable),
      ]);
      stdout = text;
      entry.exit_code = status.code;
    } catch (e) {
      entry.error = (e as Error).message;
    } finally {
      clearTimeout(timer);
    }
    entry.seconds = Math.round((performance.now() - s0) / 100) / 10;
    const json = parseOutput(stdout);
    if (json) {
      entry.json = `${step.name}.json`;
      await Deno.writeTextFile(`${out}/${entry.json}`, JSON.stringify(json, null, 2) + "\n");
      summary.device ??= String(json.adapter ?? json.device ?? "") || null;
      summary.variants ??= typeof json.variants === "string" ? json.variants : null;
    } else if (stdout.trim()) {
      await Deno.writeTextFile(`${out}/${step.name}.stdout`, stdout);
    }
    entry.ok = entry.exit_code === 0 && json !== null && json.ok !== false;
    if (!entry.ok) {
      entry.error ??= entry.timed_out
        ? `timed out after ${limit} s`
        : json === null
        ? `exit ${entry.exit_code}, no JSON on stdout`
        : String(json.error ?? `exit ${entry.exit_code}`);
      summary.ok = false;
    }
    log(`${step.name}: ${entry.ok ? "ok" : `FAILED (${entry.error})`}, ${entry.seconds} s`);
  }
  // PERFORMANCE.md again from every recorded result, and the files this check wrote.
  try {
    await renderPerformance(place);
    await Deno.copyFile(place.document, `${out}/PERFORMANCE.md`);
    summary.performance_md = place.document.pathname;
  } catch (e) {
    summary.ok = false;
    log(`PERFORMANCE.md: ${(e as Error).message}`);
  }
  try {
    await Deno.mkdir(`${out}/results`, { recursive: true });
    for await (const e of Deno.readDir(place.results)) {
      if (!e.isFile || !e.name.endsWith(".json")) continue;
      const info = await Deno.stat(new URL(e.name, place.results));
      const mtime = info.mtime?.getTime() ?? 0;
      if (before.get(e.name) === mtime || mtime < started.getTime() - 1000) continue;
      await Deno.copyFile(new URL(e.name, place.results), `${out}/results/${e.name}`);
      summary.copied.push(`results/${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  summary.seconds = Math.round((performance.now() - t0) / 100) / 10;
  SummarySchema.parse(summary);
  await Deno.writeTextFile(`${out}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
  return summary;
}

async function main({ values }: ParsedCli): Promise<number> {
  if (values.out === undefined) throw new UsageError("--out DIR is required");
  const budgetS = intOption("budget", values.budget, 10, 3600)!;
  const out = values.out as string;
  try {
    await Deno.mkdir(out, { recursive: true });
    await Deno.writeTextFile(`${out}/.write-check`, "");
    await Deno.remove(`${out}/.write-check`);
  } catch (e) {
    throw new UsageError(`--out ${out}: not a writable folder (${(e as Error).message})`);
  }
  const summary = await deviceCheck({
    out,
    small: values.small === true,
    results: values.results as string | undefined,
    budgetS,
  });
  console.log(JSON.stringify(summary, null, 2));
  return summary.ok ? 0 : 1;
}

if (import.meta.main) await runCli(SPEC, main);
