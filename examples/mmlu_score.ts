/**
 * Score a handful of MMLU questions with the embedded stories260K model: Hendrycks' prompt,
 * the answer letter with the highest next-token logit, batched forward passes on the GPU.
 * stories260K is a 260K-parameter model of children's stories, so expect chance-level accuracy
 * (25 %, with a wide interval on 5 questions): the point is the API, not the score.
 *
 * Data come from $MOKA_DATA_DIR/mmlu (default: ../shared/data next to the repository), the model
 * from $MOKA_MODELS_DIR/stories260K (default: ../shared/models). Run from the repository root:
 *   deno run --allow-read --allow-env examples/mmlu_score.ts
 *
 * Without a GPU, Mesa's software driver prints a harmless XDG_RUNTIME_DIR warning unless that
 * variable is set or --allow-write lets the runtime create a private one.
 */
import {
  evaluateMmlu,
  GpuLlama,
  GpuRuntime,
  loadMmlu,
  type MmluQuestion,
  openModel,
  wilsonInterval,
} from "../mod.ts";

const shared = (name: string) => new URL(`../../shared/${name}`, import.meta.url).pathname;
const modelsDir = Deno.env.get("MOKA_MODELS_DIR") ?? shared("models");
const dataDir = Deno.env.get("MOKA_DATA_DIR") ?? shared("data");

const { source, tok } = await openModel(`${modelsDir}/stories260K/stories260K.bin`);
const rt = await GpuRuntime.create();
const model = await GpuLlama.load(rt, source, { base: "nf4" });

// Five test questions of one subject, with its dev split for the 1-shot exemplar.
const subject = "high_school_geography";
const data: Record<string, { dev: MmluQuestion[]; test: MmluQuestion[] }> = {
  [subject]: {
    dev: await loadMmlu(dataDir, subject, "dev"),
    test: await loadMmlu(dataDir, subject, "test", 5),
  },
};

const started = performance.now();
const scores = await evaluateMmlu(rt, model, tok, data, {
  shots: 1,
  maxLen: model.config.seqLen,
});
const seconds = (performance.now() - started) / 1000;

const [lo, hi] = wilsonInterval(scores.correct, scores.total);
console.log(`MMLU ${subject}, 1-shot, ${scores.total} questions in ${seconds.toFixed(1)} s`);
console.log(
  `accuracy ${(100 * scores.average).toFixed(0)} % (95 % interval ${(100 * lo).toFixed(0)}–` +
    `${(100 * hi).toFixed(0)} %); chance 25 %, majority letter ` +
    `${(100 * scores.majority).toFixed(0)} %`,
);
console.log(
  "stories260K knows stories, not geography: chance level (within the interval) is expected.",
);

model.release();
