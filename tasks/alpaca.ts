/**
 * The Alpaca prompt template as LLM-Adapters' `generate_prompt` writes it (the commonsense
 * protocol of DoRA/MoKA), and the training example it makes: the loss is taken on the response
 * tokens only (`train_on_inputs = False`), plus EOS.
 */
import { z } from "zod";
import type { Schema } from "../models/schema.ts";
import type { Example } from "../models/llama/train.ts";
import type { TextTokenizer } from "../models/tokenizer/tokenizer.ts";

/** An instruction record (Alpaca and LLM-Adapters formats; `answer` is the gold label). */
export interface InstructionRecord {
  /** The task instruction. */
  instruction: string;
  /** Optional context ("" when absent). */
  input: string;
  /** The reference response. */
  output: string;
  /** The gold answer word (commonsense records only). */
  answer?: string;
}

/** The zod object of one record (extra fields are ignored); extended by the loaders. */
export const InstructionRecordObject = z.object({
  instruction: z.string().min(1),
  input: z.string().default(""),
  output: z.string(),
  answer: z.string().optional(),
}).loose();

/** zod schema of {@link InstructionRecord}. */
export const InstructionRecordSchema: Schema<InstructionRecord> = InstructionRecordObject;

const HEADER_WITH_INPUT =
  "Below is an instruction that describes a task, paired with an input that provides " +
  "further context. Write a response that appropriately completes the request.";
const HEADER =
  "Below is an instruction that describes a task. Write a response that appropriately " +
  "completes the request.";

/** The prompt up to and including "### Response:\n" (what generation starts from). */
export function alpacaPrompt(r: { instruction: string; input?: string }): string {
  return r.input
    ? `${HEADER_WITH_INPUT}\n\n### Instruction:\n${r.instruction}\n\n### Input:\n${r.input}\n\n### Response:\n`
    : `${HEADER}\n\n### Instruction:\n${r.instruction}\n\n### Response:\n`;
}

/**
 * Token ids of prompt + response + EOS with targets on the response (and EOS) only, cut to
 * `maxLen` tokens (LLM-Adapters' cutoff_len). null when the cut leaves no response token.
 */
export function alpacaExample(
  tok: TextTokenizer,
  r: InstructionRecord,
  maxLen: number,
): Example | null {
  const prompt = tok.encode(alpacaPrompt(r), { bos: true });
  const full = tok.encode(alpacaPrompt(r) + r.output, { bos: true, eos: true }).slice(
    0,
    maxLen + 1,
  );
  // The response starts where the prompt's tokens stop matching (BPE may merge across the seam).
  let start = 0;
  while (start < prompt.length && full[start] === prompt[start]) start++;
  const ids = full.slice(0, -1);
  const targets = full.slice(1).map((id, i) => (i + 1 >= start ? id : -1));
  return targets.some((t) => t >= 0) ? { ids, targets } : null;
}

/** The response part of a generated text (after "### Response:", as LLM-Adapters splits it). */
export function responseOf(text: string): string {
  const at = text.lastIndexOf("### Response:");
  return (at >= 0 ? text.slice(at + "### Response:".length) : text).trim();
}
