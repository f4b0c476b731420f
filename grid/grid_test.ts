import assert from "node:assert/strict";
import { testRuntime } from "../kernels/testing/mod.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { parseRunReport } from "./schema.ts";
import { parseGridConfig, parseShard, planGrid, profile, PROFILES, shardRuns } from "./config.ts";
import { countTrainableParams } from "../models/adapters/count.ts";
import { LLAMA2_7B, LLAMA3_8B } from "../models/llama_shapes.ts";
import { executeRun, loadGridModel } from "./runner.ts";
import { collectReports, mergeShards } from "./summary.ts";

const TINY = {
  profile: "tiny",
  adapters: { base: null, lora: { kind: "lora", r: 2, alpha: 4 } },
  targets: ["q", "v"],
  seeds: [1],
  mmlu: {
    fallbackTasks: ["openbookqa"],
    trainLimit: 4,
    maxLen: 320,
    subjects: ["marketing"],
    mmluLimit: 2,
    shots: 0,
  },
  train: { steps: 2, lr: 0.005, batchSize: 2 },
};

Deno.test("grid: profiles parse, plans are stable, shards are disjoint and cover the grid", () => {
  const smoke = parseGridConfig(PROFILES.smoke);
  const runs = planGrid(smoke);
  const trained = (names: string[]) =>
    names.filter((a) => smoke.adapters[a] !== null).length * smoke.seeds.length;
  // The base model runs once per family (it depends on no seed); adapters at every seed (≥ 3),
  // the MMLU family on its subset of the adapters.
  assert.ok(smoke.seeds.length >= 3);
  assert.equal(
    runs.length,
    2 + trained(Object.keys(smoke.adapters)) + trained(smoke.mmlu!.adapters!),
  );
  assert.ok(
    runs.every((r) => r.family === "commonsense" || smoke.mmlu!.adapters!.includes(r.adapter)),
  );
  assert.throws(
    () => parseGridConfig({ ...TINY, mmlu: { ...TINY.mmlu, adapters: ["nope"] } }),
    /field mmlu\.adapters\.0: "nope" is not one of the grid's adapters/,
  );
  assert.equal(runs[0].id, "base-commonsense-s1");
  assert.equal(runs.filter((r) => r.adapter === "base").length, 2);
  const full = parseGridConfig(PROFILES["full-llama3-8b"]);
  assert.ok(planGrid(full).some((r) => r.id === "dora-mmlu-s42"));
  // The MMLU family's former name is still read.
  const { mmlu, ...rest } = TINY;
  assert.deepEqual(parseGridConfig({ ...rest, instruction: mmlu }), parseGridConfig(TINY));
  assert.deepEqual(profile("full"), PROFILES["full-llama3-8b"]);
  const parts = [0, 1, 2].map((i) => shardRuns(runs, { index: i, count: 3 }).map((r) => r.id));
  assert.deepEqual(parts.flat().sort(), runs.map((r) => r.id).sort());
  assert.equal(new Set(parts.flat()).size, runs.length);
  assert.deepEqual(parseShard("2/5"), { index: 2, count: 5 });
  assert.throws(() => parseShard("5/5"), /0 ≤ i < n/);
  assert.throws(
    () => parseGridConfig({ ...TINY, adapters: { x: { kind: "lora", r: 0, alpha: 1 } } }),
    /field adapters\.x/,
  );
  assert.throws(() => parseGridConfig({ ...TINY, seeds: [] }), /field seeds/);
});

