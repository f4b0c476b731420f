/**
 * Commonsense evaluation as LLM-Adapters' `commonsense_evaluate.py` (and DoRA's copy) does it:
 * generate from the evaluation prompt (4 beams, up to 32 new tokens in the protocol), decode
 * prompt and generation together, take the response segment, and the first match of the task's
 * answer pattern (true|false, solution1/2, answer1-5, ending1-4, option1/2) is the prediction;
 * accuracy per task, the average over tasks, and the unparseable count.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { searchManyOnGpu } from "../models/llama/generate.ts";
import { kvDim } from "../models/llama/config.ts";
import { type GpuLlama, KvCache } from "../models/llama/gpu/model.ts";
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
   * Questions decoded together (default 8): their beams are the rows of one batched decode step.
   * Fewer when their KV cache would pass the device's binding limit.
   */
  questionsPerBatch?: number;
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
  const perBatch = options.questionsPerBatch ?? 8;
  if (!(perBatch >= 1 && Number.isInteger(perBatch))) {
    throw new RangeError(`evaluateCommonsense: questionsPerBatch=${perBatch}`);
  }
  const { seqLen } = model.config;
  const kvWidth = kvDim(model.config);
  const bindLimit = rt.device.limits.maxStorageBufferBindingSize;
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
    // The per-layer KV cache of questions [from, to): as searchManyOnGpu sizes it.
    const cacheBytes = (from: number, to: number) => {
      let longest = 0;
      for (let q = from; q < to; q++) longest = Math.max(longest, prompts[q].length);
      return KvCache.layerBytes((to - from) * beams, Math.min(seqLen, longest + maxNew), kvWidth);
    };
    const texts: string[] = [];
    for (let start = 0; start < prompts.length;) {
      // As many questions as fit one batch: their beams' KV cache within one binding.
      let end = start + 1;
      while (
        end < prompts.length && end - start < perBatch && cacheBytes(start, end + 1) <= bindLimit
      ) end++;
      const group = prompts.slice(start, end);
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
