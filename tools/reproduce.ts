/**
 * `deno task reproduce`: the main job. First the kernel self-check (a broken adapter fails in
 * seconds), then the reproduction grid — adapters × task families × seeds — of a profile
 * (`smoke`, the default on this machine; `full`, the paper's protocol, needs --model and the data
 * files) or a JSON config. Finished runs are skipped, interrupted ones resume.
 *
 *   deno task reproduce [--profile smoke|full] [--config grid.json] [--model PATH]
 *                       [--shard i/n] [--out DIR] [--data DIR] [--only-selfcheck]
 *   deno task reproduce merge --out DIR SHARD_DIR...
 */
import { parseArgs } from "node:util";
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { selfCheck } from "../kernels/selfcheck.ts";
import { dataDir } from "../models/paths.ts";
import {
  parseGridConfig,
  parseShard,
  planGrid,
  profile,
  shardRuns,
} from "../reports/grid/config.ts";
import { executeRun, loadGridModel } from "../reports/grid/runner.ts";
import { collectReports, mergeShards, writeGridSummary } from "../reports/grid/summary.ts";
import { writeStaticPages } from "../reports/html.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    out: { type: "string", default: "reports/out" },
    profile: { type: "string", default: "smoke" },
    config: { type: "string" },
    model: { type: "string" },
    shard: { type: "string" },
    data: { type: "string" },
    "only-selfcheck": { type: "boolean", default: false },
  },
});
const out = values.out;

if (positionals[0] === "merge") {
  const n = await mergeShards(out, positionals.slice(1));
  await writeStaticPages(out, await collectReports(out));
  console.log(
    `merged ${n} runs from ${positionals.length - 1} shard folders into ${out}/grid.json`,
  );
  Deno.exit(0);
}
if (positionals.length) throw new Error(`unknown command ${positionals[0]} (only "merge")`);

const rt = await GpuRuntime.create();
console.log(`adapter: ${rt.gpu.description} (backend ${rt.gpu.backend}, f16 ${rt.gpu.hasF16})`);
const started = performance.now();
const results = await selfCheck(rt);
const failed = results.filter((r) => !r.ok);
for (const r of failed) {
  console.log(`FAIL ${r.kernel} ${JSON.stringify(r.spec)} rel.err ${r.relativeError}`);
}
await Deno.mkdir(out, { recursive: true });
await Deno.writeTextFile(
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
console.log(`kernel self-check: ${results.length - failed.length} passed, ${failed.length} failed`);
if (failed.length) Deno.exit(1);
if (values["only-selfcheck"]) Deno.exit(0);

const raw = values.config
  ? JSON.parse(await Deno.readTextFile(values.config))
  : profile(values.profile);
if (!raw) throw new Error(`--profile ${values.profile}: use smoke or full (or --config FILE)`);
const grid = parseGridConfig(
  values.model ? { ...raw as object, model: values.model } : raw,
  values.config ?? `profile ${values.profile}`,
);
if (grid.profile === "full" && !grid.model) {
  throw new Error("the full profile needs --model PATH (a LLaMA checkpoint)");
}
const all = planGrid(grid);
const runs = values.shard ? shardRuns(all, parseShard(values.shard)) : all;
const model = await loadGridModel(rt, grid);
console.log(
  `grid ${grid.profile}: ${runs.length} of ${all.length} runs on ${model.path} (${grid.base} base)`,
);
const gridStart = performance.now();
for (const [i, run] of runs.entries()) {
  const t = performance.now();
  const { report, skipped } = await executeRun(rt, grid, run, model, {
    out,
    dataDir: values.data ?? dataDir(),
    log: (m) => console.log(`  ${m}`),
  });
  const score = report.metrics.commonsense?.average ?? report.metrics.mmlu?.average ?? 0;
  const elapsed = (performance.now() - gridStart) / 1000;
  const eta = (elapsed / (i + 1)) * (runs.length - i - 1);
  console.log(
    `[${i + 1}/${runs.length}] ${run.id}: ${
      skipped ? "already done" : `${((performance.now() - t) / 1000).toFixed(0)} s`
    }, ` +
      `score ${(100 * score).toFixed(1)} %, ${report.trainableParams} trainable · ETA ${
        eta.toFixed(0)
      } s`,
  );
}
const rows = await writeGridSummary(out);
await writeStaticPages(out, await collectReports(out));
console.log(
  `wrote ${out}/grid.json and index.html (${rows.length} runs), runs/<id>/{report.json,index.html}`,
);
