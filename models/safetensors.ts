/**
 * The safetensors format (Hugging Face): u64 little-endian header length N, N bytes of JSON
 * header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}},
 * then the tensor bytes, offsets relative to the end of the header.
 *
 * The reader validates the whole header before it decodes any tensor: every entry's byte range
 * must match its dtype and shape, lie inside the file, and the ranges must tile the data section
 * without holes or overlaps (as the format requires). A truncated or corrupt file is rejected
 * with the file name and the offending entry; nothing is half-loaded.
 *
 * The header is scanned as bytes before it is decoded or parsed as JSON, and the scan is bounded
 * by what the file can hold: the header cannot be larger than the file, whitespace outside
 * strings is limited (64 KiB plus 256 bytes per entry: padding and pretty-printing pass, a header
 * of blanks does not), and entries cannot outnumber what the data section allows (each non-empty
 * tensor holds at least 2 bytes; at most 1024 empty ones). A name or key given twice (JSON.parse
 * would keep the last silently), and the names `__proto__`, `constructor` and `prototype`, are
 * refused by name.
 *
 * Non-finite values: every decode to f32 (`tensor()` of both readers) refuses NaN and ±Inf
 * naming the file and tensor, and `parseSafetensors(bytes, source, { finite: true })` checks every
 * tensor of a container up front, read or not (the adapter, PEFT and training-checkpoint readers
 * decode, and so check, every tensor, and refuse any they do not expect).
 * The streaming path of a large checkpoint (`SafetensorsReader.readRows`) hands stored bytes to
 * the GPU unchecked; the conversion there (`quantizeRows`) flags any non-finite value, so no host
 * pass over gigabytes is added. A corrupted value that stays finite (a flipped mantissa or
 * exponent bit) cannot be detected: safetensors carries no checksum.
 */
import { z } from "../deps/zod.ts";

/**
 * `pending`'s value; a missing file becomes `path: missing (why)`, still a `Deno.errors.NotFound`
 * (callers that skip absent files keep recognising it).
 */
export async function missingSays<T>(pending: Promise<T>, path: string, why: string): Promise<T> {
  try {
    return await pending;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`${path}: missing (${why})`);
    }
    throw e;
  }
}

/** Element types this kit reads (decoded to f32) and writes. */
export type SafetensorsDType = "F32" | "F16" | "BF16";

const BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2 };

const EntrySchema = z.object({
  dtype: z.string(),
  shape: z.array(z.number().int().nonnegative()),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
}).strict();

/** One tensor's header entry. */
export interface SafetensorsEntry {
  /** Element type as stored. */
  dtype: SafetensorsDType;
  /** Shape. */
  shape: number[];
  /** [begin, end) in bytes, relative to the data section. */
  offsets: [number, number];
}

/** A parsed and validated safetensors file. */
export interface SafetensorsFile {
  /** `__metadata__` (string → string). */
  metadata: Record<string, string>;
  /** Entries by tensor name, in file order. */
  entries: Map<string, SafetensorsEntry>;
  /** Decode one tensor to f32 (F16 and BF16 widened exactly); NaN and ±Inf are refused. */
  tensor(name: string): Float32Array;
  /** One tensor's stored bytes (a fresh, aligned copy), unchecked. */
  raw(name: string): RawTensorBytes;
}

// Generous but finite: a header larger than this is corrupt, not a model.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
// Whitespace outside strings a header may hold: alignment padding and pretty-printing, never
// megabytes of blanks.
const MAX_WHITESPACE_BYTES = 64 * 1024;
const WHITESPACE_PER_ENTRY = 256;
// Zero-element tensors a file may declare (they take no bytes, so the data section cannot bound
// them).
const MAX_EMPTY_TENSORS = 1024;
// Names that would reach an object's prototype wherever a header is turned into an object.
const RESERVED_NAMES = new Set(["__proto__", "constructor", "prototype"]);

