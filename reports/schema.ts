/**
 * Report schemas (zod). Reports are validated when written and again when served, so a hand-edited
 * or truncated file is refused with the field that is wrong.
 */
import { z } from "zod";

/** One kernel self-check row. */
export const SelfCheckRowSchema = z.object({
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

/** `reports/out/selfcheck.json`, written by `deno task reproduce`. */
export const SelfCheckReportSchema = z.object({
  kind: z.literal("selfcheck"),
  date: z.string(),
  adapter: z.string(),
  backend: z.string(),
  deno: z.string(),
  seconds: z.number().nonnegative(),
  results: z.array(SelfCheckRowSchema),
});

/** A parsed self-check report. */
export type SelfCheckReport = z.infer<typeof SelfCheckReportSchema>;

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
