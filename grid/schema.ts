/**
 * Report schemas (zod). Reports are validated when written and again when served, so a hand-edited
 * or truncated file is refused with the field that is wrong.
 */
import { z } from "../deps/zod.ts";
import type { ChoiceScore } from "../evals/choice.ts";
import type { Same, Schema } from "../models/schema.ts";

/** A zod schema as the public API sees it (see `models/schema.ts`). */
export type ReportSchema<T> = Schema<T>;

/** One kernel self-check row. */
export interface SelfCheckRow {
  /** Kernel name, e.g. `register-16x16-wg8x8`. */
  kernel: string;
  /** The matmul problem (m, n, k and options). */
  spec: { m: number; n: number; k: number; [option: string]: unknown };
  /** ‖gpu − cpu‖ / ‖cpu‖ (null when not finite). */
  relativeError: number | null;
  /** Tolerance it was held to. */
  tolerance: number;
  /** relativeError < tolerance. */
  ok: boolean;
}

/** `reports/out/selfcheck.json`, written by `deno task reproduce`. */
export interface SelfCheckReport {
  /** Report kind tag. */
  kind: "selfcheck";
  /** ISO date of the run. */
  date: string;
  /** Adapter description. */
  adapter: string;
  /** WebGPU backend Deno was started with. */
  backend: string;
  /** Deno version. */
  deno: string;
  /** Wall time of the self-check. */
  seconds: number;
  /** One row per kernel × problem. */
  results: SelfCheckRow[];
}

const SelfCheckRowZod = z.object({
  kernel: z.string(),
  spec: z.object({
    m: z.number().int().nonnegative(),
    n: z.number().int().nonnegative(),
    k: z.number().int().nonnegative(),
  }).loose(),
  relativeError: z.number().nullable(),
  tolerance: z.number().positive(),
  ok: z.boolean(),
});

/** Schema of {@link SelfCheckRow}. */
export const SelfCheckRowSchema: ReportSchema<SelfCheckRow> = SelfCheckRowZod;

const SelfCheckReportZod = z.object({
  kind: z.literal("selfcheck"),
  date: z.string(),
  adapter: z.string(),
  backend: z.string(),
  deno: z.string(),
  seconds: z.number().nonnegative(),
  results: z.array(SelfCheckRowZod),
});

/** Schema of {@link SelfCheckReport}. */
export const SelfCheckReportSchema: ReportSchema<SelfCheckReport> = SelfCheckReportZod;