/** The most entries (tensors and `__metadata__`) a header over `dataLen` data bytes may hold. */
function maxEntries(dataLen: number): number {
  return MAX_EMPTY_TENSORS + Math.floor(dataLen / 2);
}

interface ScanFrame {
  /** An object (keys tracked at depths 1 and 2) or an array. */
  object: boolean;
  /** Keys seen, for objects whose keys are tracked (an entry's few fields: a list). */
  keys: Set<string> | string[] | null;
  /** The next string in this object is a key. */
  expectKey: boolean;
  /** The depth-1 key this frame lies under ("" at the root). */
  owner: string;
}

/**
 * A byte scanner over a header that is being read: refuses, before any decoding or JSON
 * parsing, too much whitespace, more entries than the data section can hold, a key given twice
 * (at the root, inside an entry, inside `__metadata__`) and reserved names. JSON syntax itself is
 * left to JSON.parse: on malformed input the scanner stops tracking rather than guessing.
 */
class HeaderScanner {
  readonly #bytes: Uint8Array;
  readonly #source: string;
  readonly #maxEntries: number;
  readonly #dataLen: number;
  #at = 0;
  #inString = false;
  #escape = false;
  #keyStart = -1; // byte after the opening quote of the key being read
  #stack: ScanFrame[] = [];
  #entries = 0;
  #whitespace = 0;
  #lost = false; // malformed: JSON.parse will say where

  constructor(bytes: Uint8Array, dataLen: number, source: string) {
    this.#bytes = bytes;
    this.#source = source;
    this.#dataLen = dataLen;
    this.#maxEntries = maxEntries(dataLen);
  }

  /** Scan the bytes up to `end` (exclusive); they must already be in the buffer. */
  scanTo(end: number): void {
    const b = this.#bytes;
    const stack = this.#stack;
    let inString = this.#inString;
    let escape = this.#escape;
    let i = this.#at;
    while (i < end && !this.#lost) {
      if (inString) {
        if (escape) {
          escape = false;
          i++;
          continue;
        }
        // Jump to the string's next quote or backslash (memchr-fast on long metadata strings).
        const q = b.indexOf(0x22, i);
        const stop = q < 0 || q >= end ? end : q;
        const bs = b.subarray(i, stop).indexOf(0x5c);
        if (bs >= 0) {
          escape = true;
          i += bs + 1;
          continue;
        }
        i = stop;
        if (stop === end) break;
        inString = false;
        if (this.#keyStart >= 0) this.#key(this.#keyStart, i);
        this.#keyStart = -1;
        i++;
        continue;
      }
      const c = b[i];
      switch (c) {
        case 0x20:
        case 0x09:
        case 0x0a:
        case 0x0d:
          if (++this.#whitespace > this.#allowedWhitespace()) {
            throw new Error(
              `${this.#source}: header holds ${this.#whitespace} bytes of whitespace before byte ` +
                `${8 + i} (at most ${this.#allowedWhitespace()} for ${this.#entries} entries)`,
            );
          }
          break;
        case 0x22: {
          inString = true;
          const top = stack.at(-1);
          if (top?.object && top.expectKey) {
            top.expectKey = false;
            this.#keyStart = i + 1;
          }
          break;
        }
        case 0x7b: { // {
          const depth = stack.length;
          const owner = depth === 1 ? this.#lastRootKey : (stack.at(-1)?.owner ?? "");
          const keys = depth === 0 || owner === "__metadata__"
            ? new Set<string>()
            : depth === 1
            ? []
            : null;
          stack.push({ object: true, keys, expectKey: true, owner });
          break;
        }
        case 0x5b: // [
          stack.push({ object: false, keys: null, expectKey: false, owner: "" });
          break;
        case 0x7d: // }
        case 0x5d: // ]
          if (!stack.length || stack.at(-1)!.object !== (c === 0x7d)) this.#lost = true;
          stack.pop();
          break;
        case 0x2c: { // ,
          const top = stack.at(-1);
          if (top?.object) top.expectKey = true;
          break;
        }
        default:
          if (!stack.length) this.#lost = true; // text outside the root object
      }
      i++;
    }
    this.#inString = inString;
    this.#escape = escape;
    this.#at = Math.max(this.#at, end);
  }

  #lastRootKey = "";

  #allowedWhitespace(): number {
    return MAX_WHITESPACE_BYTES + WHITESPACE_PER_ENTRY * this.#entries;
  }

