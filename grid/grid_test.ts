import assert from "node:assert/strict";
import { testRuntime } from "../kernels/testing/mod.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { parseRunReport, type RunReport, RunReportSchema } from "./schema.ts";
import {
  checkContext,
  parseGridConfig,
  parseShard,
  planGrid,
  profile,
  PROFILES,
  shardRuns,
} from "./config.ts";
import { CLAIM_FILE, claimRun, isScratchFile, tempPath, writeFileAtomic } from "./claim.ts";
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
  // The publishing hook: every run finished here, once, after its report is in place.
  const finished: string[] = [];
  const opts = (out: string) => ({
    out,
    dataDir: dataDir(),
    log: () => {},
    onRunFinished: async (report: RunReport, runDir: string) => {
      const onDisk = parseRunReport(await Deno.readTextFile(`${runDir}/report.json`), runDir);
      assert.deepEqual(onDisk, JSON.parse(JSON.stringify(report)));
      finished.push(`${runDir}: ${report.id}`);
    },
  });
  // Shard 0/2 → a, shard 1/2 → b.
  for (const [i, out] of [a, b].entries()) {
    for (const run of shardRuns(runs, { index: i, count: 2 })) {
      await executeRun(rt, grid, run, model, opts(out));
    }
  }
  assert.deepEqual(
    finished.sort(),
    runs.map((r, k) => `${[a, b][k % 2]}/runs/${r.id}: ${r.id}`).sort(),
  );
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
  const before = finished.length;
  const again = await executeRun(rt, grid, lora, model, opts(b));
  assert.equal(again.status, "done");
  assert.equal(finished.length, before, "no hook for a run found done");
  // A run another live process has claimed is left to it: not trained, no report, no hook.
  const held = await claimRun(`${a}/runs/${lora.id}`);
  assert.ok(held.claimed);
  const left = await executeRun(rt, grid, lora, model, opts(a));
  assert.equal(left.status, "claimed");
  assert.equal(finished.length, before);
  await held.release();
  const elsewhere = await executeRun(rt, grid, lora, model, opts(a));
  assert.ok(elsewhere.status === "ran");
  assert.equal(finished.length, before + 1);
  assert.equal(elsewhere.skipped, false);
  // The claim is released and no temp file is left in the run folder.
  assert.deepEqual(
    [...Deno.readDirSync(`${a}/runs/${lora.id}`)].map((e) => e.name).filter(isScratchFile),
    [],
  );
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
    const ran = await executeRun(rt, grid, run, fresh, opts(alone));
    assert.ok(ran.status === "ran");
    const own = ran.report;
    fresh.gpu.release();
    assert.deepEqual(own.metrics, shared.metrics, `${run.id}: metrics`);
    assert.equal(own.adapterChecksum, shared.adapterChecksum, `${run.id}: adapters`);
    await Deno.remove(alone, { recursive: true });
  }
  // lora ran in both folders: the same config, but the reports differ (date, timings), so the
  // merge refuses until one copy is removed.
  await assert.rejects(
    mergeShards(merged, [a, b]),
    new RegExp(`run ${lora.id} conflicts between shard folders ${a} and ${b} \\(same config`),
  );
  assert.deepEqual([...Deno.readDirSync(merged)], []);
  await Deno.remove(`${a}/runs/${lora.id}`, { recursive: true });
  assert.equal(await mergeShards(merged, [a, b]), runs.length);
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

/** The error of parsing TINY with `change` applied (fails the test when it parses). */
function configError(change: (c: Record<string, unknown>) => void, source = "grid config"): string {
  const c = structuredClone(TINY) as Record<string, unknown>;
  change(c);
  try {
    parseGridConfig(c, source);
  } catch (e) {
    return (e as Error).message;
  }
  throw new assert.AssertionError({ message: `parsed: ${JSON.stringify(c)}` });
}

