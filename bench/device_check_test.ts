/**
 * `deno task device-check --small` end to end on whatever adapter is here (llvmpipe in CI): every
 * step's JSON and the summary validate against the check's own schemas, the recorded results and
 * their PERFORMANCE.md land in the temporary --results folder, and nothing is written into
 * bench/results or the repository's PERFORMANCE.md.
 */
import assert from "node:assert/strict";
import { BlockStepSchema, DEVICE_COMMAND, PerfStepSchema, SummarySchema } from "./device_check.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TASKS: Record<string, string> = JSON.parse(
  Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
).tasks;

/** Modification times of the repository's recorded results and PERFORMANCE.md. */
function recordedState(): Map<string, number> {
  const state = new Map<string, number>();
  const doc = `${ROOT}PERFORMANCE.md`;
  state.set(doc, Deno.statSync(doc).mtime?.getTime() ?? 0);
  for (const e of Deno.readDirSync(`${ROOT}bench/results`)) {
    const path = `${ROOT}bench/results/${e.name}`;
    state.set(path, Deno.statSync(path).mtime?.getTime() ?? 0);
  }
  return state;
}

Deno.test("deno task device-check --small: steps, summary and records in the given folders", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-device-check-" });
  const before = recordedState();
  try {
    const words = TASKS["device-check"].trim().split(/\s+/);
    const started = performance.now();
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        ...words.slice(1),
        "--small",
        "--out",
        `${dir}/out`,
        "--results",
        `${dir}/results`,
        "--budget",
        "150",
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const seconds = (performance.now() - started) / 1000;
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);

    const summary = SummarySchema.parse(
      JSON.parse(await Deno.readTextFile(`${dir}/out/summary.json`)),
    );
    // stdout is the same summary.
    assert.deepEqual(
      SummarySchema.parse(JSON.parse(new TextDecoder().decode(run.stdout))),
      summary,
    );
    assert.equal(summary.command, DEVICE_COMMAND);
    assert.equal(summary.small, true);
    assert.ok(summary.ok, stderr);
    assert.deepEqual(summary.steps.map((s) => s.name), ["perf", "block"]);
    for (const step of summary.steps) {
      assert.ok(step.ok, `${step.name}: ${step.error}`);
      assert.equal(step.timed_out, false);
      assert.ok(step.seconds > 0 && step.seconds <= step.timeout_s, `${step.name}`);
      assert.ok(Deno.statSync(`${dir}/out/${step.log}`).isFile);
    }
    assert.ok(summary.seconds <= summary.budget_s);

    const perf = PerfStepSchema.parse(
      JSON.parse(await Deno.readTextFile(`${dir}/out/perf.json`)),
    );
    assert.equal(summary.device, perf.adapter);
    assert.equal(summary.variants, perf.variants);
    // Every GFLOP/s figure has its fraction of the roofline beside it.
    const p = perf as Record<string, unknown>;
    assert.equal(typeof p.matmul_tuned_gflops_256, "number");
    assert.equal(
      p.matmul_tuned_fraction_of_roofline_256,
      Number(((p.matmul_tuned_gflops_256 as number) / perf.roofline_f32_gflops).toPrecision(3)),
    );

    const block = BlockStepSchema.parse(
      JSON.parse(await Deno.readTextFile(`${dir}/out/block.json`)),
    );
    assert.equal(block.shape, "mid-0.2b");
    assert.equal(block.variants, perf.variants);
    assert.ok(block.ok);
    // The split is sorted, shares of one whole.
    const ms = block.block_kernels.map((k) => k.ms);
    assert.deepEqual(ms, [...ms].sort((a, b) => b - a));
    const share = block.block_kernels.reduce((n, k) => n + k.share, 0);
    assert.ok(Math.abs(share - 1) < 0.02, `shares sum to ${share}`);

    // Records went to --results (and were copied into --out), never into bench/results.
    const recorded = [...Deno.readDirSync(`${dir}/results`)].map((e) => e.name).sort();
    assert.ok(recorded.includes("PERFORMANCE.md"), `${recorded}`);
    assert.equal(recorded.filter((n) => n.startsWith("perf-")).length, 1, `${recorded}`);
    assert.equal(recorded.filter((n) => n.startsWith("scale-")).length, 1, `${recorded}`);
    assert.deepEqual(
      summary.copied.sort(),
      recorded.filter((n) => n.endsWith(".json")).map((n) => `results/${n}`).sort(),
    );
    const doc = await Deno.readTextFile(`${dir}/out/PERFORMANCE.md`);
    assert.match(doc, /\| f32 FMA GFLOP\/s \| /);
    assert.match(doc, /## One transformer block/);
    assert.deepEqual(recordedState(), before);
    console.log(`device-check --small: ${seconds.toFixed(1)} s`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
