import assert from "node:assert/strict";
import { dataDir } from "../../models/paths.ts";
import { alpacaExample, alpacaPrompt, responseOf } from "../alpaca.ts";
import {
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

Deno.test("alpaca: the template, with and without input, and targets only on the response", () => {
  assert.equal(
    alpacaPrompt({ instruction: "Say hi." }),
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
      "### Instruction:\nSay hi.\n\n### Response:\n",
  );
  assert.match(
    alpacaPrompt({ instruction: "Sum.", input: "1 2" }),
    /paired with an input.*\n\n### Input:\n1 2\n\n### Response:\n$/s,
  );
  const tok = new ByteFallbackTokenizer(512);
  const ex = alpacaExample(tok, { instruction: "Say hi.", input: "", output: "hi" }, 1000)!;
  const promptLen = tok.encode(alpacaPrompt({ instruction: "Say hi." }), { bos: true }).length;
  const supervised = ex.targets.filter((t) => t >= 0);
  assert.deepEqual(supervised, [...tok.encode("hi"), tok.eosId]);
  assert.equal(ex.targets.findIndex((t) => t >= 0), promptLen - 1);
  assert.equal(
    alpacaExample(tok, { instruction: "Say hi.", input: "", output: "hi" }, 10),
    null,
    "cut before the response",
  );
  assert.equal(
    responseOf("...### Response:\n the correct answer is true"),
    "the correct answer is true",
  );
});