/** Parse a report file's text with `schema`; the error names the file and the failing field. */
export function parseReportText<T>(schema: ReportSchema<T>, text: string, file: string): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: field "${issue.path.join(".")}": ${issue.message}`);
  }
  return parsed.data;
}

/** Parse `selfcheck.json` text; the error names the file and the failing field. */
export function parseSelfCheckReport(text: string, file: string): SelfCheckReport {
  return parseReportText(SelfCheckReportSchema, text, file);
}

/** One fit of the expressiveness experiment. */
export interface ExpressivenessRow {
  /** Target name (e.g. `random-64`, `stories260K-wq0`). */
  target: string;
  /** Budget the configuration was sized to. */
  budget: number;
  /** Adapter family (LoRA, DoRA, MoKA, ...). */
  family: string;
  /** The adapter config (as validated by the adapter's zod schema). */
  config: Record<string, unknown>;
  /** Exact trainable parameters. */
  params: number;
  /** Final ‖ΔW − T‖_F / ‖T‖_F. */
  relError: number;
  /** [step, relative error] along the run. */
  curve: [number, number][];
  /** Wall seconds of the fit. */
  seconds: number;
}

/** `expressiveness.json`, written by `deno task expressiveness`. */
export interface ExpressivenessReport {
  /** Report kind tag. */
  kind: "expressiveness";
  /** ISO date. */
  date: string;
  /** GPU adapter description. */
  adapter: string;
  /** Layer size d (targets are d×d). */
  d: number;
  /** Adam steps per fit, peak lr, seed. */
  steps: number;
  /** Peak learning rate. */
  lr: number;
  /** Seed of targets and inits. */
  seed: number;
  /** Per target: best rank-r truncation error (Eckart–Young), the floor LoRA can reach. */
  lowRankFloor: Record<string, [number, number][]>;
  /** All fits. */
  rows: ExpressivenessRow[];
}

const ExpressivenessRowZod = z.object({
  target: z.string(),
  budget: z.number().int().positive(),
  family: z.string(),
  config: z.record(z.string(), z.unknown()),
  params: z.number().int().positive(),
  relError: z.number().nonnegative(),
  curve: z.array(z.tuple([z.number().int().nonnegative(), z.number().nonnegative()])),
  seconds: z.number().nonnegative(),
});

const ExpressivenessReportZod = z.object({
  kind: z.literal("expressiveness"),
  date: z.string(),
  adapter: z.string(),
  d: z.number().int().positive(),
  steps: z.number().int().positive(),
  lr: z.number().positive(),
  seed: z.number().int(),
  lowRankFloor: z.record(z.string(), z.array(z.tuple([z.number(), z.number()]))),
  rows: z.array(ExpressivenessRowZod),
});

/** Schema of {@link ExpressivenessReport}. */
export const ExpressivenessReportSchema: ReportSchema<ExpressivenessReport> =
  ExpressivenessReportZod;

/** One run of the reproduction grid (`reports/out/runs/<id>/report.json`). */
export interface RunReport {
  /** Report kind tag. */
  kind: "run";
  /** `<adapter>-<family>-s<seed>`. */
  id: string;
  /** Grid profile. */
  profile: string;
  /** What the profile is and is not (shown as the pages' banner). */
  profileDescription?: string;
  /** Adapter name ("base" = no fine-tuning). */
  adapter: string;
  /** Adapter config (null for the base model). */
  adapterConfig: Record<string, unknown> | null;
  /** Task family (`instruction` in older reports is read as `mmlu`). */
  family: "commonsense" | "mmlu";
  /** Seed. */
  seed: number;
  /** SHA-256 of the run's canonical config: same hash ⇒ same run. */
  configHash: string;
  /** The run's config. */
  config: Record<string, unknown>;
  /** Git commit of the code (or "unknown"). */
  git: string;
  /** Deno version. */
  deno: string;
  /** GPU adapter description. */
  device: string;
  /** Model file/folder. */
  model: string;
  /** Base weight storage. */
  base: string;
  /** Trainable parameters (sum over attached adapters). */
  trainableParams: number;
  /** The paper's count for this adapter and model, when the profile knows it. */
  paperTrainableParams?: number | null;
  /** Metrics: held-out loss, commonsense accuracies and/or MMLU. */
  metrics: {
    /** Mean NLL per response token on records not trained on. */
    heldOut?: { loss: number; tokens: number; examples: number };
    commonsense?: {
      /** Generation accuracy per task, with its 95 % Wilson interval and baselines. */
      tasks: Record<string, TaskAccuracy>;
      /** Mean generation accuracy over tasks. */
      average: number;
      /** Log-likelihood multiple choice per task (lm-eval's acc and acc_norm). */
      choice?: Record<string, ChoiceAccuracy>;
      /** Mean multiple-choice acc over tasks. */
      choiceAverage?: number;
      /** Mean chance accuracy over tasks. */
      chanceAverage?: number;
    };
    mmlu?: {
      subjects: Record<string, { accuracy: number; correct: number; total: number }>;
      categories: Record<string, number>;
      average: number;
      subjectMean: number;
      /** Questions in all. */
      total?: number;
      /** Right answers in all. */
      correct?: number;
      /** 95 % Wilson interval of `average`. */
      ci?: [number, number];
      /** Always answering the most frequent gold letter. */
      majority?: number;
    };
  };
  /** A few generations per task with the extracted and the gold answer. */
  samples?: { task: string; response: string; extracted: string; gold: string }[];
  /** [step, loss]. */
  lossCurve: [number, number][];
  /** Wall seconds and training throughput. */
  timings: { trainSeconds: number; evalSeconds: number; trainTokensPerSecond: number | null };
  /** SHA-256 of the saved adapter file (null for the base model). */
  adapterChecksum: string | null;
  /** ISO date the run finished. */
  date: string;
}

/** A generation accuracy with what it rests on. */
export interface TaskAccuracy {
  /** correct / total. */
  accuracy: number;
  /** Right predictions. */
  correct: number;
  /** Records. */
  total: number;
  /** Generations with no answer word. */
  unparseable: number;
  /** 95 % Wilson interval. */
  ci?: [number, number];
  /** Expected accuracy of a uniform guess. */
  chance?: number;
  /** Always answering the most frequent gold answer. */
  majority?: number;
}

/** Multiple-choice accuracy by log-likelihood (lm-eval's acc and acc_norm) and its interval. */
export interface ChoiceAccuracy extends ChoiceScore {
  /** 95 % Wilson interval of acc. */
  ci: [number, number];
}

const Fraction = z.number().min(0).max(1);
const Interval = z.tuple([Fraction, Fraction]);
const Accuracy = z.object({
  accuracy: Fraction,
  correct: z.number().int().nonnegative(),
  total: z.number().int().nonnegative(),
});

const RunReportZod = z.object({
  kind: z.literal("run"),
  id: z.string().regex(/^[a-z0-9_]+-(commonsense|mmlu|instruction)-s-?\d+$/),
  profile: z.string(),
  profileDescription: z.string().optional(),
  adapter: z.string(),
  adapterConfig: z.record(z.string(), z.unknown()).nullable(),
  family: z.enum(["commonsense", "mmlu", "instruction"]).transform((f) =>
    f === "instruction" ? "mmlu" as const : f
  ),
  seed: z.number().int(),
  configHash: z.string().regex(/^[0-9a-f]{64}$/),
  config: z.record(z.string(), z.unknown()),
  git: z.string(),
  deno: z.string(),
  device: z.string(),
  model: z.string(),
  base: z.string(),
  trainableParams: z.number().int().nonnegative(),
  paperTrainableParams: z.number().positive().nullable().optional(),
  metrics: z.object({
    heldOut: z.object({
      loss: z.number().nonnegative(),
      tokens: z.number().int().positive(),
      examples: z.number().int().positive(),
    }).optional(),
    commonsense: z.object({
      tasks: z.record(
        z.string(),
        Accuracy.extend({
          unparseable: z.number().int().nonnegative(),
          ci: Interval.optional(),
          chance: Fraction.optional(),
          majority: Fraction.optional(),
        }),
      ),
      average: Fraction,
      choice: z.record(
        z.string(),
        z.object({
          acc: Fraction,
          accNorm: Fraction,
          correct: z.number().int().nonnegative(),
          correctNorm: z.number().int().nonnegative(),
          total: z.number().int().nonnegative(),
          chance: Fraction,
          ci: Interval,
        }),
      ).optional(),
      choiceAverage: Fraction.optional(),
      chanceAverage: Fraction.optional(),
    }).optional(),
    mmlu: z.object({
      subjects: z.record(z.string(), Accuracy),
      categories: z.record(z.string(), Fraction),
      average: Fraction,
      subjectMean: Fraction,
      total: z.number().int().nonnegative().optional(),
      correct: z.number().int().nonnegative().optional(),
      ci: Interval.optional(),
      majority: Fraction.optional(),
    }).optional(),
  }),
  samples: z.array(z.object({
    task: z.string(),
    response: z.string(),
    extracted: z.string(),
    gold: z.string(),
  })).optional(),
  lossCurve: z.array(z.tuple([z.number().int().positive(), z.number()])),
  timings: z.object({
    trainSeconds: z.number().nonnegative(),
    evalSeconds: z.number().nonnegative(),
    trainTokensPerSecond: z.number().nonnegative().nullable(),
  }),
  adapterChecksum: z.string().regex(/^[0-9a-f]{64}$/).nullable(),
  date: z.string(),
});

/** Schema of {@link RunReport}. */
export const RunReportSchema: ReportSchema<RunReport> = RunReportZod;

// The report interfaces are written out for the documentation; each is checked both ways against
// what its schema outputs, so they cannot drift apart.
const _selfCheckRow: Same<SelfCheckRow, z.output<typeof SelfCheckRowZod>> = true;
const _selfCheck: Same<SelfCheckReport, z.output<typeof SelfCheckReportZod>> = true;
const _expressivenessRow: Same<ExpressivenessRow, z.output<typeof ExpressivenessRowZod>> = true;
const _expressiveness: Same<ExpressivenessReport, z.output<typeof ExpressivenessReportZod>> = true;
const _run: Same<RunReport, z.output<typeof RunReportZod>> = true;

/** Parse a run report's text; the error names the file and the field. */
export function parseRunReport(text: string, file: string): RunReport {
  return parseReportText(RunReportSchema, text, file);
}
