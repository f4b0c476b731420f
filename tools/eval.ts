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
 *   --out FILE                  write the JSON there instead of stdout
 *
 * Options and paths are checked before the GPU starts.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { loadAdapters } from "../models/adapters/io.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { openModel } from "../models/llama/open.ts";
import { isPeftFolder, loadPeft, moduleDims } from "../models/peft.ts";
import { dataDir, defaultModelPath } from "../testing/paths.ts";
import { COMMONSENSE_ORDER, type CommonsenseTask, parseTask } from "../tasks/commonsense/data.ts";
import { MMLU_SUBJECTS } from "../tasks/mmlu/data.ts";
import { runCommonsense, runMmlu } from "../grid/pipeline.ts";
import {
  choiceOption,
  type CommandSpec,
  intOption,
  type ParsedCli,
  pathOption,
  runCli,
  UsageError,
} from "./cli.ts";

/** The command-line interface of `deno task eval`. */
export const SPEC: CommandSpec = {
  name: "deno task eval",
  summary: "Evaluate a model, alone or with adapters, on the commonsense tasks or MMLU and " +
    "print one JSON object of scores.",
  options: {
    family: {
      type: "string",
      value: "NAME",
      default: "commonsense",
      description: "Benchmark: commonsense or mmlu.",
    },
    tasks: {
      type: "string",
      value: "LIST",
      description: "Commonsense tasks, comma-separated (default: all in the data folder).",
    },
    subjects: {
      type: "string",
      value: "LIST",
      description: "MMLU subjects, comma-separated (default: all 57).",
    },
    limit: {
      type: "string",
      value: "N",
      description: "Test records per task / questions per subject (default: all).",
    },
    shots: { type: "string", value: "K", default: "5", description: "MMLU exemplars." },
    beams: { type: "string", value: "B", default: "4", description: "Beam search width." },
    "max-new": { type: "string", value: "N", default: "32", description: "Generated tokens." },
    model: {
      type: "string",
      value: "PATH",
      description: "HF folder or llama2.c .bin (default: the embedded stories260K).",
    },
    tokenizer: {
      type: "string",
      value: "FILE",
      description: "llama2.c tokenizer.bin of a .bin model (default: tok512.bin).",
    },
    base: {
      type: "string",
      value: "T",
      default: "nf4",
      description: "Base weight storage: f32, nf4 or int4.",
    },
    adapters: {
      type: "string",
      value: "PATH",
      description: "A moka adapter file or a PEFT adapter folder (default: none, the base alone).",
    },
    data: {
      type: "string",
      value: "DIR",
      description: "Data folder (default: MOKA_DATA_DIR, else ../shared/data).",
    },
    out: { type: "string", value: "FILE", description: "Write the JSON here (default: stdout)." },
  },
  notes: "Progress goes to stderr. Options and paths are checked before the GPU starts; a bad " +
    "one exits 2.",
  examples: [
    "deno task eval --family commonsense --tasks boolq,piqa --limit 20",
    "deno task eval --family mmlu --model /models/llama3-8b --adapters run/adapters.safetensors",
  ],
};

/** A comma-separated option's items, each checked by `check` (its error becomes a UsageError). */
function listOption<T>(name: string, value: unknown, check: (item: string) => T): T[] | undefined {
  if (value === undefined) return undefined;
  return (value as string).split(",").map((item) => {
    try {
      return check(item);
    } catch (e) {
      throw new UsageError(`--${name}=${value}: ${(e as Error).message}`);
    }
  });
}

async function main({ values }: ParsedCli): Promise<void> {
  const family = choiceOption("family", values.family, ["commonsense", "mmlu"] as const);
  const base = choiceOption("base", values.base, ["f32", "nf4", "int4"] as const);
  const limit = intOption("limit", values.limit, 1);
  const shots = intOption("shots", values.shots)!;
  const beams = intOption("beams", values.beams, 1);
  const maxNew = intOption("max-new", values["max-new"], 1);
  const tasksOption = listOption("tasks", values.tasks, parseTask);
  const subjects = listOption("subjects", values.subjects, (s) => {
    if (!MMLU_SUBJECTS.includes(s)) throw new RangeError(`unknown MMLU subject "${s}"`);
    return s;
  });
  const data = await pathOption("data", (values.data as string | undefined) ?? dataDir(), "dir");
  const modelPath = await pathOption(
    "model",
    (values.model as string | undefined) ?? defaultModelPath("stories260K.bin"),
  );
  const tokenizer = values.tokenizer as string | undefined;
  if (tokenizer !== undefined) await pathOption("tokenizer", tokenizer, "file");
  const adapters = values.adapters as string | undefined;
  if (adapters !== undefined) await pathOption("adapters", adapters);
  const out = values.out as string | undefined;
  // The JSON is written last: a missing folder should not cost the whole evaluation.
  if (out !== undefined && out.includes("/")) {
    const folder = out.slice(0, out.lastIndexOf("/")) || "/";
    const isFolder = await Deno.stat(folder).then((i) => i.isDirectory, () => false);
    if (!isFolder) throw new UsageError(`--out ${out}: no folder ${folder}`);
  }
  const log = (m: string) => console.error(`[eval] ${m}`);

  const rt = await GpuRuntime.create();
  const { source, tok } = await openModel(modelPath, tokenizer);
  const config = source.config;
  const model = await GpuLlama.load(rt, source, { base });
  source.close();
  if (adapters) {
    const set = await isPeftFolder(adapters)
      ? await loadPeft(adapters, config)
      : await loadAdapters(adapters, { dims: moduleDims(config) });
    await model.attach(new Map(Object.entries(set)));
    log(`attached ${Object.keys(set).length} adapters from ${adapters}`);
  }
  log(
    `${modelPath} (${config.layers} layers, dim ${config.dim}, ${base} base) on ${rt.gpu.description}`,
  );
  let result: unknown;
  if (family === "commonsense") {
    const present: CommonsenseTask[] = [];
    for (const t of COMMONSENSE_ORDER) {
      try {
        await Deno.stat(`${data}/commonsense/${t}/test.json`);
        present.push(t);
      } catch { /* not shipped */ }
    }
    result = (await runCommonsense(rt, model, tok, {
      dataDir: data,
      tasks: tasksOption ?? present,
      testLimit: limit,
      maxLen: 256,
      eval: {
        beams,
        maxNew,
        progress: (task, done, total) => log(`${task} ${done}/${total}`),
      },
    })).eval;
  } else {
    result = await runMmlu(rt, model, tok, { dataDir: data, subjects, limit, shots });
  }
  const json = JSON.stringify(result, null, 2);
  if (out) await Deno.writeTextFile(out, json + "\n");
  else console.log(json);
  model.release();
}

if (import.meta.main) await runCli(SPEC, main);