  /** A key spanning bytes [start, end) of the object on top of the stack. */
  #key(start: number, end: number): void {
    const depth = this.#stack.length;
    const frame = this.#stack[depth - 1];
    if (depth === 1) {
      if (++this.#entries > this.#maxEntries + 1) {
        throw new Error(
          `${this.#source}: header declares more than ${this.#maxEntries} tensors, a ` +
            `${this.#dataLen}-byte data section holds at most ${this.#maxEntries}`,
        );
      }
    }
    if (!frame.keys) return;
    let key: string;
    const raw = this.#bytes.subarray(start, end);
    let plain = raw.length < 4096;
    for (let k = 0; plain && k < raw.length; k++) plain = raw[k] < 0x80 && raw[k] !== 0x5c;
    if (plain) {
      key = String.fromCharCode.apply(null, raw as unknown as number[]);
    } else {
      try {
        key = JSON.parse(`"${new TextDecoder("utf-8", { fatal: true }).decode(raw)}"`);
      } catch {
        this.#lost = true; // JSON.parse or the decoder will name the problem
        return;
      }
    }
    const show = () => JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}…` : key);
    if (depth === 1) {
      this.#lastRootKey = key;
      if (RESERVED_NAMES.has(key)) {
        throw new Error(`${this.#source}: tensor name ${show()} is reserved`);
      }
      if ((frame.keys as Set<string>).has(key)) {
        throw new Error(`${this.#source}: tensor ${show()} appears twice in the header`);
      }
    } else if (frame.owner === "__metadata__") {
      if (RESERVED_NAMES.has(key)) {
        throw new Error(`${this.#source}: __metadata__: key ${show()} is reserved`);
      }
      if ((frame.keys as Set<string>).has(key)) {
        throw new Error(`${this.#source}: __metadata__: key ${show()} appears twice`);
      }
    } else if ((frame.keys as string[]).includes(key)) {
      throw new Error(
        `${this.#source}: tensor ${JSON.stringify(frame.owner)}: field ${show()} appears twice`,
      );
    }
    if (Array.isArray(frame.keys)) frame.keys.push(key);
    else frame.keys.add(key);
  }
}

// Largest dimension accepted (i32 indexing on the GPU; no model has a larger axis).
const MAX_DIM = 2 ** 31;

/**
 * Validate a parsed header against the size of the data section that follows it: every entry's
 * byte range must match its dtype and shape and the ranges must tile the section exactly.
 */
