/**
 * Seeds folded into one row per (family, adapter): mean ± sd of each metric and the sample sizes
 * behind them, and plain sentences on whether adapters differ from the base model and from each
 * other by more than seed noise.
 */
import { beyondSeedNoise, meanSd } from "../evals/stats.ts";
import type { RunReport } from "./schema.ts";

/** Mean, sample sd and the number of seeds of one metric. */
export interface SeedStat {
  /** Mean over seeds. */
  mean: number;
  /** Sample standard deviation over seeds (0 with one seed). */
  sd: number;
  /** Seeds. */
  n: number;
  /** The per-seed values. */
  values: number[];
}

/** One configuration of the grid over its seeds. */
export interface ConfigRow {
  /** Task family. */
  family: RunReport["family"];
  /** Adapter name ("base" style names have `params` 0). */
  adapter: string;
  /** Trainable parameters (the same for every seed). */
  params: number;
  /** The paper's count, when the profile knows it. */
  paperParams: number | null;
  /** Run ids, by seed. */
  runs: string[];
  /** Held-out loss (nats per response token). */
  heldOut: SeedStat | null;
  /** Commonsense: mean multiple-choice acc over tasks. */
  choice: SeedStat | null;
  /** Commonsense: mean generation accuracy over tasks. */
  generation: SeedStat | null;
  /** Commonsense: the share of generations with no answer word. */
  unparseable: SeedStat | null;
  /** MMLU accuracy over all questions. */
  mmlu: SeedStat | null;
  /** Questions behind one seed's accuracy (multiple choice, generation, MMLU). */
  questions: { choice: number; generation: number; mmlu: number };
}

function stat(values: (number | undefined)[]): SeedStat | null {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (!v.length) return null;
  const { mean, sd, n } = meanSd(v);
  return { mean, sd, n, values: v };
}

const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);

/** Base model first, then the MoKA variants, then the baselines (by name). */
function configOrder(a: ConfigRow, b: ConfigRow): number {
  const rank = (r: ConfigRow) => (r.params === 0 ? 0 : r.adapter.startsWith("moka") ? 1 : 2);
  return rank(a) - rank(b) || a.adapter.localeCompare(b.adapter);
}

/** Fold run reports into one row per (family, adapter): base first, then MoKA, then baselines. */
export function configRows(reports: RunReport[]): ConfigRow[] {
  const groups = new Map<string, RunReport[]>();
  for (const r of reports) {
    const key = `${r.family}\u0000${r.adapter}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const rows = [...groups.values()].map((rs) => {
    const first = rs[0];
    const cs = rs.map((r) => r.metrics.commonsense);
    return {
      family: first.family,
      adapter: first.adapter,
      params: first.trainableParams,
      paperParams: first.paperTrainableParams ?? null,
      runs: rs.map((r) => r.id),
      heldOut: stat(rs.map((r) => r.metrics.heldOut?.loss)),
      choice: stat(cs.map((c) => c?.choiceAverage)),
      generation: stat(cs.map((c) => c?.average)),
      unparseable: stat(cs.map((c) => {
        if (!c) return undefined;
        const t = Object.values(c.tasks);
        return sum(t.map((x) => x.total))
          ? sum(t.map((x) => x.unparseable)) / sum(t.map((x) => x.total))
          : undefined;
      })),
      mmlu: stat(rs.map((r) => r.metrics.mmlu?.average)),
      questions: {
        choice: sum(Object.values(cs[0]?.choice ?? {}).map((x) => x.total)),
        generation: sum(Object.values(cs[0]?.tasks ?? {}).map((x) => x.total)),
        mmlu: first.metrics.mmlu?.total ?? sum(
          Object.values(first.metrics.mmlu?.subjects ?? {}).map((x) => x.total),
        ),
      },
    };
  });
  return rows.sort(configOrder);
}

/** Which metric a verdict is about, and whether lower is better. */
export interface MetricSpec {
  /** Row field. */
  key: "heldOut" | "choice" | "generation" | "mmlu";
  /** Name in sentences. */
  label: string;
  /** Lower is better (a loss). */
  lowerIsBetter: boolean;
}

/**
 * Sentences on one metric of one family: how each adapter compares with the base model (whose
 * evaluation is deterministic, so only the adapter's seed spread counts), and whether the best
 * two adapters differ by more than seed noise (2 standard errors of the difference).
 */
export function noiseVerdicts(rows: ConfigRow[], metric: MetricSpec): string[] {
  const withStat = rows.filter((r) => r[metric.key] !== null);
  const base = withStat.find((r) => r.params === 0);
  const adapters = withStat.filter((r) => r.params > 0);
  if (!adapters.length) return [];
  const fmt = (
    x: number,
  ) => (metric.key === "heldOut" ? x.toFixed(3) : `${(100 * x).toFixed(1)} %`);
  const all = withStat.flatMap((r) => r[metric.key]!.values);
  if (all.every((v) => v === all[0])) {
    return [`${metric.label}: every run scores ${fmt(all[0])}; nothing to compare.`];
  }
  const better = (a: number, b: number) => (metric.lowerIsBetter ? a < b : a > b);
  const out: string[] = [];
  if (base) {
    const b = base[metric.key]!.mean;
    const beyond = adapters.filter((r) => {
      const s = r[metric.key]!;
      if (s.n < 2) return false;
      return better(s.mean, b) && Math.abs(s.mean - b) > 2 * (s.sd / Math.sqrt(s.n));
    });
    const names = beyond.map((r) => r.adapter);
    out.push(
      `${metric.label}: ${
        names.length === adapters.length
          ? "every adapter"
          : names.length
          ? `${names.join(", ")} (${names.length} of ${adapters.length} adapters)`
          : "no adapter"
      } improves on the base model (${fmt(b)}) by more than seed noise.`,
    );
  }
  const ranked = [...adapters].sort((x, y) =>
    metric.lowerIsBetter
      ? x[metric.key]!.mean - y[metric.key]!.mean
      : y[metric.key]!.mean - x[metric.key]!.mean
  );
  if (ranked.length >= 2) {
    const [a, b] = ranked;
    const v = beyondSeedNoise(a[metric.key]!.values, b[metric.key]!.values);
    const what = `best ${a.adapter} (${fmt(a[metric.key]!.mean)}) vs next ${b.adapter} (${
      fmt(b[metric.key]!.mean)
    })`;
    out.push(
      v.verdict === "unknown"
        ? `${metric.label}: ${what}: one seed each, no noise estimate.`
        : `${metric.label}: ${what}: ${
          v.verdict === "beyond" ? "the difference exceeds" : "the difference is within"
        } seed noise (Δ ${fmt(Math.abs(v.difference))}, 2 SE ${fmt(2 * v.standardError)}).`,
    );
  }
  return out;
}
