/** Collect run reports into the grid summary (`grid.json`), and merge shard outputs. */
import { parseRunReport, type RunReport } from "./schema.ts";
import { canonicalJson } from "./config.ts";
import { isScratchFile, tempPath, writeFileAtomic } from "./claim.ts";

/** Every valid `runs/<id>/report.json` under `out` (sorted by id). */
export async function collectReports(out: string): Promise<RunReport[]> {
  const reports: RunReport[] = [];
  try {
    for await (const e of Deno.readDir(`${out}/runs`)) {
      if (!e.isDirectory) continue;
      const path = `${out}/runs/${e.name}/report.json`;
      try {
        reports.push(parseRunReport(await Deno.readTextFile(path), path));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err; // unfinished runs have no report
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return reports.sort((a, b) => a.id.localeCompare(b.id));
}

/** One line of the grid table. */
export interface GridRow {
  /** Run id. */
  id: string;
  /** Adapter name. */
  adapter: string;
  /** Family. */
  family: string;
  /** Seed. */
  seed: number;
  /** Trainable parameters. */
  params: number;
  /** Headline metric: commonsense average or MMLU average. */
  score: number;
  /** Final training loss (null: no training). */
  finalLoss: number | null;
}

/** The grid table from run reports. */
export function gridRows(reports: RunReport[]): GridRow[] {
  return reports.map((r) => ({
    id: r.id,
    adapter: r.adapter,
    family: r.family,
    seed: r.seed,
    params: r.trainableParams,
    score: r.family === "commonsense"
      ? r.metrics.commonsense?.average ?? 0
      : r.metrics.mmlu?.average ?? 0,
    finalLoss: r.lossCurve.at(-1)?.[1] ?? null,
  }));
}

/** Write `grid.json` (rows + profile) for the reports under `out`; returns the rows. */
export async function writeGridSummary(out: string): Promise<GridRow[]> {
  const reports = await collectReports(out);
  const rows = gridRows(reports);
  const profiles = [...new Set(reports.map((r) => r.profile))];
  await writeFileAtomic(
    `${out}/grid.json`,
    JSON.stringify({ kind: "grid", date: new Date().toISOString(), profiles, rows }, null, 2) +
      "\n",
  );
  return rows;
}

/** A finished run found in a folder, for a merge. */
interface FoundRun {
  /** The folder it was found in (a shard or `--out`). */
  folder: string;
  /** Its parsed report. */
  report: RunReport;
}

/** Two reports of one run are the same result: equal as parsed JSON (key order aside). */
function sameReport(a: RunReport, b: RunReport): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** How two reports of one id differ, for the error. */
function difference(a: RunReport, b: RunReport): string {
  if (a.configHash !== b.configHash) {
    return `config hash ${a.configHash.slice(0, 12)} vs ${b.configHash.slice(0, 12)}`;
  }
  return canonicalJson(a.metrics) === canonicalJson(b.metrics)
    ? "same config, different reports"
    : "same config, different metrics";
}

/**
 * Merge shard output folders into `out`, all or nothing. First every shard and `out` are read and
 * checked: a shard folder that is missing or holds no finished run is an error naming it; one run
 * id in two places must have equal reports (a shard run twice), else the error names the id and
 * both folders, and a run `out` already holds is never replaced by a different one. Only then are
 * the run folders copied (each file through a temp name and a rename, `report.json` last, so a
 * copy cut short is an unfinished run) and `grid.json` written. Returns the number of runs merged.
 */
export async function mergeShards(out: string, shards: string[]): Promise<number> {
  if (shards.length === 0) throw new Error("merge: no shard folders given");
  const runs = new Map<string, FoundRun>();
  for (const shard of shards) {
    try {
      if (!(await Deno.stat(shard)).isDirectory) {
        throw new Error(`merge: shard folder ${shard}: not a folder`);
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(`merge: shard folder ${shard}: not found`);
      }
      throw e;
    }
    const reports = await collectReports(shard);
    if (reports.length === 0) {
      throw new Error(
        `merge: shard folder ${shard}: no finished runs (no runs/<id>/report.json)`,
      );
    }
    for (const report of reports) {
      const prev = runs.get(report.id);
      if (prev && !sameReport(prev.report, report)) {
        throw new Error(
          `merge: run ${report.id} conflicts between shard folders ${prev.folder} and ${shard} ` +
            `(${difference(prev.report, report)})`,
        );
      }
      if (!prev) runs.set(report.id, { folder: shard, report });
    }
  }
  const existing = new Map((await collectReports(out)).map((r) => [r.id, r]));
  const toCopy: FoundRun[] = [];
  for (const run of runs.values()) {
    const there = existing.get(run.report.id);
    if (!there) toCopy.push(run);
    else if (!sameReport(there, run.report)) {
      throw new Error(
        `merge: run ${run.report.id} of shard folder ${run.folder} conflicts with the one ` +
          `already in ${out} (${difference(there, run.report)}); not replacing it`,
      );
    }
  }
  for (const { folder, report } of toCopy) {
    const src = `${folder}/runs/${report.id}`;
    const dst = `${out}/runs/${report.id}`;
    await Deno.mkdir(dst, { recursive: true });
    const names: string[] = [];
    for await (const f of Deno.readDir(src)) {
      // Checkpoints are for resuming, locks and temp files are another process's.
      if (f.isFile && !f.name.startsWith("ckpt") && !isScratchFile(f.name)) names.push(f.name);
    }
    names.sort((a, b) => Number(a === "report.json") - Number(b === "report.json"));
    for (const name of names) {
      const tmp = tempPath(`${dst}/${name}`);
      try {
        await Deno.copyFile(`${src}/${name}`, tmp);
        await Deno.rename(tmp, `${dst}/${name}`);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        throw e;
      }
    }
  }
  await writeGridSummary(out);
  return runs.size;
}
