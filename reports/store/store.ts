/**
 * The report store: one interface over where run reports live (a reports folder, Deno KV).
 * Reports are validated once when they enter a store and indexed as summary rows (listings),
 * down-sampled loss curves (the grid page's plots) and full reports (on demand).
 */
import { type RunReport, RunReportSchema, type SelfCheckReport } from "../../grid/schema.ts";

/** A run id as the report schema defines it (checked before any key or path is built). */
export const RUN_ID = /^[a-z0-9_]+-(commonsense|mmlu|instruction)-s-?\d+$/;

/** Longest run id a store accepts (long names fail in file systems with "name too long"). */
export const MAX_ID_LENGTH = 200;

/** Whether `id` may name a run: the schema's pattern within {@link MAX_ID_LENGTH}. */
export function isRunId(id: string): boolean {
  return id.length <= MAX_ID_LENGTH && RUN_ID.test(id);
}

/** Most points of a stored plot curve. */
export const CURVE_POINTS = 1000;

/** Largest report a store reads or accepts (bytes of JSON). */
export const MAX_REPORT_BYTES = 64 * 1024 * 1024;

/** Largest adapter file a store accepts (bytes). */
export const MAX_ADAPTER_BYTES = 256 * 1024 * 1024;

/**
 * One row of a listing: the report without its loss curve and sample generations (the heavy
 * parts), plus the curve's length, the final loss and the headline score.
 */
export type RunSummary = Omit<RunReport, "lossCurve" | "samples"> & {
  /** Points of the full loss curve. */
  steps: number;
  /** Last loss of the curve (null: no training). */
  finalLoss: number | null;
  /** Commonsense generation average or MMLU average. */
  score: number;
};

/** An entry a store could not serve, and why (never an absolute path or file contents). */
export interface InvalidEntry {
  /** The entry relative to the store, e.g. `runs/x`. */
  entry: string;
  /** What is wrong with it. */
  reason: string;
}

/**
 * A listing. A store returns the same object while nothing changed, so a caller may cache what
 * it derives from one (rendered pages, serialised JSON) by identity.
 */
export interface Listing {
  /** Valid runs, sorted by id. */
  readonly runs: readonly RunSummary[];
  /** Entries that are not valid runs. */
  readonly invalid: readonly InvalidEntry[];
}

/** What a {@link ReportStore.put} did. */
export type PutResult =
  | { status: "created"; id: string }
  | { status: "unchanged"; id: string }
  | { status: "conflict"; id: string; reason: string }
  | { status: "invalid"; id: string; reason: string };

/** Where run reports live: listed, read, and added without overwriting. */
export interface ReportStore {
  /** Summaries of the valid runs and the entries that are not. */
  list(): Promise<Listing>;
  /** One full report (null: no such run, or an invalid one). */
  get(id: string): Promise<RunReport | null>;
  /** The down-sampled loss curve of a run (≤ {@link CURVE_POINTS} points; null: no such run). */
  curve(id: string): Promise<[number, number][] | null>;
  /** The kernel self-check report, when the store has one. */
  selfcheck(): Promise<SelfCheckReport | null>;
  /**
   * Add a report, validated with the schema. The same id with the same config hash and content
   * is `unchanged`; the same id with anything else is a `conflict` and nothing is overwritten.
   */
  put(report: unknown): Promise<PutResult>;
  /**
   * Add a run's adapter file; its SHA-256 must equal the report's `adapterChecksum`. Same
   * bytes again: `unchanged`; a missing run: `invalid`.
   */
  putAdapter(id: string, bytes: Uint8Array): Promise<PutResult>;
  /** The adapter file of a run (null: none). */
  adapter(id: string): Promise<Uint8Array | null>;
  /** Release files and handles. */
  close(): void;
}

/** The listing row of a report. */
export function summarize(r: RunReport): RunSummary {
  const { lossCurve, samples: _samples, ...rest } = r;
  return {
    ...rest,
    steps: lossCurve.length,
    finalLoss: lossCurve.at(-1)?.[1] ?? null,
    score: r.family === "commonsense"
      ? r.metrics.commonsense?.average ?? 0
      : r.metrics.mmlu?.average ?? 0,
  };
}

/**
 * A curve for plots: at most `max` points, as bucket means over equal runs of consecutive steps
 * (x: the bucket's last step), the first point kept. The buckets depend only on the curve's
 * length, not its values, so seeds of one configuration keep the same steps and the grid's
 * mean-over-seeds stays aligned; means smooth noise instead of aliasing it as a stride would.
 * The run page plots the full curve (with min/max down-sampling that keeps spikes).
 */
export function downsampleCurve(
  curve: readonly [number, number][],
  max = CURVE_POINTS,
): [number, number][] {
  const n = curve.length;
  if (n <= max) return curve.map(([x, y]) => [x, y]);
  const out: [number, number][] = [[curve[0][0], curve[0][1]]];
  const buckets = max - 1;
  const inner = n - 1;
  for (let b = 0; b < buckets; b++) {
    const start = 1 + Math.floor((b * inner) / buckets);
    const end = 1 + Math.floor(((b + 1) * inner) / buckets);
    if (end <= start) continue;
    let sum = 0;
    for (let j = start; j < end; j++) sum += curve[j][1];
    out.push([curve[end - 1][0], sum / (end - start)]);
  }
  return out;
}

/** JSON with object keys sorted: equal reports give equal text whatever their key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
        : v,
  );
}

/**
 * Validate a report entering a store: a `RunReport` or an `invalid` result naming the field.
 * Only the field path and zod's message are kept, never the offending value.
 */
export function validateReport(
  input: unknown,
): RunReport | Extract<PutResult, { status: "invalid" }> {
  const parsed = RunReportSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const o = input as { id?: unknown } | null;
  const id = typeof o === "object" && o && typeof o.id === "string" && isRunId(o.id) ? o.id : "";
  const issue = parsed.error.issues[0];
  return {
    status: "invalid",
    id,
    reason: `field "${issue.path.map(String).join(".")}": ${issue.message}`,
  };
}

/** Compare an incoming report with the stored one: `unchanged` or a `conflict`. */
export function compareReports(stored: RunReport, incoming: RunReport): PutResult {
  if (stored.configHash !== incoming.configHash) {
    return {
      status: "conflict",
      id: incoming.id,
      reason: `run ${incoming.id} exists with another config hash`,
    };
  }
  return canonicalJson(stored) === canonicalJson(incoming)
    ? { status: "unchanged", id: incoming.id }
    : {
      status: "conflict",
      id: incoming.id,
      reason: `run ${incoming.id} exists with the same config hash but other content`,
    };
}

/** Lower-case hex SHA-256 of `bytes`. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
