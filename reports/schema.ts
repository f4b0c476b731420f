/**
 * Report schemas (zod). Reports are validated when written and again when served, so a hand-edited
 * or truncated file is refused with the field that is wrong.
 */
import { z } from "zod";

/**
 * The part of a zod schema the public API promises (the objects are zod schemas; typing them
 * this way keeps zod's internal types out of our documented surface).
 */
export interface ReportSchema<T> {
  /** Parse or throw a zod error listing the failing fields. */
  parse(data: unknown): T;
  /** Parse without throwing. */
  safeParse(
    data: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
}

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

/** Schema of {@link SelfCheckReport}. */
export const SelfCheckReportSchema: ReportSchema<SelfCheckReport> = z.object({
  kind: z.literal("selfcheck"),
  date: z.string(),
  adapter: z.string(),
  backend: z.string(),
  deno: z.string(),
  seconds: z.number().nonnegative(),
  results: z.array(SelfCheckRowZod),
});

/** Parse a report file's text; the error names the file and the failing field. */
export function parseSelfCheckReport(text: string, file: string): SelfCheckReport {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const parsed = SelfCheckReportSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: field "${issue.path.join(".")}": ${issue.message}`);
  }
  return parsed.data;
}
