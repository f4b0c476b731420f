/**
 * `deno task export`: turn trained adapters into files other tools read — a PEFT adapter folder
 * (LoRA, DoRA, LoKr) or a Hugging Face checkpoint with the adapters merged into the base (every
 * adapter, MoKA included). Adapters come from a run's `adapters.safetensors` or a PEFT folder.
 */
import { type AdapterSet, loadAdapters } from "../models/adapters/io.ts";
import { openModel } from "../models/llama/open.ts";
import { writeMergedHf } from "../models/merged.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { llama2cToTokenizerJson } from "../models/tokenizer/hf.ts";
import { Llama2cTokenizer } from "../models/tokenizer/llama2c.ts";
import { checkAdaptersFit, isPeftFolder, loadPeft, moduleDims, savePeft } from "../models/peft.ts";
import { choiceOption, type CommandSpec, runCli, UsageError } from "./cli.ts";
import { byteSize, formatBytes, progressPrinter } from "./progress.ts";

export const SPEC: CommandSpec = {
  name: "deno task export",
  summary:
    "Export adapters as a PEFT adapter folder (--peft) or merge them into the base and write a Hugging Face checkpoint (--merge).",
  options: {
    adapters: {
      type: "string",
      value: "PATH",
      description: "A moka adapter file (a run's adapters.safetensors) or a PEFT adapter folder.",
    },
    model: {
      type: "string",
      value: "PATH",
      description: "The base: a Hugging Face folder or a llama2.c .bin (default: stories260K).",
    },
    out: { type: "string", value: "DIR", description: "Folder to write (created)." },
    peft: {
      type: "boolean",
      description: "Write adapter_config.json + adapter_model.safetensors (LoRA, DoRA, LoKr).",
    },
    merge: {
      type: "boolean",
      description: "Write the base with the adapters merged, as a Hugging Face checkpoint.",
    },
    dtype: {
      type: "string",
      value: "T",
      description: "Merged weights' type: BF16, F16 or F32 (default: as the base stores them).",
    },
    "shard-bytes": {
      type: "string",
      value: "SIZE",
      default: "5GiB",
      description: "Largest merged shard.",
    },
    "base-model": {
      type: "string",
      value: "NAME",
      description: "base_model_name_or_path written into a PEFT config.",
    },
  },
  examples: [
    "deno task export --adapters reports/out/runs/<run>/adapters.safetensors --merge --out merged/",
    "deno task export --model /models/llama3-8b --adapters run/adapters.safetensors --peft --out peft/",
  ],
  notes:
    "A merged model is written onto the checkpoint's stored weights (not the 4-bit ones the\n" +
    "adapter trained over). Only LoRA, DoRA and LoKr have PEFT types; MoKA and KronA merge.",
};

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    if (typeof values.adapters !== "string") throw new UsageError("--adapters PATH is required");
    if (typeof values.out !== "string") throw new UsageError("--out DIR is required");
    if (values.peft === values.merge) throw new UsageError("give exactly one of --peft, --merge");
    const dtype = values.dtype === undefined
      ? undefined
      : choiceOption("dtype", values.dtype, ["BF16", "F16", "F32"] as const);
    const shardBytes = byteSize("shard-bytes", values["shard-bytes"] as string);
    const modelPath = (values.model as string | undefined) ?? defaultModelPath("stories260K.bin");
    const log = (m: string) => console.error(`[export] ${m}`);

    const { source, tok } = await openModel(modelPath);
    try {
      const adapters: AdapterSet = await isPeftFolder(values.adapters)
        ? await loadPeft(values.adapters, source.config)
        : await loadAdapters(values.adapters, { dims: moduleDims(source.config) });
      // Shapes against the model before anything is written.
      checkAdaptersFit(adapters, source.config);
      const kinds = [...new Set(Object.values(adapters).map((a) => a.config.kind))];
      log(`${Object.keys(adapters).length} adapters (${kinds.join(", ")}) on ${modelPath}`);
      if (values.peft) {
        await savePeft(values.out, adapters, source.config, {
          baseModel: (values["base-model"] as string | undefined) ?? modelPath,
        });
        log(`wrote ${values.out}/adapter_config.json and adapter_model.safetensors`);
        return;
      }
      const started = performance.now();
      const progress = progressPrinter("export");
      const bytes = await writeMergedHf(source, adapters, values.out, {
        dtype,
        shardBytes,
        baseDir: (await Deno.stat(modelPath)).isDirectory ? modelPath : undefined,
        progress,
      });
      progress.done();
      if (tok instanceof Llama2cTokenizer) {
        // A llama2.c vocabulary travels as the equivalent tokenizer.json.
        await Deno.writeTextFile(
          `${values.out}/tokenizer.json`,
          JSON.stringify(llama2cToTokenizerJson(tok)),
        );
        await Deno.writeTextFile(
          `${values.out}/tokenizer_config.json`,
          JSON.stringify({ bos_token: "<s>", eos_token: "</s>" }, null, 2) + "\n",
        );
      }
      const secs = (performance.now() - started) / 1000;
      log(`wrote ${formatBytes(bytes)} of merged weights to ${values.out} in ${secs.toFixed(1)} s`);
    } finally {
      source.close();
    }
  });
}
