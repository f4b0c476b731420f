/**
 * Every `deno task` tool follows tools/cli.ts: `--help` exits 0 and lists each option; an
 * unknown option or a bad value is one line (and the usage hint) on stderr, exit 2, no stack
 * trace. The tools run as `deno task` runs them (deno.json's permission flags), as subprocesses.
 */
import assert from "node:assert/strict";
import type { CommandSpec } from "./cli.ts";
import { SPEC as EVAL_SPEC } from "./eval.ts";
import { SPEC as EXPRESSIVENESS_SPEC } from "./expressiveness.ts";
import {
  estimateRemainingSeconds,
  formatDuration,
  type MeasuredRun,
  runKinds,
  SPEC as REPRODUCE_SPEC,
} from "./reproduce.ts";
import { SPEC as SERVE_SPEC } from "./serve.ts";
import { SPEC as SETUP_SPEC } from "./setup.ts";
import { SPEC as PERF_SPEC } from "../bench/perf.ts";
import { SPEC as DEVICE_CHECK_SPEC } from "../bench/device_check.ts";
import { SPEC as SERVE_LOAD_SPEC } from "../bench/serve_load.ts";
import type { GridConfig } from "../grid/config.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TASKS: Record<string, string> = JSON.parse(
  Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
).tasks;

/** The spec a module exports as `SPEC`, else the option names it is known to have. */
async function specOptions(
  module: Promise<Record<string, unknown>>,
  known: string[],
): Promise<string[]> {
  const spec = (await module).SPEC as CommandSpec | undefined;
  // synth, scale, soak and export keep their SPEC private: their options are listed here.
  return spec ? Object.keys(spec.options) : known;
}

/** A tool under test: its task, its options, and one bad value of a typed option. */
interface Tool {
  /** The deno.json task. */
  task: string;
  /** Option names (without `--`) its help must list. */
  options: () => Promise<string[]>;
  /** Arguments with one bad value. */
  bad: string[];
  /** The option the bad value's error must name. */
  option: string;
}

const TOOLS: Tool[] = [
  {
    task: "reproduce",
    options: () => Promise.resolve(Object.keys(REPRODUCE_SPEC.options)),
    bad: ["--shard=3/2"],
    option: "--shard",
  },
  {
    task: "eval",
    options: () => Promise.resolve(Object.keys(EVAL_SPEC.options)),
    bad: ["--family=xyz"],
    option: "--family",
  },
  {
    task: "serve",
    options: () => Promise.resolve(Object.keys(SERVE_SPEC.options)),
    bad: ["--port=abc"],
    option: "--port",
  },
  {
    task: "expressiveness",
    options: () => Promise.resolve(Object.keys(EXPRESSIVENESS_SPEC.options)),
    bad: ["--steps=0"],
    option: "--steps",
  },
  {
    task: "perf",
    options: () => Promise.resolve(Object.keys(PERF_SPEC.options)),
    bad: ["--size=0"],
    option: "--size",
  },
  {
    task: "serve-load",
    options: () => Promise.resolve(Object.keys(SERVE_LOAD_SPEC.options)),
    bad: ["--seconds=0"],
    option: "--seconds",
  },
  {
    task: "scale",
    options: () =>
      specOptions(import("./scale.ts"), [
        "shape",
        "model",
        "base",
        "prompt-tokens",
        "batch",
        "seq",
        "mmlu-subject",
        "mmlu-shots",
        "mmlu-questions",
        "generate",
        "decode-prompt",
        "questions",
        "device-memory",
        "checkpointing",
        "stages",
        "data",
        "keep",
        "record",
        "results",
        "block",
        "vocab",
      ]),
    bad: ["--shape=xyz"],
    option: "--shape",
  },
  {
    task: "device-check",
    options: () => Promise.resolve(Object.keys(DEVICE_CHECK_SPEC.options)),
    bad: ["--out=/tmp/moka-device-check-never", "--budget=0"],
    option: "--budget",
  },
  {
    task: "synth",
    options: () =>
      specOptions(import("./synth.ts"), ["shape", "out", "seed", "shard-bytes", "dtype", "corpus"]),
    bad: ["--shape=xyz"],
    option: "--shape",
  },
  {
    task: "soak",
    options: () =>
      specOptions(import("./soak.ts"), ["runs", "minutes", "malloc-check", "env", "log"]),
    bad: ["--runs=0"],
    option: "--runs",
  },
  {
    task: "setup",
    options: () => Promise.resolve(Object.keys(SETUP_SPEC.options)),
    bad: ["--for=xyz"],
    option: "--for",
  },
  {
    task: "export",
    options: () =>
      specOptions(import("./export.ts"), [
        "adapters",
        "model",
        "out",
        "peft",
        "merge",
        "dtype",
        "shard-bytes",
        "base-model",
      ]),
    // --dtype is checked once the required options are there.
    bad: ["--adapters=a", "--out=b", "--peft", "--dtype=F64"],
    option: "--dtype",
  },
];

