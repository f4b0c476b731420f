/** What the task pipelines need from a tokenizer, whatever its file format. */
export interface TextTokenizer {
  /** Vocabulary size. */
  readonly size: number;
  /** Beginning-of-sequence id. */
  readonly bosId: number;
  /** End-of-sequence id. */
  readonly eosId: number;
  /** Ids of `text` (no special tokens unless asked). */
  encode(text: string, options?: { bos?: boolean; eos?: boolean }): number[];
  /** Text of ids (special tokens dropped). */
  decode(ids: number[]): string;
}
