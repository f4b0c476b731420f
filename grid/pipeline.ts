/**
 * The two experiment families as pipelines over a loaded model: build the training set
 * (commonsense: the tasks' train files or a commonsense_170k-style mix; instruction tuning: an
 * Alpaca-format file), fine-tune the attached adapters, evaluate (generation + extraction, or
 * MMLU logits). Deterministic given the seed: data order, subsets and inits are all seeded.
 */
import { type ChoiceScore, scoreChoices } from "../evals/choice.ts";
import { type CommonsenseEvalOptions, evaluateCommonsense } from "../evals/commonsense.ts";
import { type HeldOutLoss, heldOutLoss } from "../evals/heldout.ts";
import { evaluateMmlu, type MmluOptions, type MmluScores } from "../evals/mmlu.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { logitsAt } from "../models/llama/generate.ts";
import type { GpuLlama } from "../models/llama/gpu/model.ts";
import { type Example, type StepLog, Trainer } from "../models/llama/train.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import {
  type InstructionRecord,
  PROTOCOL,
  type Protocol,
  trainingExample,
} from "../tasks/alpaca.ts";
import {
  type CommonsenseTask,
  loadCommonsense,
  loadRecordFile,
} from "../tasks/commonsense/data.ts";
import { loadMmlu, MMLU_SUBJECTS } from "../tasks/mmlu/data.ts";

/**
 * Token examples from instruction records under `protocol` (cut to `maxLen` tokens as upstream's
 * cutoff_len; records left without a target token dropped).
 */
export function toExamples(
  tok: TextTokenizer,
  records: InstructionRecord[],
  maxLen: number,
  protocol: Protocol = PROTOCOL["llm-adapters"],
): Example[] {
  return records.map((r) => trainingExample(tok, r, maxLen, protocol)).filter((e): e is Example =>
    e !== null
  );
}

/**
 * Held-out loss of `model` on `records` (not trained on): the mean NLL per response token, the
 * prompt masked whatever the training protocol, each example cut to `maxLen` tokens (records
 * whose response is cut away are left out).
 */
export async function evaluateHeldOut(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  records: InstructionRecord[],
  maxLen: number,
): Promise<HeldOutLoss> {
  const masked = { ...PROTOCOL["llm-adapters"], trainOnInputs: false };
  return await heldOutLoss(rt, model, toExamples(tok, records, maxLen, masked));
}

/**
 * Commonsense training records: `trainFile` (a commonsense_170k-style mix) when given, else the
 * train.json of each task that has one; `limit` records per source.
 */
export async function commonsenseTrainRecords(
  dataDir: string,
  tasks: CommonsenseTask[],
  options: { trainFile?: string; limit?: number } = {},
): Promise<InstructionRecord[]> {
  if (options.trainFile) {
    const all = await loadRecordFile(options.trainFile, false);
    return options.limit === undefined ? all : all.slice(0, options.limit);
  }
  const out: InstructionRecord[] = [];
  for (const t of tasks) {
    try {
      // A loop, not push(...records): a 170k-record file would overflow the call stack.
      for (const r of await loadCommonsense(dataDir, t, "train", options.limit)) out.push(r);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // tasks without a train split are skipped
    }
  }
  if (out.length === 0) {
    throw new Error(`no training records for ${tasks.join(", ")} under ${dataDir}`);
  }
  return out;
}

/** Options of {@link runCommonsense}. */
export interface CommonsenseRun {
  /** Data folder (`MOKA_DATA_DIR`). */
  dataDir: string;
  /** Tasks to evaluate (and train on, without `trainFile`). */
  tasks: CommonsenseTask[];
  /** Mixed training file instead of the tasks' train splits. */
  trainFile?: string;
  /** Training records per source. */
  trainLimit?: number;
  /** Test records per task. */
  testLimit?: number;
  /** Cutoff length in tokens (protocol: 256). */
  maxLen: number;
  /** Trainer config (steps, lr, ...); `seq` defaults to maxLen. Omit to evaluate the base model. */
  train?: Record<string, unknown>;
  /** Generation settings (protocol: 4 beams, 32 tokens). */
  eval?: CommonsenseEvalOptions;
  /** Identifies the run for checkpoints. */
  fingerprint?: string;
  /** Checkpoint path (resume from it when it exists). */
  checkpointPath?: string;
  /** Training progress. */
  progress?: (log: StepLog, eta: number) => void;
  /** Prompts, loss mask and extraction (default LLM-Adapters'). */
  protocol?: Protocol;
  /** Test records per task for the held-out loss (default 16; 0: none). */
  heldOutLimit?: number;
  /** Test records per task scored by log-likelihood multiple choice (default testLimit; 0: none). */
  choiceLimit?: number;
}