/** What a finished subprocess printed. */
interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Run a task's script with the task's own `deno run` flags, from the repository root. */
async function runTask(task: string, args: string[]): Promise<Ran> {
  const words = TASKS[task].trim().split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "run"], `task ${task}: ${TASKS[task]}`);
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...words.slice(1), ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: out.code,
    stdout: text(out.stdout),
    stderr: text(out.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

/** Assert a usage error: exit 2, nothing on stdout, at most two lines and no stack on stderr. */
function assertUsageError(r: Ran, what: string): string[] {
  const context = `${what}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
  assert.equal(r.code, 2, context);
  assert.equal(r.stdout, "", context);
  const lines = r.stderr.trimEnd().split("\n");
  assert.ok(lines.length <= 2, context);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, context);
  assert.doesNotMatch(r.stderr, /file:\/\//, context);
  return lines;
}

Deno.test("every deno run task is one of the tools tested here", () => {
  // `test` runs setup first, then `deno test`: not a tool of its own.
  const runTasks = Object.entries(TASKS).filter(([, cmd]) =>
    cmd.startsWith("deno run ") && !cmd.includes("&&")
  );
  assert.deepEqual(runTasks.map(([name]) => name).sort(), TOOLS.map((t) => t.task).sort());
});

for (const tool of TOOLS) {
  Deno.test(`deno task ${tool.task}: --help, an unknown option and a bad value`, async () => {
    const [help, unknown, bad] = await Promise.all([
      runTask(tool.task, ["--help"]),
      runTask(tool.task, ["--no-such-option"]),
      runTask(tool.task, tool.bad),
    ]);
    assert.equal(help.code, 0, help.stderr);
    assert.ok(help.stdout.startsWith(`deno task ${tool.task} — `), help.stdout);
    for (const name of await tool.options()) {
      assert.match(help.stdout, new RegExp(`--${name}\\b`), `--help names --${name}`);
    }
    assert.match(help.stdout, /Examples:\n {2}deno task /);

    const unknownLines = assertUsageError(unknown, "--no-such-option");
    assert.match(unknownLines[0], /--no-such-option/);

    const badLines = assertUsageError(bad, tool.bad.join(" "));
    assert.equal(badLines.length, 2, bad.stderr);
    assert.ok(badLines[0].includes(tool.option), bad.stderr);
    assert.match(badLines[1], /--help' for usage/);
  });
}

Deno.test("deno task reproduce: a missing or invalid --config stops before the self-check", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-cli-" });
  try {
    const sentinel = new TextEncoder().encode('{"kind":"sentinel"}\n');
    await Deno.writeFile(`${dir}/selfcheck.json`, sentinel);
    await Deno.writeTextFile(
      `${dir}/bad.json`,
      JSON.stringify({ profile: "x", adapters: { a: { kind: "nope" } } }),
    );
    await Deno.writeTextFile(`${dir}/broken.json`, "{ not json");
    // Valid but for one field each; maxLen is checked against stories260K's header (512).
    const tiny = {
      profile: "tiny",
      adapters: { base: null, lora: { kind: "lora", r: 2, alpha: 4 } },
      targets: ["q", "v"],
      seeds: [1],
      mmlu: { fallbackTasks: ["openbookqa"], maxLen: 320, subjects: ["marketing"], shots: 0 },
      train: { steps: 2, lr: 0.005, batchSize: 2 },
    };
    const variants: Record<string, unknown> = {
      "typo.json": { ...tiny, train: { ...tiny.train, stpes: 3 } },
      "steps.json": { ...tiny, train: { ...tiny.train, steps: "10" } },
      "module.json": { ...tiny, targets: ["q", "qkv"] },
      "long.json": { ...tiny, mmlu: { ...tiny.mmlu, maxLen: 4096 } },
    };
    for (const [file, config] of Object.entries(variants)) {
      await Deno.writeTextFile(`${dir}/${file}`, JSON.stringify(config));
    }
    const cases: [string, RegExp][] = [
      ["missing.json", /--config \S*missing\.json: not found/],
      ["bad.json", /--config \S*bad\.json: field adapters\.a\.kind: /],
      ["broken.json", /--config \S*broken\.json: not JSON/],
      ["typo.json", /typo\.json: field train\.stpes: unrecognized key \(did you mean steps\?\)$/],
      ["steps.json", /steps\.json: field train\.steps: Invalid input: expected number, received/],
      ["module.json", /module\.json: field targets\.1: unknown target module "qkv"; use q, k, v/],
      ["long.json", /long\.json: field mmlu\.maxLen: 4096 exceeds the model's context of 512 /],
    ];
    const runs = await Promise.all(
      cases.map(([file]) => runTask("reproduce", ["--out", dir, "--config", `${dir}/${file}`])),
    );
    for (const [i, r] of runs.entries()) {
      const [file, message] = cases[i];
      // stdout stays empty: its first line would be the GPU adapter's, printed once it starts.
      const lines = assertUsageError(r, file);
      assert.match(lines[0], message);
      assert.ok(r.seconds < 15, `${file}: ${r.seconds.toFixed(1)} s`);
    }
    assert.deepEqual(await Deno.readFile(`${dir}/selfcheck.json`), sentinel);
    const entries = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(
      entries,
      [
        "bad.json",
        "broken.json",
        ...Object.keys(variants),
        "selfcheck.json",
      ].sort(),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task reproduce: an --out that cannot be written stops before the self-check", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-cli-" });
  try {
    // A folder under a regular file cannot be created, even by root.
    await Deno.writeTextFile(`${dir}/file`, "");
    const outs = [`${dir}/file/out`];
    // A read-only folder (root ignores permissions: not tested as root).
    if (Deno.uid() !== 0) {
      await Deno.mkdir(`${dir}/ro`, { mode: 0o555 });
      outs.push(`${dir}/ro`);
    }
    // Negative control: a writable, fresh --out passes the check (--only-selfcheck with a bad
    // --data stops right after it, before any GPU work).
    const control = await runTask("reproduce", [
      "--out",
      `${dir}/ok`,
      "--only-selfcheck",
      "--data",
      `${dir}/nodata`,
    ]);
    assertUsageError(control, "control");
    assert.match(control.stderr, /--data \S*nodata: not found/);
    for (const out of outs) {
      const r = await runTask("reproduce", ["--out", out, "--only-selfcheck"]);
      const lines = assertUsageError(r, out);
      assert.equal(lines.length, 2);
      assert.match(
        lines[0],
        new RegExp(
          `^deno task reproduce: --out ${out}: not a writable folder \\([^()]+\\(os error \\d+\\)\\)$`,
        ),
      );
    }
    if (Deno.uid() !== 0) assert.deepEqual([...Deno.readDirSync(`${dir}/ro`)], []);
  } finally {
    await Deno.chmod(`${dir}/ro`, 0o755).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task reproduce merge: a missing shard and a conflict are named, nothing is written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-cli-" });
  try {
    const missing = await runTask("reproduce", ["merge", "--out", `${dir}/out`, `${dir}/nope`]);
    const lines = assertUsageError(missing, "missing shard");
    assert.equal(lines[0], `deno task reproduce: merge: shard folder ${dir}/nope: not found`);
    // Two shards with the same run and different reports.
    const report = (loss: number) => ({
      kind: "run",
      id: "x-mmlu-s1",
      profile: "t",
      adapter: "x",
      adapterConfig: null,
      family: "mmlu",
      seed: 1,
      configHash: "c".repeat(64),
      config: {},
      git: "abc",
      deno: "2.9.6",
      device: "d",
      model: "m",
      base: "nf4",
      trainableParams: 0,
      paperTrainableParams: null,
      metrics: { heldOut: { loss, tokens: 10, examples: 2 } },
      lossCurve: [],
      timings: { trainSeconds: 0, evalSeconds: 1, trainTokensPerSecond: null },
      adapterChecksum: null,
      date: "2024-01-01T00:00:00.000Z",
    });
    for (const [shard, loss] of [["a", 1], ["b", 2]] as const) {
      await Deno.mkdir(`${dir}/${shard}/runs/x-mmlu-s1`, { recursive: true });
      await Deno.writeTextFile(
        `${dir}/${shard}/runs/x-mmlu-s1/report.json`,
        JSON.stringify(report(loss)),
      );
    }
    const conflict = await runTask("reproduce", [
      "merge",
      "--out",
      `${dir}/out`,
      `${dir}/a`,
      `${dir}/b`,
    ]);
    assert.equal(conflict.code, 1, conflict.stderr);
    assert.equal(
      conflict.stderr.trim(),
      `deno task reproduce: error: merge: run x-mmlu-s1 conflicts between shard folders ${dir}/a ` +
        `and ${dir}/b (same config, different metrics)`,
    );
    assert.deepEqual([...Deno.readDirSync(`${dir}/out`)], []);
    // Negative control: one shard merges.
    const ok = await runTask("reproduce", ["merge", "--out", `${dir}/out`, `${dir}/a`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(Deno.statSync(`${dir}/out/grid.json`).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reproduce ETA: the mean of finished runs of the most specific kind measured", () => {
  const measured: MeasuredRun[] = [
    { kinds: ["commonsense/moka", "commonsense/trained", "trained"], seconds: 100 },
    { kinds: ["commonsense/moka", "commonsense/trained", "trained"], seconds: 200 },
    { kinds: ["commonsense/lora", "commonsense/trained", "trained"], seconds: 30 },
    { kinds: ["mmlu/base", "mmlu/base", "base"], seconds: 10 },
  ];
  // moka: 150 (its own runs); dora: 110 (commonsense trained runs); mmlu lora: 110 (any trained).
  assert.equal(
    estimateRemainingSeconds(measured, [
      ["commonsense/moka", "commonsense/trained", "trained"],
      ["commonsense/dora", "commonsense/trained", "trained"],
      ["mmlu/lora", "mmlu/trained", "trained"],
    ]),
    150 + 110 + 110,
  );
  assert.equal(estimateRemainingSeconds(measured, []), 0);
  // Only base runs measured: a trained run is not estimated from them (the early-ETA trap).
  assert.equal(
    estimateRemainingSeconds([measured[3]], [["mmlu/lora", "mmlu/trained", "trained"]]),
    null,
  );
  // Only runs skipped as already done so far: nothing to estimate from.
  assert.equal(estimateRemainingSeconds([], [["mmlu/base", "mmlu/base", "base"]]), null);
  assert.equal(formatDuration(42.4), "42 s");
  assert.equal(formatDuration(320), "5 min 20 s");
  assert.equal(formatDuration(3 * 3600 + 7 * 60 + 5), "3 h 7 min");
});

Deno.test("reproduce ETA: a run's kinds are its adapter, its family's trained or base-only runs, all such runs", () => {
  const grid = { adapters: { base: null, plain: null, lora: { kind: "lora", r: 4 } } };
  const kind = (adapter: string, family: "commonsense" | "mmlu") =>
    runKinds(grid as unknown as GridConfig, {
      id: `${adapter}-${family}-s1`,
      adapter,
      family,
      seed: 1,
    });
  assert.deepEqual(kind("base", "commonsense"), ["commonsense/base", "commonsense/base", "base"]);
  assert.deepEqual(kind("plain", "mmlu"), ["mmlu/plain", "mmlu/base", "base"]);
  assert.deepEqual(kind("lora", "mmlu"), ["mmlu/lora", "mmlu/trained", "trained"]);
});

Deno.test("deno task setup: a missing package is named with the exact apt-get line to run", async () => {
  // A PATH with apt-get but no Chromium: the test job lacks Chromium.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink("/usr/bin/apt-get", `${dir}/apt-get`).catch(() => {});
    const words = TASKS.setup.trim().split(/\s+/);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...words.slice(1), "--for", "test", "--check"],
      cwd: ROOT,
      env: { PATH: dir },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(stderr, /no Chromium .*: package chromium/);
    assert.match(stderr, /apt-get update && apt-get install -y chromium$/m);
    // The reproduce job needs no browser: the same PATH is ready for it (the GPU is present).
    const ready = await new Deno.Command(Deno.execPath(), {
      args: [...words.slice(1), "--for", "reproduce", "--check"],
      cwd: ROOT,
      env: { PATH: dir },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(ready.code, 0, new TextDecoder().decode(ready.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