function validateHeader(
  header: unknown,
  dataLen: number,
  source: string,
): { metadata: Record<string, string>; entries: Map<string, SafetensorsEntry> } {
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`${source}: header must be a JSON object`);
  }
  const metadata: Record<string, string> = Object.create(null);
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    // The byte scan refused these already; kept here for headers parsed some other way.
    if (RESERVED_NAMES.has(name)) throw new Error(`${source}: tensor name "${name}" is reserved`);
    if (name === "__metadata__") {
      const m = z.record(z.string(), z.string()).safeParse(raw);
      if (!m.success) throw new Error(`${source}: __metadata__ must map strings to strings`);
      for (const [k, v] of Object.entries(m.data)) {
        if (RESERVED_NAMES.has(k)) {
          throw new Error(`${source}: __metadata__: key "${k}" is reserved`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const e = EntrySchema.safeParse(raw);
    if (!e.success) {
      throw new Error(
        `${source}: tensor "${name}": ${
          e.error.issues.map((i) => `${i.path.join(".")} ${i.message}`).join("; ")
        }`,
      );
    }
    const { dtype, shape, data_offsets: [begin, end] } = e.data;
    if (!(dtype in BYTES)) {
      throw new Error(
        `${source}: tensor "${name}": dtype ${dtype} is not supported (F32, F16, BF16)`,
      );
    }
    // Bounds before arithmetic: a few bytes of header may declare terabytes, and a product of
    // huge dimensions is no longer exact in a double.
    const axis = shape.findIndex((d) => d > MAX_DIM);
    if (axis >= 0) {
      throw new Error(
        `${source}: tensor "${name}": dimension ${axis} is ${shape[axis]} (at most 2^31)`,
      );
    }
    let elements = shape.includes(0) ? 0 : 1;
    for (const d of shape) {
      if (elements > dataLen) break; // too big already, whatever the rest is
      elements *= d;
    }
    if (elements > dataLen) {
      const declared = shape.reduce(
        (n, d) => n * BigInt(d),
        BigInt(BYTES[dtype as SafetensorsDType]),
      );
      throw new Error(
        `${source}: tensor "${name}": ${dtype}[${shape.join(", ")}] declares ${declared} bytes, ` +
          `the file's data section holds only ${dataLen}`,
      );
    }
    const want = elements * BYTES[dtype as SafetensorsDType];
    if (end > dataLen) {
      throw new Error(
        `${source}: tensor "${name}" ends at byte ${end} of a ${dataLen}-byte data section ` +
          `(file truncated?)`,
      );
    }
    if (end < begin || end - begin !== want) {
      throw new Error(
        `${source}: tensor "${name}": offsets [${begin}, ${end}] hold ${end - begin} bytes, ` +
          `${dtype}[${shape.join(", ")}] needs ${want}`,
      );
    }
    entries.set(name, { dtype: dtype as SafetensorsDType, shape, offsets: [begin, end] });
  }
  // The ranges must tile [0, dataLen) exactly: no holes, no overlaps, nothing after the last.
  const ranges = [...entries.entries()].sort((a, b) => a[1].offsets[0] - b[1].offsets[0]);
  let cursor = 0;
  for (const [name, { offsets: [begin, end] }] of ranges) {
    if (begin !== cursor) {
      throw new Error(
        `${source}: tensor "${name}" starts at byte ${begin}, expected ${cursor} ` +
          `(${begin < cursor ? "overlapping" : "a hole before it"})`,
      );
    }
    cursor = end;
  }
  if (cursor !== dataLen) {
    throw new Error(`${source}: ${dataLen - cursor} bytes after the last tensor (corrupt file)`);
  }
  return { metadata, entries };
}

/** The header length from the first 8 bytes, checked against the file size. */
function headerLength(first8: Uint8Array, fileBytes: number, source: string): number {
  if (fileBytes < 8) {
    throw new Error(`${source}: ${fileBytes} bytes is too short for a safetensors file`);
  }
  const headerLen = Number(
    new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true),
  );
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > fileBytes) {
    throw new Error(
      `${source}: header length ${headerLen} does not fit in the ${fileBytes}-byte file ` +
        `(truncated or not safetensors)`,
    );
  }
  return headerLen;
}

function parseHeaderJson(bytes: Uint8Array, source: string, dataLen: number): unknown {
  new HeaderScanner(bytes, dataLen, source).scanTo(bytes.byteLength);
  return parseScannedJson(bytes, source);
}

