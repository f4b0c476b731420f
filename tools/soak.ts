/**
 * `deno task soak`: run a command many times and count how it ends — exit codes, signals, and the
 * glibc heap-check messages ("corrupted double-linked list", "double free", ...) that a crash in
 * native code prints. Bounded by a run count and a time limit; exits 1 unless every run exited 0.
 *
 *   deno task soak --runs 20 --minutes 60 -- deno task test
 *   deno task soak --runs 20 --malloc-check -- deno task reproduce --out /tmp/soak-out
 */
import { type CommandSpec, intOption, numberOption, runCli, UsageError } from "./cli.ts";

export const SPEC: CommandSpec = {
  name: "deno task soak",
  summary: "Run a command repeatedly and count clean exits, failures, signals and heap-check " +
    "messages (for crashes that show up once in many runs).",
  positionals: "-- COMMAND [ARGS...]",
  options: {
    runs: { type: "string", value: "N", default: "20", description: "Runs at most." },
    minutes: {
      type: "string",
      value: "M",
      default: "60",
      description: "Stop starting new runs after M minutes.",
    },
    "malloc-check": {
      type: "boolean",
      description: "Run with glibc's malloc checks (libc_malloc_debug, MALLOC_CHECK_=3, " +
        "MALLOC_PERTURB_) so heap corruption is caught close to where it happens.",
    },
    env: {
      type: "string",
      value: "K=V",
      multiple: true,
      description: "Extra environment for the command.",
    },
    log: {
      type: "string",
      value: "DIR",
      description: "Keep each run's output as DIR/run-<i>.log.",
    },
  },
  examples: [
    "deno task soak --runs 20 -- deno task test",
    "deno task soak --runs 5 --malloc-check --env DENO_WEBGPU_BACKEND=gl -- deno test -A tools/repro/egl_thread_exit/",
  ],
};

/** Lines of output that say native code crashed or glibc found heap corruption. */
const CRASH_PATTERNS = [
  /corrupted [^\n]+/,
  /double free or corruption[^\n]*/,
  /free\(\): [^\n]+/,
  /malloc(_consolidate)?\(\): [^\n]+/,
  /munmap_chunk\(\): [^\n]+/,
  /Segmentation fault/,
  /Deno has panicked/,
];

/** How one run ended. */
export interface SoakRun {
  /** 1-based run number. */
  run: number;
  /** Exit code (null when killed by a signal). */
  code: number | null;
  /** Signal name when killed by one. */
  signal: string | null;
  /** Wall seconds. */
  seconds: number;
  /** The first crash message found in the output, if any. */
  crash: string | null;
}

/** The first crash message in `text`, or null. */
export function crashMessage(text: string): string | null {
  for (const p of CRASH_PATTERNS) {
    const m = text.match(p);
    if (m) return m[0].trim();
  }
  return null;
}

const MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0";

if (import.meta.main) {
  await runCli(SPEC, async ({ values, positionals }) => {
    const runs = intOption("runs", values.runs, 1)!;
    const minutes = numberOption("minutes", values.minutes, 0)!;
    if (positionals.length === 0) throw new UsageError("no command given (put it after --)");
    const env: Record<string, string> = {};
    for (const kv of (values.env as string[] | undefined) ?? []) {
      const at = kv.indexOf("=");
      if (at <= 0) throw new UsageError(`--env ${kv}: expected K=V`);
      env[kv.slice(0, at)] = kv.slice(at + 1);
    }
    if (values["malloc-check"]) {
      try {
        await Deno.stat(MALLOC_DEBUG);
      } catch {
        throw new UsageError(`--malloc-check needs glibc's ${MALLOC_DEBUG}`);
      }
      Object.assign(env, { LD_PRELOAD: MALLOC_DEBUG, MALLOC_CHECK_: "3", MALLOC_PERTURB_: "165" });
    }
    const logDir = values.log as string | undefined;
    if (logDir) await Deno.mkdir(logDir, { recursive: true });
    const deadline = performance.now() + minutes * 60_000;
    const results: SoakRun[] = [];
    for (let run = 1; run <= runs && performance.now() < deadline; run++) {
      const started = performance.now();
      const out = await new Deno.Command(positionals[0], {
        args: positionals.slice(1),
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      if (logDir) await Deno.writeTextFile(`${logDir}/run-${run}.log`, text);
      const r: SoakRun = {
        run,
        code: out.signal ? null : out.code,
        signal: out.signal ?? null,
        seconds: Math.round((performance.now() - started) / 100) / 10,
        crash: crashMessage(text),
      };
      results.push(r);
      console.error(
        `[soak] run ${run}: ${
          r.signal ? `signal ${r.signal}` : `exit ${r.code}`
        } in ${r.seconds} s` +
          (r.crash ? ` — ${r.crash}` : ""),
      );
    }
    const clean = results.filter((r) => r.code === 0 && !r.crash).length;
    console.log(JSON.stringify({
      command: positionals.join(" "),
      env,
      runs: results.length,
      clean,
      failed: results.length - clean,
      crashes: results.filter((r) => r.crash || r.signal).length,
      results,
    }));
    return clean === results.length ? 0 : 1;
  });
}
