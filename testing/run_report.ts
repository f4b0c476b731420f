/**
 * A valid run report for tests and benches (the report server's fixture), with a loss curve of
 * any length: `steps` points of a decaying, slightly noisy loss.
 */
import type { RunReport } from "../grid/schema.ts";

/** Options of {@link runReport}. */
export interface RunReportOptions {
  /** Adapter name ("base": no training, no adapter). Default: the id's first part. */
  adapter?: string;
  /** Trainable parameters (default 2240; 0 for "base"). */
  params?: number;
  /** Loss curve length (default 2; 0 for "base"). */
  steps?: number;
  /** Config hash (64 hex digits; default "a" × 64). */
  configHash?: string;
  /** Adapter checksum (default "b" × 64; null for "base"). */
  adapterChecksum?: string | null;
}

/** A report for `id` (`<adapter>-<family>-s<seed>`), valid per the run report schema. */
export function runReport(id: string, options: RunReportOptions = {}): RunReport {
  const m = /^([a-z0-9_]+)-(commonsense|mmlu|instruction)-s(-?\d+)$/.exec(id);
  if (!m) throw new Error(`runReport: ${id} is not a run id`);
  const adapter = options.adapter ?? m[1];
  const family = m[2] as RunReport["family"];
  const base = adapter === "base";
  const params = options.params ?? (base ? 0 : 2240);
  const steps = options.steps ?? (params ? 2 : 0);
  const lossCurve: [number, number][] = Array.from({ length: steps }, (_, i) => [
    i + 1,
    +(2.5 * Math.exp(-i / (steps / 3 + 1)) + 0.5 + 0.05 * Math.sin(i * 12.9898)).toFixed(4),
  ]);
  return {
    kind: "run",
    id,
    profile: "test",
    adapter,
    adapterConfig: base ? null : { kind: "lora", r: 2, alpha: 4 },
    family,
    seed: Number(m[3]),
    configHash: options.configHash ?? "a".repeat(64),
    config: { seed: Number(m[3]) },
    git: "abc",
    deno: "2.9.6",
    device: "llvmpipe <x>",
    model: "stories260K.bin",
    base: "nf4",
    trainableParams: params,
    metrics: family === "commonsense"
      ? {
        commonsense: {
          tasks: { boolq: { accuracy: 0.5, correct: 1, total: 2, unparseable: 1 } },
          average: 0.5,
        },
      }
      : {
        mmlu: {
          subjects: { marketing: { accuracy: 0.25, correct: 1, total: 4 } },
          categories: { other: 0.25 },
          average: 0.25,
          subjectMean: 0.25,
        },
      },
    lossCurve,
    timings: { trainSeconds: 1, evalSeconds: 2, trainTokensPerSecond: params ? 100 : null },
    adapterChecksum: options.adapterChecksum !== undefined
      ? options.adapterChecksum
      : base
      ? null
      : "b".repeat(64),
    date: "2026-11-29T00:00:00.000Z",
  };
}