Deno.test("grid: runs write valid reports, are skipped when done, reproduce exactly, and shards merge", async () => {
  const rt = await testRuntime();
  const grid = parseGridConfig(TINY);
  const model = await loadGridModel(rt, grid, defaultModelPath("stories260K.bin"));
  const runs = planGrid(grid);
  const [a, b, merged] = [
    await Deno.makeTempDir(),
    await Deno.makeTempDir(),
    await Deno.makeTempDir(),
  ];
  const opts = (out: string) => ({ out, dataDir: dataDir(), log: () => {} });
  // Shard 0/2 → a, shard 1/2 → b.
  for (const [i, out] of [a, b].entries()) {
    for (const run of shardRuns(runs, { index: i, count: 2 })) {
      await executeRun(rt, grid, run, model, opts(out));
    }
  }
  const lora = runs.find((r) => r.adapter === "lora")!;
  const first = parseRunReport(
    await Deno.readTextFile(`${b}/runs/${lora.id}/report.json`),
    "report",
  );
  assert.equal(first.trainableParams, 5 * (2 * (64 + 64) + 2 * (64 + 32)));
  assert.equal(first.lossCurve.length, 2);
  assert.match(first.adapterChecksum!, /^[0-9a-f]{64}$/);
  assert.equal(first.metrics.mmlu!.subjects.marketing.total, 2);
  // Done runs are skipped; the same config and seed elsewhere reproduce the metrics and adapter.
  const again = await executeRun(rt, grid, lora, model, opts(b));
  assert.equal(again.skipped, true);
  const elsewhere = await executeRun(rt, grid, lora, model, opts(a));
  assert.equal(elsewhere.skipped, false);
  assert.deepEqual(elsewhere.report.metrics, first.metrics);
  assert.equal(elsewhere.report.adapterChecksum, first.adapterChecksum);
  assert.deepEqual(elsewhere.report.lossCurve, first.lossCurve);
  // The base is loaded once and shared by every run; a fresh load per run gives the same results.
  for (const run of runs) {
    const shared = parseRunReport(
      await Deno.readTextFile(`${[a, b][runs.indexOf(run) % 2]}/runs/${run.id}/report.json`),
      "report",
    );
    const fresh = await loadGridModel(rt, grid, defaultModelPath("stories260K.bin"));
    const alone = await Deno.makeTempDir();
    const own = (await executeRun(rt, grid, run, fresh, opts(alone))).report;
    fresh.gpu.release();
    assert.deepEqual(own.metrics, shared.metrics, `${run.id}: metrics`);
    assert.equal(own.adapterChecksum, shared.adapterChecksum, `${run.id}: adapters`);
    await Deno.remove(alone, { recursive: true });
  }
  assert.equal(await mergeShards(merged, [a, b]) >= 2, true);
  assert.deepEqual((await collectReports(merged)).map((r) => r.id), runs.map((r) => r.id).sort());
  const summary = JSON.parse(await Deno.readTextFile(`${merged}/grid.json`));
  assert.equal(summary.rows.length, 2);
  for (const d of [a, b, merged]) await Deno.remove(d, { recursive: true });
  model.gpu.release();
});

Deno.test("grid: the full profiles' trainable counts on LLaMA-3-8B and LLaMA-2-7B, beside the paper's", () => {
  const counts = (name: "full-llama3-8b" | "full-llama2-7b", shape: typeof LLAMA3_8B) => {
    const c = parseGridConfig(PROFILES[name]);
    return Object.fromEntries(
      Object.entries(c.adapters).filter(([, a]) => a !== null).map((
        [k, a],
      ) => [k, countTrainableParams(shape, c.targets, a).total]),
    );
  };
  const l3 = counts("full-llama3-8b", LLAMA3_8B);
  assert.deepEqual(l3, {
    moka: 3735872,
    moka_s: 2179488,
    moka_nogate: 3735552,
    krona: 1769472,
    lokr: 901120,
    lora: 56623104,
    dora: 57409536,
  });
  const l2 = counts("full-llama2-7b", LLAMA2_7B);
  assert.deepEqual(l2, {
    moka: 5259744,
    moka_s: 2945440,
    moka_nogate: 5259264,
    krona: 1753088,
    lokr: 942080,
    lora: 56098816,
    dora: 56975360,
  });
  // Within 5 % of the paper's MoKA budgets (3.9M, 2.1M on LLaMA-3-8B; 5.2M on LLaMA-2-7B).
  for (const [got, want] of [[l3.moka, 3.9e6], [l3.moka_s, 2.1e6], [l2.moka, 5.2e6]]) {
    assert.ok(Math.abs(got - want) / want < 0.05, `${got} vs ${want}`);
  }
});
