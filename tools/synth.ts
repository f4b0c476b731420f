/**
 * `deno task synth`: write a Hugging Face LLaMA folder of a named shape with seeded random
 * weights (BF16 shards + index, config.json, a byte-level BPE tokenizer.json of the shape's
 * vocabulary), streaming to disk — a stand-in for checkpoints that cannot be downloaded here.
 */
import { SYNTHETIC_SHAPES, writeSyntheticHf } from "../models/synthetic.ts";
import { choiceOption, type CommandSpec, intOption, runCli, UsageError } from "./cli.ts";
import { byteSize, progressPrinter } from "./progress.ts";

export const SPEC: CommandSpec = {
  name: "deno task synth",
  summary: "Write a synthetic Hugging Face LLaMA checkpoint (random weights, real shapes).",
  options: {
    shape: {
      type: "string",
      value: "NAME",
      description: `One of ${Object.keys(SYNTHETIC_SHAPES).join(", ")}.`,
    },
    out: { type: "string", value: "DIR", description: "Folder to write (created)." },
    seed: { type: "string", value: "N", default: "0", description: "Seed of the weights." },
    "shard-bytes": {
      type: "string",
      value: "SIZE",
      default: "2GiB",
      description: "Largest shard (bytes, or with KiB/MiB/GiB).",
    },
    dtype: { type: "string", value: "T", default: "BF16", description: "BF16, F16 or F32." },
    corpus: {
      type: "string",
      value: "FILE",
      multiple: true,
      description: "Text to learn the tokenizer's merges from (default: a built-in sample).",
    },
  },
  examples: [
    "deno task synth --shape tinyllama-1.1b --out /tmp/tinyllama",
    "deno task synth --shape llama3-8b --out /data/llama3-8b-synthetic --corpus notes.txt",
  ],
};

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    const name = choiceOption("shape", values.shape, Object.keys(SYNTHETIC_SHAPES));
    if (typeof values.out !== "string") throw new UsageError("--out DIR is required");
    const seed = intOption("seed", values.seed, 0)!;
    const shardBytes = byteSize("shard-bytes", values["shard-bytes"] as string);
    const dtype = choiceOption("dtype", values.dtype, ["BF16", "F16", "F32"] as const);
    let corpus: string | undefined;
    for (const f of (values.corpus as string[] | undefined) ?? []) {
      try {
        corpus = (corpus ?? "") + await Deno.readTextFile(f);
      } catch (e) {
        throw new UsageError(`--corpus ${f}: ${(e as Error).message}`);
      }
    }
    const started = performance.now();
    const progress = progressPrinter("synth");
    const bytes = await writeSyntheticHf(values.out, SYNTHETIC_SHAPES[name], {
      seed,
      shardBytes,
      dtype,
      corpus,
      progress: (done, total) => progress(done, total),
    });
    progress.done();
    const seconds = (performance.now() - started) / 1000;
    console.log(JSON.stringify({ shape: name, out: values.out, bytes, seconds }));
  });
}