function parseScannedJson(bytes: Uint8Array, source: string): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new Error(`${source}: header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
}

/**
 * Parse and validate safetensors bytes; `source` names the file in errors. `tensor()` refuses
 * NaN and ±Inf; with `{ finite: true }` every tensor is checked before this returns, read later
 * or not (default false: each decode checks what it returns).
 */
export function parseSafetensors(
  bytes: Uint8Array,
  source = "safetensors",
  options: { finite?: boolean } = {},
): SafetensorsFile {
  const headerLen = headerLength(bytes.subarray(0, 8), bytes.byteLength, source);
  const dataStart = 8 + headerLen;
  const header = parseHeaderJson(
    bytes.subarray(8, 8 + headerLen),
    source,
    bytes.byteLength - dataStart,
  );
  const { metadata, entries } = validateHeader(header, bytes.byteLength - dataStart, source);
  if (options.finite) {
    for (const [name, { dtype, offsets: [begin, end] }] of entries) {
      assertFiniteStored(bytes.subarray(dataStart + begin, dataStart + end), dtype, source, name);
    }
  }
  return {
    metadata,
    entries,
    tensor(name: string): Float32Array {
      const { dtype, bytes } = this.raw(name);
      return assertFinite(decodeToF32(bytes, dtype), source, name);
    },
    raw(name: string): RawTensorBytes {
      const entry = entries.get(name);
      if (!entry) throw new Error(`${source}: no tensor "${name}"`);
      const [begin, end] = entry.offsets;
      return { dtype: entry.dtype, bytes: bytes.slice(dataStart + begin, dataStart + end) };
    },
  };
}

/** Raw bytes of part of a tensor as stored, with their element type. */
export interface RawTensorBytes {
  /** Element type of `bytes`. */
  dtype: SafetensorsDType;
  /** The stored little-endian elements (a fresh, 4-byte aligned buffer). */
  bytes: Uint8Array;
}

/**
 * A safetensors file opened for reading tensors at their offsets: only the header is read when it
 * is opened (and validated against the file's size); each read fetches one byte range, so memory
 * stays at the size of what is read, never the file's.
 */
export class SafetensorsReader {
  /** The file's path (named in errors). */
  readonly path: string;
  /** `__metadata__` (string → string). */
  readonly metadata: Record<string, string>;
  /** Entries by tensor name, in file order. */
  readonly entries: Map<string, SafetensorsEntry>;
  readonly #file: Deno.FsFile;
  readonly #dataStart: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    dataStart: number,
    header: { metadata: Record<string, string>; entries: Map<string, SafetensorsEntry> },
  ) {
    this.path = path;
    this.#file = file;
    this.#dataStart = dataStart;
    this.metadata = header.metadata;
    this.entries = header.entries;
  }

  /** Open `path` and validate its header (nothing else is read). */
  static async open(path: string): Promise<SafetensorsReader> {
    const file = await Deno.open(path, { read: true });
    try {
      const info = await file.stat();
      if (!info.isFile) throw new Error(`${path}: not a regular file`);
      const first8 = new Uint8Array(8);
      await readFully(file, first8, 0, path, Math.min(8, info.size));
      const headerLen = headerLength(first8, info.size, path);
      const dataLen = info.size - 8 - headerLen;
      // Read and scan in pieces, so a hostile header is refused after the piece that shows it
      // (the buffer's untouched pages are never made resident).
      const headerBytes = new Uint8Array(headerLen);
      const scanner = new HeaderScanner(headerBytes, dataLen, path);
      const piece = 1 << 20;
      for (let at = 0; at < headerLen; at += piece) {
        const end = Math.min(headerLen, at + piece);
        await readFully(file, headerBytes.subarray(at, end), 8 + at, path);
        scanner.scanTo(end);
      }
      const header = validateHeader(parseScannedJson(headerBytes, path), dataLen, path);
      return new SafetensorsReader(path, file, 8 + headerLen, header);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The entry of `name`, or an error naming the file. */
  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor "${name}"`);
    return e;
  }

  /**
   * Rows [start, start + count) of the tensor `name` (outermost dimension), as stored. A 1-D
   * tensor counts its elements as rows.
   */
  async readRows(name: string, start = 0, count?: number): Promise<RawTensorBytes> {
    const e = this.entry(name);
    const rows = e.shape[0] ?? 1;
    const n = count ?? rows - start;
    if (
      !Number.isInteger(start) || !Number.isInteger(n) || start < 0 || n < 0 || start + n > rows
    ) {
      throw new RangeError(`${this.path}: rows [${start}, ${start + n}) of "${name}" (${rows})`);
    }
    const rowBytes = (e.offsets[1] - e.offsets[0]) / Math.max(1, rows);
    const bytes = new Uint8Array(Math.ceil((n * rowBytes) / 4) * 4).subarray(0, n * rowBytes);
    await readFully(
      this.#file,
      bytes,
      this.#dataStart + e.offsets[0] + start * rowBytes,
      this.path,
    );
    return { dtype: e.dtype, bytes };
  }

  /** A whole tensor decoded to f32 (small tensors: norms); NaN and ±Inf are refused by name. */
  async tensor(name: string): Promise<Float32Array> {
    const raw = await this.readRows(name);
    return assertFinite(decodeToF32(raw.bytes, raw.dtype), this.path, name);
  }

  /** Close the file. */
  close(): void {
    this.#file.close();
  }
}

