/** Collect run reports into the grid summary (`grid.json`), and merge shard outputs. */
import { parseRunReport, type RunReport } from "./schema.ts";

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
  await Deno.writeTextFile(
    `${out}/grid.json`,
    JSON.stringify({ kind: "grid", date: new Date().toISOString(), profiles, rows }, null, 2) +
      "\n",
  );
  return rows;
}

/**
 * Merge shard output folders into `out`: every finished run folder is copied; the same id twice
 * with different config hashes is an error (two different grids).
 */
export async function mergeShards(out: string, shards: string[]): Promise<number> {
  const seen = new Map<string, string>();
  let copied = 0;
  for (const shard of shards) {
    for (const r of await collectReports(shard)) {
      const prev = seen.get(r.id);
      if (prev && prev !== r.configHash) {
        throw new Error(`merge: run ${r.id} differs between shards (config hash)`);
      }
      seen.set(r.id, r.configHash);
      const dst = `${out}/runs/${r.id}`;
      await Deno.mkdir(dst, { recursive: true });
      for await (const f of Deno.readDir(`${shard}/runs/${r.id}`)) {
        if (f.isFile && !f.name.startsWith("ckpt")) {
          await Deno.copyFile(`${shard}/runs/${r.id}/${f.name}`, `${dst}/${f.name}`);
        }
      }
      copied++;
    }
  }
  await writeGridSummary(out);
  return copied;
}
