/**
 * Commonsense evaluation as LLM-Adapters' `commonsense_evaluate.py` (and DoRA's copy) does it:
 * generate from the evaluation prompt (4 beams, up to 32 new tokens in the protocol), decode
 * prompt and generation together, take the response segment, and the first match of the task's
 * answer pattern (true|false, solution1/2, answer1-5, ending1-4, option1/2) is the prediction;
 * accuracy per task, the average over tasks, and the unparseable count.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { searchManyOnGpu } from "../models/llama/generate.ts";
import type { GpuLlama } from "../models/llama/gpu/model.ts";
import { questionsPerBatch } from "./batching.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";
import {
  evaluationPrompt,
  type InstructionRecord,
  PROTOCOL,
  type Protocol,
  responseOf,
} from "../tasks/alpaca.ts";
import { COMMONSENSE_TASKS, type CommonsenseTask } from "../tasks/commonsense/data.ts";

/**
 * The predicted answer word: the first match of the task's pattern in the response part of
 * `text` (the decoded prompt + generation, split as `protocol` splits it), or "" when none.
 */
export function extractAnswer(
  task: CommonsenseTask,
  text: string,
  protocol: Protocol = PROTOCOL["llm-adapters"],
): string {
  const m = responseOf(text, protocol).match(new RegExp(COMMONSENSE_TASKS[task].source, "g"));
  return m ? m[0] : "";
}

/** One task's result. */
export interface TaskScore {
  /** correct / total. */
  accuracy: number;
  /** Right predictions. */
  correct: number;
  /** Records evaluated. */
  total: number;
  /** Generations with no answer word. */
  unparseable: number;
}

/** Score predictions against gold answers. */
export function scoreAnswers(predictions: string[], gold: string[]): TaskScore {
  let correct = 0;
  let unparseable = 0;
  predictions.forEach((p, i) => {
    if (p === "") unparseable++;
    else if (p === gold[i]) correct++;
  });
  return {
    accuracy: gold.length ? correct / gold.length : 0,
    correct,
    total: gold.length,
    unparseable,
  };
}

/** Options of {@link evaluateCommonsense}. */
export interface CommonsenseEvalOptions {
  /** Beams (protocol: 4). */
  beams?: number;
  /** New tokens (protocol: 32). */
  maxNew?: number;
  /**
   * Questions decoded together: their beams are the rows of one batched decode step. Default:
   * chosen from the device ({@link questionsPerBatch}: 8 on CPU adapters; on GPUs as many as fit
   * `sizing`'s memory budget, up to 64). Fewer when a tensor of the batch (a layer's KV cache)
   * would pass the device's binding limit.
   */
  questionsPerBatch?: number;
  /** The memory budget and cap of the default batch size on GPUs (see `evals/batching.ts`). */
  sizing?: {
    /** Device memory in bytes (default: the device's `maxBufferSize`). */
    deviceBytes?: number;
    /** The share of it one batch may take (default 0.5). */
    fraction?: number;
    /** Most items per batch. */
    cap?: number;
  };
  /** Called with each batch's question count before it is decoded. */
  onBatch?: (questions: number) => void;
  /** Called after each batch of records. */
  progress?: (task: CommonsenseTask, done: number, total: number) => void;
  /** Prompt and extraction rules (default LLM-Adapters'). */
  protocol?: Protocol;
}

/**
 * Generate and score every record of every task; returns per-task scores, the mean accuracy, and
 * per record the response text and the extracted answer ("" when none).
 */
export async function evaluateCommonsense(
  rt: GpuRuntime,
  model: GpuLlama,
  tok: TextTokenizer,
  data: Partial<Record<CommonsenseTask, InstructionRecord[]>>,
  options: CommonsenseEvalOptions = {},
): Promise<
  {
    tasks: Partial<Record<CommonsenseTask, TaskScore>>;
    average: number;
    generations: Record<string, string[]>;
    predictions: Record<string, string[]>;
  }
> {
  const beams = options.beams ?? 4;
  const maxNew = options.maxNew ?? 32;
  const tasks: Partial<Record<CommonsenseTask, TaskScore>> = {};
  const generations: Record<string, string[]> = {};
  const predictions: Record<string, string[]> = {};
  const perBatch = options.questionsPerBatch;
  if (perBatch !== undefined && !(perBatch >= 1 && Number.isInteger(perBatch))) {
    throw new RangeError(`evaluateCommonsense: questionsPerBatch=${perBatch}`);
  }
  const sizing = { ...options.sizing, fixed: perBatch };
  const { seqLen } = model.config;
  for (const [task, records] of Object.entries(data) as [CommonsenseTask, InstructionRecord[]][]) {
    // commonsense_evaluate.py passes the instruction only (input=None).
    const prompts = records.map((r, i) => {
      const prompt = tok.encode(evaluationPrompt({ instruction: r.instruction }), { bos: true });
      if (seqLen - prompt.length < 1) {
        throw new Error(
          `${task} record ${i}: prompt of ${prompt.length} tokens fills the model's context`,
        );
      }
      return prompt;
    });
    const lengths = prompts.map((p) => p.length);
    const texts: string[] = [];
    for (let start = 0; start < prompts.length;) {
      // As many questions as the device takes in one batch (their tensors within one binding).
      const end = start +
        questionsPerBatch(rt, model.config, lengths.slice(start), { beams, maxNew }, sizing);
      const group = prompts.slice(start, end);
      options.onBatch?.(group.length);
      // Selection on the GPU: no host round trip per token (equal to generate(gpuScorer(...))).
      const results = await searchManyOnGpu(rt, model, group, {
        maxNew,
        beams,
        eos: tok.eosId,
        fitContext: true,
      });
      // As upstream: decode prompt and generation together, then split on "### Response:".
      results.forEach((r, k) => texts.push(tok.decode([...group[k], ...r.ids])));
      start = end;
      options.progress?.(task, start, records.length);
    }
    generations[task] = texts.map((t) => responseOf(t, options.protocol));
    const preds = texts.map((t) => extractAnswer(task, t, options.protocol));
    tasks[task] = scoreAnswers(preds, records.map((r) => r.answer ?? ""));
    predictions[task] = preds;
  }
  const scores = Object.values(tasks);
  const average = scores.length ? scores.reduce((s, t) => s + t.accuracy, 0) / scores.length : 0;
  return { tasks, average, generations, predictions };
}
