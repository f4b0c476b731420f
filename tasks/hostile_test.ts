/** Hostile benchmark files: each is refused naming the file and the line, field or record. */
import assert from "node:assert/strict";
import { loadRecordFile } from "./commonsense/data.ts";
import { parseCsv } from "./csv.ts";
import { parseMmluCsv } from "./mmlu/data.ts";

Deno.test("csv hostile: CR-only line ends read as LF ones, inside quoted fields too, with true line numbers", () => {
  const lf = 'q1,"two\nlines",b,c,d,A\nq2,a,b,c,d,B\nq3,a,b,c,d,C\n';
  for (const eol of ["\r", "\r\n"]) {
    const text = lf.replaceAll("\n", eol);
    assert.deepEqual(parseCsv(text, "cr.csv"), parseCsv(lf, "lf.csv"), JSON.stringify(eol));
    assert.equal(parseMmluCsv(text, "cr.csv").length, 3);
    assert.equal(parseMmluCsv(text, "cr.csv")[0].choices[0], "two\nlines");
  }
  // A bad answer on the fourth physical line is reported there, whatever the line ends.
  const bad = 'q1,"two\rlines",b,c,d,A\rq2,a,b,c,d,B\rq3,a,b,c,d,E\r';
  assert.throws(() => parseMmluCsv(bad, "cr.csv"), /cr\.csv: line 4: answer "E"/);
  assert.throws(
    () => parseCsv('a,b\r"open\rfield', "u.csv"),
    /^Error: u\.csv: line 2: unterminated quoted field$/,
  );
});

Deno.test("csv hostile: a NUL character is refused, naming the file, line and field", () => {
  assert.throws(
    () => parseCsv("a,b,c\nd,e\u0000x,f\n", "nul.csv"),
    /^Error: nul\.csv: line 2: field 2: NUL character$/,
  );
  assert.throws(
    () => parseCsv('a,"multi\nline\u0000",c\n', "nul.csv"),
    /^Error: nul\.csv: line 2: field 2: NUL character$/,
  );
  assert.throws(
    () => parseMmluCsv("q,a,b,c,d,A\nq\u0000,a,b,c,d,A\n", "test/x_test.csv"),
    /test\/x_test\.csv: line 2: field 1: NUL character/,
  );
});

Deno.test("commonsense hostile: loadRecordFile checks answers against the task its folder names", async () => {
  const rec = (answer: string) => ({ instruction: "q?", input: "", output: "x", answer });
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/boolq`);
  await Deno.writeTextFile(`${dir}/boolq/test.json`, JSON.stringify([rec("true"), rec("maybe")]));
  await assert.rejects(
    loadRecordFile(`${dir}/boolq/test.json`, true),
    /boolq\/test\.json: record 1: field answer: "maybe" is not one of true, false/,
  );
  // An explicit task wins over the folder; `null` says the file mixes tasks.
  await Deno.writeTextFile(`${dir}/boolq/train.json`, JSON.stringify([rec("option1")]));
  assert.equal((await loadRecordFile(`${dir}/boolq/train.json`, true, "winogrande")).length, 1);
  assert.equal((await loadRecordFile(`${dir}/boolq/train.json`, true, null)).length, 1);
  // Outside a task's folder (commonsense_170k, math_10k) answers are any non-empty text.
  await Deno.writeTextFile(`${dir}/mix.json`, JSON.stringify([rec("true"), rec("42")]));
  assert.equal((await loadRecordFile(`${dir}/mix.json`, true)).length, 2);
  await Deno.remove(dir, { recursive: true });
});