Deno.test("grid config: train, targets, tasks and subjects are typed; errors name the full path", () => {
  // Negative control: the config the mutations start from is valid.
  const ok = parseGridConfig(TINY);
  assert.deepEqual(ok.train, TINY.train);
  const train = (c: Record<string, unknown>) => c.train as Record<string, unknown>;
  assert.equal(
    configError((c) => {
      train(c).stpes = 10;
    }, "grid config my.json"),
    "grid config my.json: field train.stpes: unrecognized key (did you mean steps?)",
  );
  assert.equal(
    configError((c) => {
      train(c).steps = "10";
    }),
    "grid config: field train.steps: Invalid input: expected number, received string",
  );
  assert.match(configError((c) => void (train(c).schedule = "exp")), /field train\.schedule: /);
  // seq and seed come from maxLen and seeds: not settable here.
  assert.match(configError((c) => void (train(c).seed = 3)), /field train\.seed: unrecognized key/);
  assert.match(configError((c) => void (train(c).seq = 64)), /field train\.seq: unrecognized key/);
  assert.match(configError((c) => void delete train(c).lr), /field train\.lr: /);
  // A root-level and a nested unknown key, both named.
  assert.equal(
    configError((c) => {
      c.seed = [1];
      (c.mmlu as Record<string, unknown>).shot = 1;
    }),
    "grid config: field mmlu.shot: unrecognized key (did you mean shots?); " +
      "field seed: unrecognized key (did you mean seeds?)",
  );
  assert.equal(
    configError((c) => void (c.targets = ["q", "qq"])),
    'grid config: field targets.1: unknown target module "qq"; use q, k, v, o, gate, up, down',
  );
  assert.match(configError((c) => void (c.targets = ["q", "q_proj"])), /targets\.1: "q" .*twice/);
  assert.deepEqual(parseGridConfig({ ...TINY, targets: ["q_proj", "wv"] }).targets, ["q", "v"]);
  assert.match(
    configError((c) => void ((c.mmlu as Record<string, unknown>).fallbackTasks = ["boolqq"])),
    /field mmlu\.fallbackTasks\.0: unknown commonsense task "boolqq"/,
  );
  assert.match(
    configError((c) => {
      c.commonsense = { tasks: ["piqa", "hellaswagg"], maxLen: 64, beams: 1, maxNew: 4 };
    }),
    /field commonsense\.tasks\.1: unknown commonsense task "hellaswagg"/,
  );
  assert.match(
    configError((c) => void ((c.mmlu as Record<string, unknown>).subjects = ["marketting"])),
    /field mmlu\.subjects\.0: unknown MMLU subject "marketting" \(did you mean marketing\?\)/,
  );
  // maxLen against the model's context: equal is fine, one more is named with both numbers.
  checkContext(ok, 320);
  assert.throws(
    () => checkContext(ok, 319, "grid tiny"),
    (e: Error) =>
      e.message === "grid tiny: field mmlu.maxLen: 320 exceeds the model's context of 319 tokens",
  );
  // The profiles' hashed train settings stay as written (no defaults added).
  assert.deepEqual(parseGridConfig(PROFILES.smoke).train, (PROFILES.smoke as typeof TINY).train);
});

