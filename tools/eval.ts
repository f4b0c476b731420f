/**
 * `deno task eval`: evaluate a model (the base alone, or with adapters from a file) on the
 * commonsense tasks or MMLU; prints progress to stderr and one JSON object to stdout (or --out).
 *
 *   --family commonsense|mmlu   (default commonsense)
 *   --tasks boolq,piqa,...      commonsense tasks (default: all present in the data folder)
 *   --subjects a,b              MMLU subjects (default all 57)
 *   --limit N                   test records per task / questions per subject
 *   --shots K                   MMLU exemplars (default 5)
 *   --beams B --max-new N       generation (defaults 4 and 32, the protocol's)
 *   --model DIR|FILE            HF folder or llama2.c .bin (default: the embedded stories260K)
 *   --tokenizer FILE            llama2.c tokenizer.bin for a .bin model (default tok512.bin)
 *   --base f32|nf4|int4         base weight storage (default nf4)
 *   --adapters PATH             a moka adapter file or a PEFT adapter folder
 *   --data DIR                  data folder (default MOKA_DATA_DIR or ../shared/data)
 */
import { parseArgs } from "node:util";
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { loadAdapters } from "../models/adapters/io.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { openModel } from "../models/llama/open.ts";
import { isPeftFolder, loadPeft } from "../models/peft.ts";
import { dataDir, defaultModelPath } from "../models/paths.ts";
import { COMMONSENSE_ORDER, type CommonsenseTask, parseTask } from "../tasks/commonsense/data.ts";
import { runCommonsense, runMmlu } from "../tasks/pipeline.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    family: { type: "string", default: "commonsense" },
    tasks: { type: "string" },
    subjects: { type: "string" },
    limit: { type: "string" },
    shots: { type: "string", default: "5" },
    beams: { type: "string", default: "4" },
    "max-new": { type: "string", default: "32" },
    model: { type: "string" },
    tokenizer: { type: "string" },
    base: { type: "string", default: "nf4" },
    adapters: { type: "string" },
    data: { type: "string" },
    out: { type: "string" },
  },
});
const int = (name: string, v: string | undefined, min = 0) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`--${name}=${v} must be an integer ≥ ${min}`);
  }
  return n;
};
if (!["f32", "nf4", "int4"].includes(values.base)) {
  throw new Error(`--base=${values.base}: f32, nf4 or int4`);
}
const data = values.data ?? dataDir();
const modelPath = values.model ?? defaultModelPath("stories260K.bin");
const log = (m: string) => console.error(`[eval] ${m}`);

const rt = await GpuRuntime.create();
const { source, tok } = await openModel(modelPath, values.tokenizer);
const config = source.config;
const model = await GpuLlama.load(rt, source, { base: values.base as "f32" | "nf4" | "int4" });
source.close();
if (values.adapters) {
  const set = await isPeftFolder(values.adapters)
    ? await loadPeft(values.adapters, config)
    : await loadAdapters(values.adapters);
  await model.attach(new Map(Object.entries(set)));
  log(`attached ${Object.keys(set).length} adapters from ${values.adapters}`);
}
log(
  `${modelPath} (${config.layers} layers, dim ${config.dim}, ${values.base} base) on ${rt.gpu.description}`,
);
const limit = int("limit", values.limit, 1);
let result: unknown;
if (values.family === "commonsense") {
  const present: CommonsenseTask[] = [];
  for (const t of COMMONSENSE_ORDER) {
    try {
      await Deno.stat(`${data}/commonsense/${t}/test.json`);
      present.push(t);
    } catch { /* not shipped */ }
  }
  const tasks = values.tasks ? values.tasks.split(",").map(parseTask) : present;
  result = (await runCommonsense(rt, model, tok, {
    dataDir: data,
    tasks,
    testLimit: limit,
    maxLen: 256,
    eval: {
      beams: int("beams", values.beams, 1),
      maxNew: int("max-new", values["max-new"], 1),
      progress: (task, done, total) => log(`${task} ${done}/${total}`),
    },
  })).eval;
} else if (values.family === "mmlu") {
  result = await runMmlu(rt, model, tok, {
    dataDir: data,
    subjects: values.subjects?.split(","),
    limit,
    shots: int("shots", values.shots)!,
  });
} else throw new Error(`--family=${values.family}: commonsense or mmlu`);
const json = JSON.stringify(result, null, 2);
if (values.out) await Deno.writeTextFile(values.out, json + "\n");
else console.log(json);
model.release();