/** Fill `into` from byte `position` of `file`; a short file is an error naming `source`. */
async function readFully(
  file: Deno.FsFile,
  into: Uint8Array,
  position: number,
  source: string,
  want = into.byteLength,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < want) {
    const n = await file.read(into.subarray(got, want));
    if (n === null) {
      throw new Error(`${source}: ended after ${position + got} bytes, ${want - got} short`);
    }
    got += n;
  }
}

/**
 * `values` unchanged when every element is finite, else an error naming `source`, the tensor, how
 * many are NaN or ±Inf and the first: a trained adapter or optimizer state never holds them, so
 * one that does is corrupt (or diverged) and must not be resumed from or evaluated.
 */
export function assertFinite(values: Float32Array, source: string, name: string): Float32Array {
  let bad = 0;
  let first = -1;
  for (let i = 0; i < values.length; i++) {
    // x − x is 0 for every finite x and NaN for NaN and ±Inf.
    if (values[i] - values[i] !== 0) {
      if (first < 0) first = i;
      bad++;
    }
  }
  if (bad) {
    throw new Error(
      `${source}: tensor "${name}" holds ${bad} non-finite value${bad > 1 ? "s" : ""} of ` +
        `${values.length} (first: ${values[first]} at index ${first})`,
    );
  }
  return values;
}

/**
 * Refuse NaN and ±Inf among stored elements without widening them: an all-ones exponent field
 * (F32 0x7f800000, BF16 0x7f80, F16 0x7c00). The error is {@link assertFinite}'s.
 */
function assertFiniteStored(
  raw: Uint8Array,
  dtype: SafetensorsDType,
  source: string,
  name: string,
): void {
  const aligned = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  let bad = 0;
  let first = -1;
  if (dtype === "F32") {
    const w = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
    for (let i = 0; i < w.length; i++) {
      if ((w[i] & 0x7f800000) === 0x7f800000 && bad++ === 0) first = i;
    }
  } else {
    const mask = dtype === "F16" ? 0x7c00 : 0x7f80;
    const h = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    for (let i = 0; i < h.length; i++) {
      if ((h[i] & mask) === mask && bad++ === 0) first = i;
    }
  }
  if (!bad) return;
  const size = BYTES[dtype];
  const value = decodeToF32(aligned.subarray(first * size, (first + 1) * size), dtype)[0];
  const count = aligned.byteLength / size;
  throw new Error(
    `${source}: tensor "${name}" holds ${bad} non-finite value${bad > 1 ? "s" : ""} of ` +
      `${count} (first: ${value} at index ${first})`,
  );
}