Deno.test("grid claims: one holder per run, a stale claim is taken over, temp names are unique", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-claim-" });
  try {
    const run = `${dir}/runs/a`;
    const first = await claimRun(run);
    assert.ok(first.claimed && first.tookOver === undefined);
    const lock = JSON.parse(await Deno.readTextFile(`${run}/${CLAIM_FILE}`));
    assert.equal(lock.pid, Deno.pid);
    assert.equal(lock.hostname, Deno.hostname());
    assert.ok(!Number.isNaN(Date.parse(lock.started)));
    const second = await claimRun(run);
    assert.ok(!second.claimed);
    assert.equal(second.heldBy?.pid, Deno.pid);
    await first.release();
    const third = await claimRun(run);
    assert.ok(third.claimed, "claimable again once released");
    await third.release();

    // A lock of a process that has exited on this host is stale.
    const child = new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" })
      .spawn();
    await child.status;
    const stale = { pid: child.pid, hostname: Deno.hostname(), started: "2020-01-01T00:00:00Z" };
    await Deno.writeTextFile(`${run}/${CLAIM_FILE}`, JSON.stringify(stale));
    const taken = await claimRun(run);
    assert.ok(taken.claimed);
    assert.deepEqual(taken.tookOver, stale);
    assert.equal(JSON.parse(await Deno.readTextFile(`${run}/${CLAIM_FILE}`)).pid, Deno.pid);
    await taken.release();
    await assert.rejects(Deno.stat(`${run}/${CLAIM_FILE}`), Deno.errors.NotFound);
    // The same dead pid on another host says nothing about that host: not taken over.
    await Deno.writeTextFile(
      `${run}/${CLAIM_FILE}`,
      JSON.stringify({ ...stale, hostname: `${Deno.hostname()}-elsewhere` }),
    );
    assert.equal((await claimRun(run)).claimed, false);
    // A lock with this process's pid from before it started: a restarted container's previous
    // incarnation (same host name, same pid), taken over; one from after it started is ours.
    const earlier = { pid: Deno.pid, hostname: Deno.hostname(), started: "2020-01-01T00:00:00Z" };
    await Deno.writeTextFile(`${run}/${CLAIM_FILE}`, JSON.stringify(earlier));
    const retried = await claimRun(run);
    assert.ok(retried.claimed);
    assert.deepEqual(retried.tookOver, earlier);
    await retried.release();
    const live = { ...earlier, started: new Date().toISOString() };
    await Deno.writeTextFile(`${run}/${CLAIM_FILE}`, JSON.stringify(live));
    assert.equal((await claimRun(run)).claimed, false);
    // Many claimants at once: exactly one wins.
    await Deno.remove(`${run}/${CLAIM_FILE}`);
    const many = await Promise.all(Array.from({ length: 8 }, () => claimRun(`${dir}/runs/b`)));
    assert.equal(many.filter((c) => c.claimed).length, 1);

    const names = new Set(Array.from({ length: 1000 }, () => tempPath(`${run}/report.json`)));
    assert.equal(names.size, 1000);
    for (const n of names) {
      assert.ok(n.startsWith(`${run}/report.json.${Deno.pid}-`), n);
      assert.ok(isScratchFile(n.slice(n.lastIndexOf("/") + 1)), n);
    }
    assert.ok(!isScratchFile("report.json") && !isScratchFile("adapters.safetensors"));
    // Concurrent atomic writes of one file: each leaves a whole file, no temp file remains.
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => writeFileAtomic(`${run}/x.json`, `${i}`.repeat(1000))),
    );
    assert.match(await Deno.readTextFile(`${run}/x.json`), /^(\d+)\1*$/);
    assert.deepEqual([...Deno.readDirSync(run)].map((e) => e.name).filter(isScratchFile), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A minimal valid run report. */
function fakeReport(id: string, loss: number, hash = "c"): RunReport {
  const [adapter, family, seed] = id.split("-");
  return RunReportSchema.parse({
    kind: "run",
    id,
    profile: "t",
    adapter,
    adapterConfig: null,
    family,
    seed: Number(seed.slice(1)),
    configHash: hash.repeat(64),
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
}

/** A shard folder holding `reports` (plus a checkpoint and a lock that must not be copied). */
async function fakeShard(root: string, name: string, reports: RunReport[]): Promise<string> {
  const dir = `${root}/${name}`;
  for (const r of reports) {
    await Deno.mkdir(`${dir}/runs/${r.id}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/runs/${r.id}/report.json`, JSON.stringify(r));
    await Deno.writeTextFile(`${dir}/runs/${r.id}/ckpt.safetensors`, "x");
    await Deno.writeTextFile(`${dir}/runs/${r.id}/${CLAIM_FILE}`, "{}");
  }
  return dir;
}

/** Every file under `dir` with its text: what a failed merge must leave unchanged. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else out[`${d}/${e.name}`.slice(dir.length)] = await Deno.readTextFile(`${d}/${e.name}`);
    }
  };
  await walk(dir).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  return out;
}

Deno.test("grid merge: all or nothing; a missing or empty shard and every conflict are named", async () => {
  const root = await Deno.makeTempDir({ prefix: "moka-merge-" });
  try {
    const a = await fakeShard(root, "a", [fakeReport("x-mmlu-s1", 1), fakeReport("y-mmlu-s1", 2)]);
    // b holds a run of a again (equal: a shard run twice), and one of its own.
    const b = await fakeShard(root, "b", [fakeReport("x-mmlu-s1", 1), fakeReport("z-mmlu-s1", 3)]);
    const out = `${root}/out`;
    const failing = async (shards: string[], message: RegExp) => {
      const before = await snapshot(out);
      await assert.rejects(mergeShards(out, shards), message);
      assert.deepEqual(await snapshot(out), before, "a refused merge writes nothing");
    };
    await failing([a, `${root}/nope`], new RegExp(`shard folder ${root}/nope: not found`));
    await Deno.mkdir(`${root}/empty/runs/x-mmlu-s1`, { recursive: true }); // unfinished only
    await failing([a, `${root}/empty`], new RegExp(`shard folder ${root}/empty: no finished runs`));
    // The conflict is found after a's runs were read: still nothing is written.
    const c = await fakeShard(root, "c", [fakeReport("y-mmlu-s1", 2.5)]);
    await failing(
      [a, b, c],
      new RegExp(
        `run y-mmlu-s1 conflicts between shard folders ${a} and ${c} \\(same config, different metrics\\)`,
      ),
    );
    const d = await fakeShard(root, "d", [fakeReport("y-mmlu-s1", 2, "d")]);
    await failing([a, d], /run y-mmlu-s1 conflicts .*\(config hash c+ vs d+\)/);

    // Negative control: a clean merge copies reports, not checkpoints or locks, and writes grid.json.
    assert.equal(await mergeShards(out, [a, b]), 3);
    assert.deepEqual((await collectReports(out)).map((r) => r.id), [
      "x-mmlu-s1",
      "y-mmlu-s1",
      "z-mmlu-s1",
    ]);
    assert.deepEqual([...Deno.readDirSync(`${out}/runs/x-mmlu-s1`)].map((e) => e.name), [
      "report.json",
    ]);
    assert.equal(JSON.parse(await Deno.readTextFile(`${out}/grid.json`)).rows.length, 3);
    // Merging the same shards again is fine; a shard differing from what out holds is refused.
    assert.equal(await mergeShards(out, [b, a]), 3);
    await failing(
      [c],
      new RegExp(`run y-mmlu-s1 of shard folder ${c} conflicts with the one already in ${out}`),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
