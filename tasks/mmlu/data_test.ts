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
    /x\.csv: line 1: answer "E" is not one of A-D/,
  );
  assert.throws(() => parseMmluCsv("q,a,b\n", "x.csv"), /x\.csv: line 1: 3 fields, expected 6/);
  assert.throws(() => parseCsv('a,"b', "y.csv"), /y\.csv: line 1: unterminated quoted field/);
  assert.throws(() => mmluCategory("cooking"), /unknown MMLU subject/);
});

Deno.test("mmlu: an answer is exactly one of A-D (or 0-3 under the header); near misses are refused by file and line", () => {
  const header = "question,choice0,choice1,choice2,choice3,answer\n";
  // Positive controls: each valid answer of each layout.
  "ABCD".split("").forEach((a, i) =>
    assert.equal(parseMmluCsv(`q,a,b,c,d,${a}\n`, "o.csv")[0].answer, i)
  );
  for (const a of ["0", "1", "2", "3"]) {
    assert.equal(parseMmluCsv(`${header}q,a,b,c,d,${a}\n`, "i.csv")[0].answer, Number(a));
  }
  for (const bad of ["AB", "BCD", "a", "0", ""]) {
    assert.throws(
      () => parseMmluCsv(`q,a,b,c,d,A\nq2,a,b,c,d,${bad}\n`, "o.csv"),
      new RegExp(`o\\.csv: line 2: answer "${bad}" is not one of A-D`),
      bad,
    );
  }
  for (const bad of ["0x2", "1e0", "1.0", "-0", "4", "B", " "]) {
    assert.throws(
      () => parseMmluCsv(`${header}q,a,b,c,d,${bad}\n`, "i.csv"),
      new RegExp(`i\\.csv: line 2: answer "${bad.trim()}" is not one of 0-3`),
      bad,
    );
  }
});

Deno.test("csv: stray text after a closing quote, a quote inside a field and unterminated quotes name the file and line", () => {
  // Positive controls: quoted fields with commas, doubled quotes, newlines; empty quoted fields.
  assert.deepEqual(parseCsv('"a","b ""c""",""\n"x\ny",z', "ok.csv"), [
    ["a", 'b "c"', ""],
    ["x\ny", "z"],
  ]);
  assert.throws(
    () => parseCsv('q,a\n"What is 1+1?"oops,b\n', "s.csv"),
    /s\.csv: line 2: text after a closing quote \(field 1\)/,
  );
  assert.throws(
    () => parseCsv('q,"a" ,b\n', "s.csv"),
    /s\.csv: line 1: text after a closing quote \(field 2\)/,
  );
  assert.throws(
    () => parseCsv('q,ab"c,d\n', "m.csv"),
    /m\.csv: line 1: quote inside an unquoted field/,
  );
  assert.throws(
    () => parseCsv('a,b\nc,"d\ne,f\n', "u.csv"),
    /u\.csv: line 2: unterminated quoted field/,
  );
  // Through the MMLU loader, the error keeps the file name.
  assert.throws(
    () => parseMmluCsv('q,a,b,c,"d"x,A\n', "physics_test.csv"),
    /physics_test\.csv: line 1: text after a closing quote/,
  );
});

Deno.test("mmlu: an empty file or one with only the header is refused by name", async () => {
  assert.throws(() => parseMmluCsv("", "empty.csv"), /empty\.csv: no questions/);
  assert.throws(() => parseMmluCsv("\n\n", "blank.csv"), /blank\.csv: no questions/);
  assert.throws(
    () => parseMmluCsv("question,choice0,choice1,choice2,choice3,answer\n", "h.csv"),
    /h\.csv: no questions/,
  );
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/mmlu/test`, { recursive: true });
  await Deno.writeTextFile(`${dir}/mmlu/test/anatomy_test.csv`, "");
  await assert.rejects(
    loadMmlu(dir, "anatomy", "test"),
    /mmlu\/test\/anatomy_test\.csv: no questions/,
  );
  await Deno.remove(dir, { recursive: true });
});