/** Fine-tune (when `train` is given) and evaluate on the commonsense tasks. */
export async function runCommonsense(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  run: CommonsenseRun,
): Promise<{
  history: StepLog[];
  eval: Awaited<ReturnType<typeof evaluateCommonsense>>;
  heldOut: HeldOutLoss | null;
  choice: Partial<Record<CommonsenseTask, ChoiceScore>>;
}> {
  let history: StepLog[] = [];
  if (run.train) {
    const records = await commonsenseTrainRecords(run.dataDir, run.tasks, {
      trainFile: run.trainFile,
      limit: run.trainLimit,
    });
    const examples = toExamples(tok, records, run.maxLen, run.protocol);
    const trainer = new Trainer(
      rt,
      model,
      { seq: run.maxLen, ...run.train },
      examples,
      run.fingerprint ?? "commonsense",
    );
    try {
      if (run.checkpointPath) {
        try {
          await trainer.resume(run.checkpointPath);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
      history = await trainer.run({ checkpointPath: run.checkpointPath, progress: run.progress });
    } finally {
      trainer.release();
    }
  }
  const data: Partial<Record<CommonsenseTask, InstructionRecord[]>> = {};
  const heldOutRecords: InstructionRecord[] = [];
  const choice: Partial<Record<CommonsenseTask, ChoiceScore>> = {};
  const heldOutLimit = run.heldOutLimit ?? 16;
  const choiceLimit = run.choiceLimit ?? run.testLimit;
  for (const t of run.tasks) {
    const all = await loadCommonsense(run.dataDir, t, "test");
    const first = (n: number | undefined) => (n === undefined ? all : all.slice(0, n));
    data[t] = first(run.testLimit);
    for (const r of first(heldOutLimit)) heldOutRecords.push(r);
    if (choiceLimit !== 0) {
      const { predictions: _p, logLikelihoods: _l, ...score } = await scoreChoices(
        (seqs, at) => logitsAt(rt, model, seqs, at),
        tok,
        t,
        first(choiceLimit),
        { maxLen: model.config.seqLen },
      );
      choice[t] = score;
    }
  }
  // The whole response is scored: cut at the model's context, not the training cutoff.
  const heldOut = heldOutLimit > 0
    ? await evaluateHeldOut(rt, model, tok, heldOutRecords, model.config.seqLen)
    : null;
  return {
    history,
    eval: await evaluateCommonsense(rt, model, tok, data, { ...run.eval, protocol: run.protocol }),
    heldOut,
    choice,
  };
}

/** MMLU over `subjects` (default all 57), `limit` test questions each. */
export async function runMmlu(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  options: {
    dataDir: string;
    subjects?: string[];
    limit?: number;
    shots: number;
    batch?: number;
    sizing?: MmluOptions["sizing"];
    onBatch?: MmluOptions["onBatch"];
  },
): Promise<MmluScores> {
  const data: Record<
    string,
    { dev: Awaited<ReturnType<typeof loadMmlu>>; test: Awaited<ReturnType<typeof loadMmlu>> }
  > = {};
  for (const s of options.subjects ?? MMLU_SUBJECTS) {
    data[s] = {
      dev: await loadMmlu(options.dataDir, s, "dev"),
      test: await loadMmlu(options.dataDir, s, "test", options.limit),
    };
  }
  return await evaluateMmlu(rt, model, tok, data, {
    shots: options.shots,
    batch: options.batch,
    sizing: options.sizing,
    onBatch: options.onBatch,
    maxLen: model.config.seqLen,
  });
}

/** Options of {@link runInstructionTuning}. */
export interface InstructionRun {
  /** Alpaca-format JSON file: [{instruction, input?, output}]. */
  trainFile: string;
  /** Training records used (first N). */
  trainLimit?: number;
  /** Cutoff length in tokens. */
  maxLen: number;
  /** Trainer config (steps, lr, ...); `seq` defaults to maxLen. */
  train: Record<string, unknown>;
  /** MMLU evaluation after training. */
  mmlu: { dataDir: string; subjects?: string[]; limit?: number; shots: number; batch?: number };
  /** Identifies the run for checkpoints. */
  fingerprint?: string;
  /** Training progress. */
  progress?: (log: StepLog, eta: number) => void;
}

/** The instruction-tuning family: fine-tune on Alpaca data, then MMLU by next-token logits. */
export async function runInstructionTuning(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  run: InstructionRun,
): Promise<{ history: StepLog[]; mmlu: MmluScores }> {
  const records = await loadRecordFile(run.trainFile, false);
  const examples = toExamples(
    tok,
    run.trainLimit === undefined ? records : records.slice(0, run.trainLimit),
    run.maxLen,
  );
  const trainer = new Trainer(
    rt,
    model,
    { seq: run.maxLen, ...run.train },
    examples,
    run.fingerprint ?? "instruction",
  );
  let history: StepLog[];
  try {
    history = await trainer.run({ progress: run.progress });
  } finally {
    trainer.release();
  }
  return { history, mmlu: await runMmlu(rt, model, tok, run.mmlu) };
}
