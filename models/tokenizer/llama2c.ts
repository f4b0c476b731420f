/**
 * llama2.c's tokenizer.bin: int32 max token length, then per token f32 score, int32 byte length,
 * bytes. Encoding follows llama2.c (SentencePiece BPE with byte fallback): a dummy-prefix space,
 * one token per UTF-8 code point (or its bytes as `<0xXX>` ids 3 + byte), then repeatedly merge
 * the adjacent pair whose concatenation is in the vocabulary with the highest score.
 */

import type { TextTokenizer } from "./tokenizer.ts";

/** A loaded llama2.c vocabulary. */
export class Llama2cTokenizer implements TextTokenizer {
  /** BOS id in llama2.c's numbering. */
  readonly bosId = 1;
  /** EOS id. */
  readonly eosId = 2;
  /** Token byte strings by id. */
  readonly pieces: Uint8Array[];
  /** Merge scores by id. */
  readonly scores: Float32Array;
  readonly #lookup = new Map<string, number>();
  readonly #latin1 = new TextDecoder("latin1");
  readonly #pairs = new Map<number, number>();

  /** Build from parsed pieces and scores. */
  constructor(pieces: Uint8Array[], scores: Float32Array) {
    this.pieces = pieces;
    this.scores = scores;
    // Key by the raw bytes (latin1 maps each byte to one char, so the map is byte-exact).
    pieces.forEach((p, id) => {
      const key = this.#key(p);
      if (!this.#lookup.has(key)) this.#lookup.set(key, id);
    });
  }

  #key(bytes: Uint8Array): string {
    return this.#latin1.decode(bytes);
  }

  /** Vocabulary size. */
  get size(): number {
    return this.pieces.length;
  }

