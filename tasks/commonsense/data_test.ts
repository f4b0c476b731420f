import assert from "node:assert/strict";
import { dataDir } from "../../testing/paths.ts";
import { evaluationPrompt, PROTOCOL, trainingExample, trainingText } from "../alpaca.ts";
import {
  answerWords,
  COMMONSENSE_ORDER,
  loadCommonsense,
  loadRecordFile,
  parseRecords,
  parseTask,
} from "./data.ts";
import { ByteFallbackTokenizer } from "../../models/tokenizer/llama2c.ts";

Deno.test("commonsense: the shared files load with their record counts; missing tasks say which file", async () => {
  const counts: Record<string, [number, number | null]> = {
    boolq: [3270, 9427],
    piqa: [1838, null],
    social_i_qa: [1954, null],
    winogrande: [1267, null],
    "ARC-Easy": [2376, 2251],
    "ARC-Challenge": [1172, 1119],
    openbookqa: [500, 4957],
  };
  for (const [task, [test, train]] of Object.entries(counts)) {
    const t = parseTask(task);
    assert.equal((await loadCommonsense(dataDir(), t, "test")).length, test, task);
    if (train !== null) {
      assert.equal((await loadCommonsense(dataDir(), t, "train")).length, train, task);
    }
  }
  const sample = await loadCommonsense(dataDir(), "winogrande", "test", 3);
  assert.equal(sample.length, 3);
  assert.match(sample[0].answer!, /^option[12]$/);
  await assert.rejects(loadCommonsense(dataDir(), "hellaswag", "test"), /hellaswag\/test\.json/);
  assert.equal(COMMONSENSE_ORDER.length, 8);
  assert.equal(parseTask("arc_c"), "ARC-Challenge");
  assert.throws(() => parseTask("squad"), /unknown commonsense task "squad"/);
});

Deno.test("commonsense: a bad record names the file and index; nothing partial is returned", async () => {
  const good = {
    instruction: "q?",
    input: "",
    output: "the correct answer is true",
    answer: "true",
  };
  assert.throws(
    () => parseRecords([good, good, { ...good, answer: undefined }], "t.json", true),
    /t\.json: record 2: field answer/,
  );
  assert.throws(
    () => parseRecords([good, { input: "" }], "t.json", false),
    /t\.json: record 1: field instruction/,
  );
  assert.throws(() => parseRecords({ not: "an array" }, "t.json", false), /expected a JSON array/);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/broken.json`, '[{"instruction": ');
  await assert.rejects(loadRecordFile(`${dir}/broken.json`, false), /broken\.json: /);
  // commonsense_170k-style: a mix of tasks in one training file, no `answer` needed.
  await Deno.writeTextFile(
    `${dir}/mix.json`,
    JSON.stringify([good, { instruction: "p", output: "x" }]),
  );
  assert.equal((await loadRecordFile(`${dir}/mix.json`, false)).length, 2);
  await Deno.remove(dir, { recursive: true });
});

// Exactly what the upstream f-strings produce (16 spaces of indentation, pinned literally).
const S16 = "                ";

Deno.test("protocol: training and evaluation prompts byte for byte as LLM-Adapters' and DoRA's scripts write them", () => {
  assert.equal(
    trainingText({ instruction: "Say hi.", input: "", output: "hi" }),
    "Below is an instruction that describes a task. Write a response that appropriately " +
      "completes the request.  \n\n" +
      `${S16}### Instruction:\n${S16}Say hi.\n${S16}\n${S16}### Response:\n${S16}hi`,
  );
  assert.equal(
    trainingText({ instruction: "Sum.", input: "1 2", output: "3" }),
    "Below is an instruction that describes a task, paired with an input that provides further " +
      "context. Write a response that appropriately completes the request. \n\n" +
      `${S16}### Instruction:\n${S16}Sum.\n${S16}\n${S16}### Input:\n${S16}1 2\n${S16}\n` +
      `${S16}### Response:\n${S16}3`,
  );
  assert.equal(
    evaluationPrompt({ instruction: "Say hi." }),
    "Below is an instruction that describes a task. Write a response that appropriately " +
      "completes the request. \n\n" +
      `${S16}### Instruction:\n${S16}Say hi.\n\n${S16}### Response:\n${S16}`,
  );
  assert.equal(
    evaluationPrompt({ instruction: "Sum.", input: "1 2" }),
    "Below is an instruction that describes a task, paired with an input that provides further " +
      "context. Write a response that appropriately completes the request.\n\n" +
      `${S16}### Instruction:\n${S16}Sum.\n\n${S16}### Input:\n${S16}1 2\n\n` +
      `${S16}### Response:\n${S16}`,
  );
});

