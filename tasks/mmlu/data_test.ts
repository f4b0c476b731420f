import assert from "node:assert/strict";
import { dataDir } from "../../testing/paths.ts";
import { parseCsv } from "../csv.ts";
import {
  formatQuestion,
  loadMmlu,
  MMLU_SUBJECTS,
  mmluCategory,
  mmluPrompt,
  parseMmluCsv,
} from "./data.ts";

Deno.test("mmlu: 57 subjects in both splits, dev has 5 exemplars, categories cover all", async () => {
  assert.equal(MMLU_SUBJECTS.length, 57);
  const cats = new Map<string, number>();
  let tests = 0;
  for (const s of MMLU_SUBJECTS) {
    assert.equal((await loadMmlu(dataDir(), s, "dev")).length, 5, s);
    tests += (await loadMmlu(dataDir(), s, "test")).length;
    cats.set(mmluCategory(s), (cats.get(mmluCategory(s)) ?? 0) + 1);
  }
  assert.equal(tests, 14042, "the MMLU test set has 14,042 questions");
  assert.deepEqual(Object.fromEntries(cats), {
    STEM: 18,
    humanities: 13,
    "social sciences": 12,
    other: 14,
  });
});

Deno.test("mmlu: CSV quoting, both layouts, the prompt format, and clear errors", () => {
  assert.deepEqual(parseCsv('a,"b,c","say ""hi""\nthere"\r\nd,e,f'), [[
    "a",
    "b,c",
    'say "hi"\nthere',
  ], ["d", "e", "f"]]);
  const original = parseMmluCsv('What is 1+1?,1,2,"3, maybe",4,B\n', "o.csv");
  const indexed = parseMmluCsv(
    'question,choice0,choice1,choice2,choice3,answer\nWhat is 1+1?,1,2,"3, maybe",4,1\n',
    "i.csv",
  );
  assert.deepEqual(original, indexed);
  assert.equal(
    formatQuestion(original[0], true),
    "What is 1+1?\nA. 1\nB. 2\nC. 3, maybe\nD. 4\nAnswer: B\n\n",
  );
  assert.equal(
    mmluPrompt("high_school_physics", original, original[0], 1),
    // Hendrycks' format_subject: a space before each word, after the template's own space.
    "The following are multiple choice questions (with answers) about  high school physics.\n\n" +
      "What is 1+1?\nA. 1\nB. 2\nC. 3, maybe\nD. 4\nAnswer: B\n\nWhat is 1+1?\nA. 1\nB. 2\nC. 3, maybe\nD. 4\nAnswer:",
  );
  assert.throws(
    () => parseMmluCsv("q,a,b,c,d,E\n", "x.csv"),
    /x\.csv: line 1: answer "E" is not A-D/,
  );
  assert.throws(() => parseMmluCsv("q,a,b\n", "x.csv"), /x\.csv: line 1: 3 fields, expected 6/);
  assert.throws(() => parseCsv('a,"b', "y.csv"), /y\.csv: unterminated quoted field/);
  assert.throws(() => mmluCategory("cooking"), /unknown MMLU subject/);
});