  /** Parse tokenizer bytes for a vocabulary of `vocab` entries; `source` names the file. */
  static parse(bytes: Uint8Array, vocab: number, source = "tokenizer"): Llama2cTokenizer {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 4) throw new Error(`${source}: too short for a llama2.c tokenizer`);
    const maxLen = view.getInt32(0, true);
    if (!(maxLen > 0 && maxLen < 1 << 16)) {
      throw new Error(`${source}: max token length ${maxLen} is not plausible`);
    }
    const pieces: Uint8Array[] = [];
    const scores = new Float32Array(vocab);
    let at = 4;
    for (let id = 0; id < vocab; id++) {
      if (at + 8 > bytes.byteLength) {
        throw new Error(`${source}: ends inside token ${id} of ${vocab} (truncated?)`);
      }
      scores[id] = view.getFloat32(at, true);
      const len = view.getInt32(at + 4, true);
      if (len < 0 || len > maxLen || at + 8 + len > bytes.byteLength) {
        throw new Error(
          `${source}: token ${id} has length ${len} (max ${maxLen}, ${
            bytes.byteLength - at - 8
          } bytes left)`,
        );
      }
      pieces.push(bytes.slice(at + 8, at + 8 + len));
      at += 8 + len;
    }
    if (at !== bytes.byteLength) {
      throw new Error(
        `${source}: ${bytes.byteLength - at} bytes after token ${
          vocab - 1
        } (wrong vocabulary size?)`,
      );
    }
    return new Llama2cTokenizer(pieces, scores);
  }

  /** Read a tokenizer file for a model with `vocab` tokens. */
  static async load(path: string, vocab: number): Promise<Llama2cTokenizer> {
    return Llama2cTokenizer.parse(await Deno.readFile(path), vocab, path);
  }

  /** Token ids of `text`, optionally with BOS (1) and EOS (2) as llama2.c numbers them. */
  encode(text: string, options: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (options.bos) ids.push(1);
    if (text.length > 0) {
      const space = this.#lookup.get(" ");
      if (space !== undefined) ids.push(space);
    }
    const utf8 = new TextEncoder();
    for (const ch of text) { // iterates code points
      const bytes = utf8.encode(ch);
      const id = this.#lookup.get(this.#key(bytes));
      if (id !== undefined) ids.push(id);
      else for (const b of bytes) ids.push(b + 3); // byte fallback: <0x00> is id 3
    }
    // BPE: merge the best-scoring adjacent pair until none is in the vocabulary (ties: the
    // leftmost, as llama2.c's scan). A heap of candidate pairs over a linked list makes this
    // O(n log n) instead of a rescan per merge; entries made stale by a merge are skipped.
    // Not push(...merged): a long text's ids would overflow the call stack as arguments.
    const merged = this.#mergeAll(ids, options.bos ? 1 : 0);
    if (options.eos) merged.push(2);
    return merged;
  }

  /** The id of the concatenation of tokens a and b, or −1 (memoised per pair). */
  #pairId(a: number, b: number): number {
    const key = a * this.pieces.length + b;
    let id = this.#pairs.get(key);
    if (id === undefined) {
      const pa = this.pieces[a];
      const pb = this.pieces[b];
      const joined = new Uint8Array(pa.length + pb.length);
      joined.set(pa);
      joined.set(pb, pa.length);
      id = this.#lookup.get(this.#key(joined)) ?? -1;
      this.#pairs.set(key, id);
    }
    return id;
  }

  /** Merge `ids` from index `first` on (a BOS before it never merges). */
  #mergeAll(ids: number[], first: number): number[] {
    const n = ids.length;
    const token = Int32Array.from(ids);
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const version = new Int32Array(n);
    const dead = new Uint8Array(n);
    // Heap entries: [score, left, right, merged id, version of left, version of right].
    type Entry = [number, number, number, number, number, number];
    const heap: Entry[] = [];
    const above = (x: Entry, y: Entry) => x[0] > y[0] || (x[0] === y[0] && x[1] < y[1]);
    const push = (e: Entry) => {
      heap.push(e);
      for (let i = heap.length - 1; i > 0;) {
        const p = (i - 1) >> 1;
        if (!above(heap[i], heap[p])) break;
        [heap[i], heap[p]] = [heap[p], heap[i]];
        i = p;
      }
    };
    const pop = (): Entry => {
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        for (let i = 0;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < heap.length && above(heap[l], heap[m])) m = l;
          if (r < heap.length && above(heap[r], heap[m])) m = r;
          if (m === i) break;
          [heap[i], heap[m]] = [heap[m], heap[i]];
          i = m;
        }
      }
      return top;
    };
    const consider = (left: number, right: number) => {
      if (left < first || right < 0) return;
      const id = this.#pairId(token[left], token[right]);
      if (id >= 0) push([this.scores[id], left, right, id, version[left], version[right]]);
    };
    for (let i = first; i + 1 < n; i++) consider(i, i + 1);
    while (heap.length) {
      const [, left, right, id, vl, vr] = pop();
      if (dead[left] || dead[right] || version[left] !== vl || version[right] !== vr) continue;
      token[left] = id;
      version[left]++;
      dead[right] = 1;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      consider(prev[left], left);
      consider(left, next[left]);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]) out.push(token[i]);
    return out;
  }

  /** Bytes of one token after `prev` (llama2.c: drop the space after BOS, `<0xXX>` is a byte). */
  pieceBytes(prev: number, id: number): Uint8Array {
    if (!(id >= 0 && id < this.size)) throw new RangeError(`token id ${id} outside the vocabulary`);
    let p = this.pieces[id];
    const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.#key(p));
    if (hex) return new Uint8Array([parseInt(hex[1], 16)]);
    if (prev === 1 && p[0] === 0x20) p = p.subarray(1);
    return p;
  }

  /** Text of a sequence of ids (special tokens 0–2 are dropped). */
  decode(ids: number[], prev = 1): string {
    const parts: number[] = [];
    for (const id of ids) {
      if (id > 2) { for (const b of this.pieceBytes(prev, id)) parts.push(b); }
      prev = id;
    }
    return new TextDecoder().decode(new Uint8Array(parts));
  }
}

/**
 * The encoding every llama2.c SentencePiece vocabulary accepts without its merge table: each UTF-8
 * byte b is token 3 + b (`<0xXX>`), BOS 1, EOS 2. Used when `tokenizer.bin` is not available.
 */
export class ByteFallbackTokenizer implements TextTokenizer {
  /** BOS id. */
  readonly bosId = 1;
  /** EOS id. */
  readonly eosId = 2;
  /** Vocabulary size of the model it serves. */
  readonly size: number;

  /** For a model with `vocab` ≥ 259 tokens. */
  constructor(vocab: number) {
    if (vocab < 259) {
      throw new RangeError(`byte fallback needs ≥ 259 tokens, the model has ${vocab}`);
    }
    this.size = vocab;
  }

  /** 3 + byte for every UTF-8 byte. */
  encode(text: string, options: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids = [...new TextEncoder().encode(text)].map((b) => b + 3);
    return [...(options.bos ? [1] : []), ...ids, ...(options.eos ? [2] : [])];
  }

  /** Bytes back to text (ids outside the byte range are dropped). */
  decode(ids: number[]): string {
    return new TextDecoder().decode(
      Uint8Array.from(ids.filter((i) => i >= 3 && i < 259).map((i) => i - 3)),
    );
  }
}

/** `tok512.bin`-style file when it exists at `path`, else the byte-fallback encoding. */
export async function loadLlama2cTokenizer(path: string, vocab: number): Promise<TextTokenizer> {
  try {
    await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new ByteFallbackTokenizer(vocab);
    throw e;
  }
  return await Llama2cTokenizer.load(path, vocab);
}
