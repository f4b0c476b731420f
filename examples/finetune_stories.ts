/**
 * Fine-tune MoKA adapters on the embedded stories260K model (a 260K-parameter LLaMA of
 * children's stories) with an NF4 base: attach MoKA to q, k, v, up and down of every layer,
 * train 10 AdamW steps on a tiny text, print the loss going down, then generate greedily.
 *
 * The model is read from $MOKA_MODELS_DIR/stories260K (default: ../shared/models next to the
 * repository). Run from the repository root:
 *   deno run --allow-read --allow-env examples/finetune_stories.ts
 *
 * Without a GPU, Mesa's software driver prints a harmless XDG_RUNTIME_DIR warning unless that
 * variable is set or --allow-write lets the runtime create a private one.
 */
import {
  adaptersForModel,
  type Example,
  generateOnGpu,
  GpuLlama,
  GpuRuntime,
  openModel,
  Trainer,
} from "../mod.ts";

const modelsDir = Deno.env.get("MOKA_MODELS_DIR") ??
  new URL("../../shared/models", import.meta.url).pathname;
const { source, tok } = await openModel(`${modelsDir}/stories260K/stories260K.bin`);

const rt = await GpuRuntime.create();
const model = await GpuLlama.load(rt, source, { base: "nf4" });
const { config } = model;
console.log(`stories260K: dim ${config.dim}, ${config.layers} layers, vocab ${config.vocab}`);

// One MoKA adapter per target module and layer, seeded; ΔW = 0 at the start. Component shapes
// must divide every targeted layer (here 64 and 172 = 4·43 wide).
const adapters = await adaptersForModel(
  config,
  { kind: "moka", components: [[4, 4], [2, 4], [4, 2]] },
  1,
  { targets: ["q", "k", "v", "up", "down"] },
);
await model.attach(adapters);
const trainable = [...adapters.values()].reduce((n, a) => n + a.trainableParams(), 0);
console.log(`MoKA adapters: ${adapters.size} modules, ${trainable} trainable parameters`);

// A tiny corpus: each line is an example, the loss is taken on every next token.
const text = [
  "The moka pot sat on the stove. Tom made coffee for his mom.",
  "Every morning, Tom made coffee in the moka pot for his mom.",
  "His mom said, thank you, Tom! The coffee from the moka pot is good.",
  "Tom was happy. He liked the moka pot and the smell of coffee.",
];
const examples: Example[] = text.map((line) => {
  const ids = tok.encode(line, { bos: true });
  return { ids: ids.slice(0, -1), targets: ids.slice(1) };
});

const trainer = new Trainer(
  rt,
  model,
  { steps: 10, lr: 2e-2, batchSize: 4, seq: 64, seed: 1, schedule: "constant" },
  examples,
  "example",
);
await trainer.run({
  progress: (log) => console.log(`step ${log.step}: loss ${log.loss.toFixed(3)}`),
});

const prompt = tok.encode("Every morning, Tom", { bos: true });
const ids = await generateOnGpu(rt, model, prompt, { maxNew: 24, eos: tok.eosId });
console.log(`generated: ${tok.decode([...prompt, ...ids])}`);

trainer.release();
model.release();
