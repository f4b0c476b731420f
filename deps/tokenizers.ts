/**
 * Hugging Face's tokenizers in TypeScript, pinned: the one place the library names them, with a
 * full `npm:` specifier, so the modules load by URL without an import map.
 *
 * @module
 */
export { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";
