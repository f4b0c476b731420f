/**
 * The safetensors format (Hugging Face): u64 little-endian header length N, N bytes of JSON
 * header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}},
 * then the tensor bytes, offsets relative to the end of the header.
 *
 * The reader validates the whole header before it decodes any tensor: every entry's byte range
 * must match its dtype and shape, lie inside the file, and the ranges must tile the data section
 * without holes or overlaps (as the format requires). A truncated or corrupt file is rejected
 * with the file name and the offending entry; nothing is half-loaded.
 */
import { z } from "zod";

/** Element types this kit reads (decoded to f32) and writes (F32 only). */
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
  /** Decode one tensor to f32 (F16 and BF16 widened exactly). */
  tensor(name: string): Float32Array;
}

// Generous but finite: a header larger than this is corrupt, not a model.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Parse and validate safetensors bytes; `source` names the file in errors. */
export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw new Error(`${source}: ${bytes.byteLength} bytes is too short for a safetensors file`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > bytes.byteLength) {
    throw new Error(
      `${source}: header length ${headerLen} does not fit in the ${bytes.byteLength}-byte file ` +
        `(truncated or not safetensors)`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)),
    );
  } catch (e) {
    throw new Error(`${source}: header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`${source}: header must be a JSON object`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      const m = z.record(z.string(), z.string()).safeParse(raw);
      if (!m.success) throw new Error(`${source}: __metadata__ must map strings to strings`);
      Object.assign(metadata, m.data);
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
    const want = shape.reduce((a, b) => a * b, 1) * BYTES[dtype as SafetensorsDType];
    if (end < begin || end - begin !== want) {
      throw new Error(
        `${source}: tensor "${name}": offsets [${begin}, ${end}] hold ${end - begin} bytes, ` +
          `${dtype}[${shape.join(", ")}] needs ${want}`,
      );
    }
    if (end > dataLen) {
      throw new Error(
        `${source}: tensor "${name}" ends at byte ${end} of a ${dataLen}-byte data section ` +
          `(file truncated?)`,
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
  return {
    metadata,
    entries,
    tensor(name: string): Float32Array {
      const entry = entries.get(name);
      if (!entry) throw new Error(`${source}: no tensor "${name}"`);
      const [begin, end] = entry.offsets;
      const raw = bytes.slice(dataStart + begin, dataStart + end); // aligned copy
      return decode(raw, entry.dtype);
    },
  };
}

function decode(raw: Uint8Array, dtype: SafetensorsDType): Float32Array {
  const n = raw.byteLength / BYTES[dtype];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(n);
  if (dtype === "F32") {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (dtype === "F16") {
    for (let i = 0; i < n; i++) out[i] = view.getFloat16(2 * i, true);
  } else {
    // bf16 is the top half of an f32.
    const word = new Uint32Array(1);
    const f = new Float32Array(word.buffer);
    for (let i = 0; i < n; i++) {
      word[0] = view.getUint16(2 * i, true) << 16;
      out[i] = f[0];
    }
  }
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
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new RangeError(
        `encodeSafetensors: "${t.name}" has ${t.data.length} values for shape [${t.shape}]`,
      );
    }
    const bytes = BYTES[t.dtype ?? "F32"] * n;
    header[t.name] = {
      dtype: t.dtype ?? "F32",
      shape: t.shape,
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  const pad = (8 - ((8 + json.byteLength) % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.byteLength + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  const word = new Uint32Array(1);
  const f = new Float32Array(word.buffer);
  for (const t of tensors) {
    const dtype = t.dtype ?? "F32";
    for (let i = 0; i < t.data.length; i++) {
      if (dtype === "F32") view.setFloat32(at + 4 * i, t.data[i], true);
      else if (dtype === "F16") view.setFloat16(at + 2 * i, t.data[i], true);
      else {
        f[0] = t.data[i];
        const w = word[0];
        view.setUint16(at + 2 * i, ((w + 0x7fff + ((w >>> 16) & 1)) >>> 16) & 0xffff, true);
      }
    }
    at += BYTES[dtype] * t.data.length;
  }
  return out;
}