Deno.test("protocol: the loss covers prompt and response (train_on_inputs), cutoff then EOS; masking counts the user prompt", () => {
  const tok = new ByteFallbackTokenizer(512);
  const r = { instruction: "Say hi.", input: "", output: "hi" };
  const text = tok.encode(trainingText(r), { bos: true });
  const ex = trainingExample(tok, r, 1000)!;
  assert.deepEqual(ex.ids, text); // BOS + text; EOS is the last target
  assert.deepEqual(ex.targets, [...text.slice(1), tok.eosId]);
  // Cut to the cutoff: no room for EOS.
  const cut = trainingExample(tok, r, 20)!;
  assert.deepEqual([...cut.ids, cut.targets.at(-1)], text.slice(0, 20));
  // A protocol that masks inputs: the user prompt (the text with an empty output) carries no loss.
  const masking = { ...PROTOCOL["llm-adapters"], trainOnInputs: false };
  const userLen = tok.encode(trainingText({ ...r, output: "" }), { bos: true }).length;
  const m = trainingExample(tok, r, 1000, masking)!;
  assert.equal(m.targets.findIndex((t: number) => t >= 0), userLen - 1);
  assert.deepEqual(m.targets.filter((t: number) => t >= 0), [...tok.encode("hi"), tok.eosId]);
  assert.equal(trainingExample(tok, r, userLen, masking), null, "cut before the response");
});

Deno.test("commonsense: answers are exactly the task's words (boolq: true/false as the released files spell them)", async () => {
  const rec = (answer: string) => ({ instruction: "q?", input: "", output: "x", answer });
  assert.deepEqual(answerWords("boolq"), ["true", "false"]);
  // Positive controls: every word of every task.
  for (const t of COMMONSENSE_ORDER) {
    const records = answerWords(t).map(rec);
    assert.equal(parseRecords(records, `${t}.json`, true, t).length, records.length, t);
  }
  for (const bad of ["True", "FALSE", "yes", "1", " true", "true false", "truefalse"]) {
    assert.throws(
      () => parseRecords([rec("true"), rec(bad)], "boolq/test.json", true, "boolq"),
      new RegExp(`boolq/test\\.json: record 1: field answer: "${bad}" is not one of true, false`),
      bad,
    );
  }
  assert.throws(
    () => parseRecords([rec("solution3")], "piqa/test.json", true, "piqa"),
    /piqa\/test\.json: record 0: field answer: "solution3" is not one of solution1, solution2/,
  );
  // Without a task (a mixed training file) any non-empty answer passes, as before.
  assert.equal(parseRecords([rec("True")], "mix.json", true).length, 1);
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/commonsense/boolq`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/commonsense/boolq/test.json`,
    JSON.stringify([rec("true"), rec("yes")]),
  );
  await assert.rejects(
    loadCommonsense(dir, "boolq", "test"),
    /boolq\/test\.json: record 1: field answer: "yes"/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("commonsense: an empty file or an empty array is refused by name", async () => {
  assert.throws(() => parseRecords([], "t.json", false), /t\.json: no records/);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/empty.json`, "");
  await assert.rejects(loadRecordFile(`${dir}/empty.json`, false), /empty\.json: /);
  await Deno.writeTextFile(`${dir}/none.json`, "[]");
  await assert.rejects(loadRecordFile(`${dir}/none.json`, true), /none\.json: no records/);
  await Deno.remove(dir, { recursive: true });
});
