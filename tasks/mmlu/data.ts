/**
 * MMLU (Hendrycks et al.): 57 subjects, `dev/<subject>_dev.csv` (5 exemplars) and
 * `test/<subject>_test.csv`. Both layouts are read: the original (no header, answer letter A–D)
 * and the header `question,choice0..choice3,answer` with answer indices 0–3. Subjects map to the
 * paper's four categories as in its `categories.py`.
 */
import { parseCsvRecords } from "../csv.ts";

/** One question. */
export interface MmluQuestion {
  /** Question text. */
  question: string;
  /** The four choices, A–D. */
  choices: [string, string, string, string];
  /** Index 0–3 of the right choice. */
  answer: number;
}

const SUBCATEGORY: Record<string, string> = {
  abstract_algebra: "math",
  anatomy: "health",
  astronomy: "physics",
  business_ethics: "business",
  clinical_knowledge: "health",
  college_biology: "biology",
  college_chemistry: "chemistry",
  college_computer_science: "computer science",
  college_mathematics: "math",
  college_medicine: "health",
  college_physics: "physics",
  computer_security: "computer science",
  conceptual_physics: "physics",
  econometrics: "economics",
  electrical_engineering: "engineering",
  elementary_mathematics: "math",
  formal_logic: "philosophy",
  global_facts: "other",
  high_school_biology: "biology",
  high_school_chemistry: "chemistry",
  high_school_computer_science: "computer science",
  high_school_european_history: "history",
  high_school_geography: "geography",
  high_school_government_and_politics: "politics",
  high_school_macroeconomics: "economics",
  high_school_mathematics: "math",
  high_school_microeconomics: "economics",
  high_school_physics: "physics",
  high_school_psychology: "psychology",
  high_school_statistics: "math",
  high_school_us_history: "history",
  high_school_world_history: "history",
  human_aging: "health",
  human_sexuality: "culture",
  international_law: "law",
  jurisprudence: "law",
  logical_fallacies: "philosophy",
  machine_learning: "computer science",
  management: "business",
  marketing: "business",
  medical_genetics: "health",
  miscellaneous: "other",
  moral_disputes: "philosophy",
  moral_scenarios: "philosophy",
  nutrition: "health",
  philosophy: "philosophy",
  prehistory: "history",
  professional_accounting: "other",
  professional_law: "law",
  professional_medicine: "health",
  professional_psychology: "psychology",
  public_relations: "politics",
  security_studies: "politics",
  sociology: "culture",
  us_foreign_policy: "politics",
  virology: "health",
  world_religions: "philosophy",
};

/** The 57 subjects, sorted. */
export const MMLU_SUBJECTS: string[] = Object.keys(SUBCATEGORY).sort();

/** The four reporting categories. */
export type MmluCategory = "STEM" | "humanities" | "social sciences" | "other";

const CATEGORY_OF: Record<string, MmluCategory> = {
  physics: "STEM",
  chemistry: "STEM",
  biology: "STEM",
  "computer science": "STEM",
  math: "STEM",
  engineering: "STEM",
  history: "humanities",
  philosophy: "humanities",
  law: "humanities",
  politics: "social sciences",
  culture: "social sciences",
  economics: "social sciences",
  geography: "social sciences",
  psychology: "social sciences",
  other: "other",
  business: "other",
  health: "other",
};

/** A subject's category (errors on an unknown subject). */
export function mmluCategory(subject: string): MmluCategory {
  const sub = SUBCATEGORY[subject];
  if (!sub) throw new RangeError(`unknown MMLU subject "${subject}"`);
  return CATEGORY_OF[sub];
}

// The answer field exactly: one letter (original layout) or one digit (indexed layout). Looser
// parses read "AB" as A, "0x2" as 2 or "1e0" as 1.
const ANSWER_LETTERS = ["A", "B", "C", "D"];
const ANSWER_DIGITS = ["0", "1", "2", "3"];

/**
 * Parse one subject file's text (either layout); errors name `source` and the line. A file
 * without questions is an error too.
 */
export function parseMmluCsv(text: string, source: string): MmluQuestion[] {
  const records = parseCsvRecords(text, source).filter((r) =>
    !(r.fields.length === 1 && r.fields[0] === "")
  );
  const rows = records.map((r) => r.fields);
  const header = rows[0]?.[0] === "question" && rows[0]?.[5] === "answer";
  const questions = rows.slice(header ? 1 : 0).map((r, i): MmluQuestion => {
    // The physical line the record starts on (quoted fields may span lines).
    const where = `${source}: line ${records[i + (header ? 1 : 0)].line}`;
    if (r.length !== 6) {
      throw new Error(`${where}: ${r.length} fields, expected 6 (question, 4 choices, answer)`);
    }
    const a = r[5].trim();
    const answer = (header ? ANSWER_DIGITS : ANSWER_LETTERS).indexOf(a);
    if (answer < 0) {
      throw new Error(`${where}: answer "${a}" is not one of ${header ? "0-3" : "A-D"}`);
    }
    return { question: r[0], choices: [r[1], r[2], r[3], r[4]], answer };
  });
  if (!questions.length) throw new Error(`${source}: no questions`);
  return questions;
}

/** A subject's split from `<dataDir>/mmlu/<split>/<subject>_<split>.csv`. */
export async function loadMmlu(
  dataDir: string,
  subject: string,
  split: "dev" | "test",
  limit?: number,
): Promise<MmluQuestion[]> {
  mmluCategory(subject);
  const path = `${dataDir}/mmlu/${split}/${subject}_${split}.csv`;
  const qs = parseMmluCsv(await Deno.readTextFile(path), path);
  return limit === undefined ? qs : qs.slice(0, limit);
}

/** "high_school_physics" → "high school physics". */
export function formatSubject(subject: string): string {
  return subject.split("_").join(" ");
}

/** One question as the MMLU prompt formats it, with its answer letter when `withAnswer`. */
export function formatQuestion(q: MmluQuestion, withAnswer: boolean): string {
  let s = q.question;
  q.choices.forEach((c, j) => s += `\n${"ABCD"[j]}. ${c}`);
  s += "\nAnswer:";
  return withAnswer ? `${s} ${"ABCD"[q.answer]}\n\n` : s;
}

/** The k-shot prompt (k ≤ dev exemplars) ending in "Answer:". */
export function mmluPrompt(
  subject: string,
  dev: MmluQuestion[],
  q: MmluQuestion,
  shots: number,
): string {
  // Hendrycks' format_subject puts a space before every word and the template adds one more:
  // "…about  abstract algebra." (two spaces), byte for byte.
  const words = subject.split("_").map((w) => ` ${w}`).join("");
  let s = `The following are multiple choice questions (with answers) about ${words}.\n\n`;
  for (const d of dev.slice(0, shots)) s += formatQuestion(d, true);
  return s + formatQuestion(q, false);
}