/** Widen stored elements to f32 (F16 and BF16 exactly). */
export function decodeToF32(raw: Uint8Array, dtype: SafetensorsDType): Float32Array {
  const n = raw.byteLength / BYTES[dtype];
  // Typed views need aligned offsets; copy once when the bytes sit at an odd place.
  const aligned = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  if (dtype === "F32") return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
  const out = new Float32Array(n);
  if (dtype === "F16") {
    out.set(new Float16Array(aligned.buffer, aligned.byteOffset, n));
    return out;
  }
  // bf16 is the top half of an f32.
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) words[i] = halves[i] << 16;
  return out;
}

/** Little-endian bytes of `data` stored as `dtype` (F16 and BF16 round to nearest even). */
export function encodeElements(data: Float32Array, dtype: SafetensorsDType): Uint8Array {
  if (dtype === "F32") return new Uint8Array(data.slice().buffer);
  if (dtype === "F16") return new Uint8Array(Float16Array.from(data).buffer);
  const words = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const w = words[i];
    out[i] = ((w + 0x7fff + ((w >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return new Uint8Array(out.buffer);
}

/** One tensor of a file to write: its name, stored type and shape. */
export interface TensorPlan {
  /** Name in the header. */
  name: string;
  /** Stored element type. */
  dtype: SafetensorsDType;
  /** Row-major shape. */
  shape: number[];
}

/** Bytes a planned tensor occupies. */
export function plannedBytes(t: TensorPlan): number {
  return BYTES[t.dtype] * t.shape.reduce((a, b) => a * b, 1);
}

/** The header bytes (length prefix included) of a file holding `plan` in order. */
function headerBytes(plan: TensorPlan[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of plan) {
    const bytes = plannedBytes(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  const pad = (8 - ((8 + json.byteLength) % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  return out;
}

/**
 * Serialise tensors (in the given order) and string metadata as safetensors bytes; each tensor is
 * stored as `dtype` (default F32; F16 and BF16 round to nearest even).
 */
export function encodeSafetensors(
  tensors: { name: string; shape: number[]; data: Float32Array; dtype?: SafetensorsDType }[],
  metadata: Record<string, string> = {},
): Uint8Array {
  const plan = tensors.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new RangeError(
        `encodeSafetensors: "${t.name}" has ${t.data.length} values for shape [${t.shape}]`,
      );
    }
    return { name: t.name, shape: t.shape, dtype: t.dtype ?? "F32" };
  });
  const head = headerBytes(plan, metadata);
  const out = new Uint8Array(head.byteLength + plan.reduce((n, t) => n + plannedBytes(t), 0));
  out.set(head);
  let at = head.byteLength;
  tensors.forEach((t, i) => {
    const bytes = encodeElements(t.data, plan[i].dtype);
    out.set(bytes, at);
    at += bytes.byteLength;
  });
  return out;
}

/**
 * A safetensors file written tensor by tensor, never held whole: the header goes first (every
 * shape is known up front), then each tensor's bytes in plan order, in as many pieces as the
 * caller likes. The file appears under its name only once complete ({@link finish}).
 */
export class SafetensorsWriter {
  /** Final path. */
  readonly path: string;
  readonly #plan: TensorPlan[];
  readonly #file: Deno.FsFile;
  #index = 0;
  #written = 0;

  private constructor(path: string, plan: TensorPlan[], file: Deno.FsFile) {
    this.path = path;
    this.#plan = plan;
    this.#file = file;
  }

  /** Start `path` (written as `path.tmp` until finished) with the header for `plan`. */
  static async create(
    path: string,
    plan: TensorPlan[],
    metadata: Record<string, string> = {},
  ): Promise<SafetensorsWriter> {
    const file = await Deno.open(`${path}.tmp`, { write: true, create: true, truncate: true });
    const w = new SafetensorsWriter(path, plan, file);
    await w.#writeAll(headerBytes(plan, metadata));
    return w;
  }

  /** The tensor the next bytes belong to (undefined once all are written). */
  get next(): TensorPlan | undefined {
    return this.#plan[this.#index];
  }

  /** Append bytes of tensor `name`, which must be the next in the plan and not overflow it. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    const t = this.#plan[this.#index];
    if (!t || t.name !== name) {
      throw new Error(`${this.path}: got bytes of "${name}", expected "${t?.name ?? "nothing"}"`);
    }
    const size = plannedBytes(t);
    if (this.#written + bytes.byteLength > size) {
      throw new RangeError(`${this.path}: "${name}" is ${size} bytes, got more`);
    }
    await this.#writeAll(bytes);
    this.#written += bytes.byteLength;
    if (this.#written === size) {
      this.#index++;
      this.#written = 0;
    }
  }

  /** Close and move into place; every planned tensor must have been written in full. */
  async finish(): Promise<void> {
    this.#file.close();
    if (this.#index < this.#plan.length) {
      await Deno.remove(`${this.path}.tmp`);
      throw new Error(`${this.path}: "${this.#plan[this.#index].name}" was not written in full`);
    }
    await Deno.rename(`${this.path}.tmp`, this.path);
  }

  /** Close and delete the partial file. */
  async abort(): Promise<void> {
    try {
      this.#file.close();
    } catch { /* already closed */ }
    await Deno.remove(`${this.path}.tmp`).catch(() => {});
  }

  async #writeAll(bytes: Uint8Array) {
    let at = 0;
    while (at < bytes.byteLength) at += await this.#file.write(bytes.subarray(at));
  }
}

/** Shard file names and their tensors: each shard as full as `shardBytes` allows. */
export function planShards(
  plan: TensorPlan[],
  shardBytes: number,
): { file: string; tensors: TensorPlan[] }[] {
  const shards: TensorPlan[][] = [[]];
  let used = 0;
  for (const t of plan) {
    const bytes = plannedBytes(t);
    if (used > 0 && used + bytes > shardBytes) {
      shards.push([]);
      used = 0;
    }
    shards.at(-1)!.push(t);
    used += bytes;
  }
  const pad = (n: number) => String(n).padStart(5, "0");
  return shards.map((tensors, i) => ({
    file: shards.length === 1
      ? "model.safetensors"
      : `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`,
    tensors,
  }));
}

/** `model.safetensors.index.json` of sharded files (total_size and weight_map, as HF writes). */
export function shardIndexJson(shards: { file: string; tensors: TensorPlan[] }[]): string {
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const s of shards) {
    for (const t of s.tensors) {
      weightMap[t.name] = s.file;
      total += plannedBytes(t);
    }
  }
  return JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2);
}

/**
 * Write `plan` into `dir` as Hugging Face shards of at most `shardBytes` (one `model.safetensors`
 * when it fits, else numbered shards and `model.safetensors.index.json`), each tensor's bytes
 * produced in pieces by `bytesOf`. Returns the bytes of tensors written.
 */
export async function writeShardedSafetensors(
  dir: string,
  plan: TensorPlan[],
  shardBytes: number,
  bytesOf: (t: TensorPlan) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  progress?: (done: number, total: number) => void,
): Promise<number> {
  const shards = planShards(plan, shardBytes);
  const total = plan.reduce((n, t) => n + plannedBytes(t), 0);
  await Deno.mkdir(dir, { recursive: true });
  let done = 0;
  for (const shard of shards) {
    const writer = await SafetensorsWriter.create(`${dir}/${shard.file}`, shard.tensors, {
      format: "pt",
    });
    try {
      for (const t of shard.tensors) {
        for await (const bytes of bytesOf(t)) {
          await writer.write(t.name, bytes);
          done += bytes.byteLength;
          progress?.(done, total);
        }
      }
    } catch (e) {
      await writer.abort();
      throw e;
    }
    await writer.finish();
  }
  if (shards.length > 1) {
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, shardIndexJson(shards));
  }
  return total;
}
