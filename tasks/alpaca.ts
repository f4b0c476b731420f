/**
 * The Alpaca-style prompts of the commonsense and instruction-tuning protocols, exactly as the
 * upstream scripts build them, and the training examples they make.
 */
import { z } from "../deps/zod.ts";
import type { Same, Schema } from "../models/schema.ts";
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
  /** Any other field of the file, kept as read (the schema lets extra fields through). */
  [field: string]: unknown;
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

// Written out for the documentation; checked both ways against what the schema outputs.
const _matchesSchema: Same<InstructionRecord, z.output<typeof InstructionRecordObject>> = true;

/** The named protocols: whose scripts the prompts, loss mask and extraction follow. */
export const PROTOCOLS = ["llm-adapters", "dora"] as const;

/** One of {@link PROTOCOLS}. */
export type ProtocolName = typeof PROTOCOLS[number];

/**
 * How a protocol turns records into training text and generation prompts, which tokens carry the
 * loss, and which part of a generation is the answer. Both follow the upstream scripts byte for
 * byte: AGI-Edgerunners/LLM-Adapters (`finetune.py`, `commonsense_evaluate.py`) and
 * NVlabs/DoRA (`commonsense_reasoning/`, the same templates). They differ in the extraction only:
 * LLM-Adapters keeps the text between the first "### Response:" of the decoded prompt +
 * generation and the next (`split(...)[1]`), DoRA the text after the last (`split(...)[-1]`).
 */
export interface Protocol {
  /** Its name. */
  name: ProtocolName;
  /** Loss over the prompt too (`train_on_inputs`, upstream default True). */
  trainOnInputs: boolean;
  /** Which "### Response:" segment of the decoded text is the response. */
  responseSegment: "first" | "last";
}

/** The protocols by name. */
export const PROTOCOL: Record<ProtocolName, Protocol> = {
  "llm-adapters": { name: "llm-adapters", trainOnInputs: true, responseSegment: "first" },
  dora: { name: "dora", trainOnInputs: true, responseSegment: "last" },
};

// The upstream templates are indented triple-quoted Python f-strings: every line after the first
// carries the 16 spaces of the source's indentation, the training template's blank lines included.
const I = " ".repeat(16);
const WITH_INPUT = "Below is an instruction that describes a task, paired with an input that " +
  "provides further context. Write a response that appropriately completes the request.";
const NO_INPUT =
  "Below is an instruction that describes a task. Write a response that appropriately " +
  "completes the request.";

/**
 * The training text of `finetune.py`'s `generate_prompt(data_point)`: header, instruction, input,
 * "### Response:" and the output. Note the header's trailing spaces (one with input, two without)
 * and the blank lines that hold 16 spaces.
 */
export function trainingText(r: { instruction: string; input?: string; output: string }): string {
  return r.input
    ? `${WITH_INPUT} \n\n${I}### Instruction:\n${I}${r.instruction}\n${I}\n${I}### Input:\n` +
      `${I}${r.input}\n${I}\n${I}### Response:\n${I}${r.output}`
    : `${NO_INPUT}  \n\n${I}### Instruction:\n${I}${r.instruction}\n${I}\n${I}### Response:\n` +
      `${I}${r.output}`;
}

/**
 * The generation prompt of `commonsense_evaluate.py`'s `generate_prompt(instruction, input)`: it
 * ends with "### Response:\n" and 16 spaces; its blank lines are empty; the header has a trailing
 * space without input and none with it.
 */
export function evaluationPrompt(r: { instruction: string; input?: string }): string {
  return r.input
    ? `${WITH_INPUT}\n\n${I}### Instruction:\n${I}${r.instruction}\n\n${I}### Input:\n` +
      `${I}${r.input}\n\n${I}### Response:\n${I}`
    : `${NO_INPUT} \n\n${I}### Instruction:\n${I}${r.instruction}\n\n${I}### Response:\n${I}`;
}

/**
 * Tokens of `finetune.py`'s `tokenize`: BOS + the text, cut to `cutoff` tokens, then EOS when it
 * is not there already and the cut left room.
 */
function tokenizeUpstream(
  tok: TextTokenizer,
  text: string,
  cutoff: number,
  addEos: boolean,
): number[] {
  const ids = tok.encode(text, { bos: true }).slice(0, cutoff);
  if (addEos && ids.length < cutoff && ids.at(-1) !== tok.eosId) ids.push(tok.eosId);
  return ids;
}

/**
 * The training example of a record under `protocol`: the tokens of {@link trainingText} as the
 * upstream `tokenize` makes them (cutoff, EOS), the loss on every next token (`train_on_inputs`)
 * or, when the protocol masks inputs, on the tokens after the user prompt (the training text with
 * an empty output, tokenized without EOS). null when no target token is left.
 */
export function trainingExample(
  tok: TextTokenizer,
  r: InstructionRecord,
  cutoff: number,
  protocol: Protocol = PROTOCOL["llm-adapters"],
): Example | null {
  const full = tokenizeUpstream(tok, trainingText(r), cutoff, true);
  const masked = protocol.trainOnInputs
    ? 0
    : tokenizeUpstream(tok, trainingText({ ...r, output: "" }), cutoff, false).length;
  // Position t predicts token t + 1 (the causal LM's shifted labels).
  const ids = full.slice(0, -1);
  const targets = full.slice(1).map((id, i) => (i + 1 >= masked ? id : -1));
  return targets.some((t) => t >= 0) ? { ids, targets } : null;
}

/**
 * The response part of a decoded prompt + generation, as the protocol's script splits it on
 * "### Response:" (then `strip()`); the whole text when there is no marker.
 */
export function responseOf(text: string, protocol: Protocol = PROTOCOL["llm-adapters"]): string {
  const parts = text.split("### Response:");
  if (parts.length < 2) return text.trim();
  return (protocol.responseSegment === "first" ? parts[1] : parts[parts.length - 1]).trim();
}
