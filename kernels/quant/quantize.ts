/**
 * Quantize on the GPU, straight from a checkpoint's stored bytes: a block of rows of an F32, F16
 * or BF16 tensor is uploaded as it lies in the file and converted there into the storage format —
 * f32, bf16 or f16 (rows padded to 8 columns), NF4 (absmax per block) or int4 (scale and zero
 * point per group) — at a row offset of the destination weight. The host never widens a weight
 * to f32, and a big model loads at the speed of the disk and the device, as bitsandbytes does on
 * CUDA.
 *
 * The float64 quantizers (`nf4.ts`, `int4.ts`) are the reference: the same rules, evaluated in f32
 * here, so a value within an f32 rounding of a decision threshold may take the neighbouring code
 * (the tests bound how often). Every kernel also flags a non-finite input value.
 */
import { NF4_LEVELS, NF4_ZERO_CODE } from "./nf4.ts";
import type { Batch } from "../runtime/batch.ts";
import { FLAT_INDEX_WGSL, grid1d, uniformLayout } from "../runtime/launch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import type { GpuQuantWeight } from "./qmatmul.ts";

/** How a checkpoint stores its elements. */
export type StoredDType = "F32" | "F16" | "BF16";

/** Element `i` of the raw words as f32, and whether its bits are NaN or ±Inf. */
function sourceWgsl(dtype: StoredDType): string {
  const read = dtype === "F32"
    ? "bitcast<f32>(raw[i])"
    : dtype === "BF16"
    ? "bitcast<f32>(select(raw[i >> 1u] << 16u, raw[i >> 1u] & 0xffff0000u, (i & 1u) == 1u))"
    : "unpack2x16float(raw[i >> 1u])[i & 1u]";
  return `fn src(i: u32) -> f32 { return ${read}; }
fn nonFinite(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }`;
}

// One workgroup-width of 1-D launches; every kernel indexes with flat().
const PARAMS = uniformLayout(
  "P",
  [
    ["rows", "u32"],
    ["cols", "u32"],
    ["rowBase", "u32"],
    ["flag", "u32"],
    ["n", "u32"],
    ["wpr", "u32"],
    ["bs", "u32"],
    ["bpr", "u32"],
  ] as const,
);

const HEADER = `${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> bad: array<u32>;`;

const MAIN = `@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }`;

// f32 target: one invocation per element.
const TO_F32 = (dtype: StoredDType) =>
  `${HEADER}
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${sourceWgsl(dtype)}
${FLAT_INDEX_WGSL}
${MAIN}
  let v = src(i);
  if (nonFinite(v)) { bad[p.flag] = 1u; }
  out[p.rowBase * p.cols + i] = v;
}`;

// 16-bit targets: one invocation per output word (two columns), rows padded to 8 columns.
const TO_HALF = (dtype: StoredDType, target: "bf16" | "f16") =>
  `${HEADER}
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
${sourceWgsl(dtype)}
${FLAT_INDEX_WGSL}
fn half(v: f32) -> u32 {
  ${
    target === "bf16"
      // Round to nearest even on the dropped half (NaN stays NaN: its payload is in the top bits).
      ? "let b = bitcast<u32>(v); return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;"
      : "return pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu;"
  }
}
${MAIN}
  let words = p.wpr * 4u;            // words per padded row
  let r = i / words;
  let c = (i - r * words) * 2u;
  var word = 0u;
  for (var e = 0u; e < 2u; e++) {
    if (c + e < p.cols) {
      let v = src(r * p.cols + c + e);
      if (nonFinite(v)) { bad[p.flag] = 1u; }
      word |= half(v) << (16u * e);
    }
  }
  out[p.rowBase * words + i] = word;
}`;

function f32Literal(v: number): string {
  const s = Math.fround(v).toPrecision(9);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
}

// NF4: one invocation per (row, block): absmax, then 8 codes per word. Code = number of level
// midpoints below v / absmax, as the reference quantizer counts them.
const TO_NF4 = (dtype: StoredDType) => {
  const mids = NF4_LEVELS.slice(1).map((v, i) => f32Literal((v + NF4_LEVELS[i]) / 2));
  const code = mids.map((t) => `select(0u, 1u, x > ${t})`).join(" + ");
  return `${HEADER}
@group(0) @binding(3) var<storage, read_write> packed: array<u32>;
@group(0) @binding(4) var<storage, read_write> absmax: array<f32>;
${sourceWgsl(dtype)}
${FLAT_INDEX_WGSL}
fn nf4Code(x: f32) -> u32 { return ${code}; }
${MAIN}
  let r = i / p.bpr;
  let b = i - r * p.bpr;
  let c0 = b * p.bs;
  let c1 = min(c0 + p.bs, p.cols);
  let o = r * p.cols;
  var m = 0.0;
  for (var c = c0; c < c1; c++) {
    let v = src(o + c);
    if (nonFinite(v)) { bad[p.flag] = 1u; }
    m = max(m, abs(v));
  }
  absmax[(p.rowBase + r) * p.bpr + b] = m;
  for (var c = c0; c < c1; c += 8u) {
    var word = 0u;
    for (var e = 0u; e < 8u && c + e < c1; e++) {
      var q = ${NF4_ZERO_CODE}u;
      if (m > 0.0) { q = nf4Code(src(o + c + e) / m); }
      word |= q << (4u * e);
    }
    packed[(p.rowBase + r) * p.wpr + c / 8u] = word;
  }
}`;
};

// int4: one invocation per (row, 8 groups) so that each writes whole zero-point words. As the
// reference: the range includes 0, scale = (hi − lo)/15, zero = round(−lo/scale), q = round(v/scale)
// + zero clamped to [0, 15]; rounding half up (JavaScript's Math.round).
const TO_INT4 = (dtype: StoredDType) =>
  `${HEADER}
@group(0) @binding(3) var<storage, read_write> packed: array<u32>;
@group(0) @binding(4) var<storage, read_write> scales: array<f32>;
@group(0) @binding(5) var<storage, read_write> zeros: array<u32>;
${sourceWgsl(dtype)}
${FLAT_INDEX_WGSL}
fn roundHalfUp(x: f32) -> f32 { return floor(x + 0.5); }
${MAIN}
  let zpr = (p.bpr + 7u) / 8u;
  let r = i / zpr;
  let g0 = (i - r * zpr) * 8u;
  let o = r * p.cols;
  var zword = 0u;
  for (var g = g0; g < min(g0 + 8u, p.bpr); g++) {
    let c0 = g * p.bs;
    let c1 = min(c0 + p.bs, p.cols);
    var lo = 0.0;
    var hi = 0.0;
    for (var c = c0; c < c1; c++) {
      let v = src(o + c);
      if (nonFinite(v)) { bad[p.flag] = 1u; }
      lo = min(lo, v);
      hi = max(hi, v);
    }
    let scale = (hi - lo) / 15.0;
    var zero = 0.0;
    if (scale != 0.0) { zero = clamp(roundHalfUp(-lo / scale), 0.0, 15.0); }
    scales[(p.rowBase + r) * p.bpr + g] = scale;
    zword |= u32(zero) << (4u * (g - g0));
    for (var c = c0; c < c1; c += 8u) {
      var word = 0u;
      for (var e = 0u; e < 8u && c + e < c1; e++) {
        var q = zero;
        if (scale != 0.0) { q = clamp(roundHalfUp(src(o + c + e) / scale) + zero, 0.0, 15.0); }
        word |= u32(q) << (4u * e);
      }
      packed[(p.rowBase + r) * p.wpr + c / 8u] = word;
    }
  }
  zeros[(p.rowBase + r) * zpr + g0 / 8u] = zword;
}`;

/** What {@link quantizeRows} converts: `rows` rows of the stored tensor, as raw u32 words. */
export interface RawRows {
  /** The stored bytes as u32 words (16-bit dtypes: two elements per word, an odd tail padded). */
  raw: GpuTensor;
  /** How the bytes store elements. */
  dtype: StoredDType;
  /** Rows in `raw`. */
  rows: number;
}

/**
 * Record the conversion of `src` into rows [rowBase, rowBase + src.rows) of `dst` (a weight whose
 * buffers hold at least that many rows). Sets `flags[flag]` to 1 when any value is NaN or ±Inf.
 */
export async function quantizeRows(
  rt: GpuRuntime,
  batch: Batch,
  src: RawRows,
  dst: GpuQuantWeight,
  rowBase: number,
  flags: GpuTensor,
  flag: number,
): Promise<void> {
  const { rows, dtype } = src;
  const cols = dst.cols;
  const perWord = dtype === "F32" ? 1 : 2;
  if (src.raw.size * perWord < rows * cols || rowBase + rows > dst.rows || flag >= flags.size) {
    throw new RangeError(
      `quantizeRows: ${rows}×${cols} ${dtype} into rows [${rowBase}, ${rowBase + rows}) of ` +
        `${dst.rows}, raw ${src.raw.size} words, flag ${flag} of ${flags.size}`,
    );
  }
  const wpr = Math.ceil(cols / 8);
  const bpr = Math.ceil(cols / dst.blockSize);
  let code: string;
  let n: number;
  let outs: GpuTensor[];
  switch (dst.format) {
    case "f32":
      [code, n, outs] = [TO_F32(dtype), rows * cols, [dst.packed]];
      break;
    case "bf16":
    case "f16":
      [code, n, outs] = [TO_HALF(dtype, dst.format), rows * wpr * 4, [dst.packed]];
      break;
    case "nf4":
      [code, n, outs] = [TO_NF4(dtype), rows * bpr, [dst.packed, dst.scales]];
      break;
    case "int4":
      [code, n, outs] = [TO_INT4(dtype), rows * Math.ceil(bpr / 8), [
        dst.packed,
        dst.scales,
        dst.aux,
      ]];
      break;
    default:
      throw new RangeError(`quantizeRows: no GPU quantizer for ${dst.format}`);
  }
  const pipeline = await rt.pipelines.get(code, `quantize/${dtype}->${dst.format}`);
  const params = PARAMS.pack({ rows, cols, rowBase, flag, n, wpr, bs: dst.blockSize, bpr });
  // A pooled uniform, back in the pool once the batch has run, not `batch.uniform`: every
  // conversion's parameters are new (its row base and tensor), and a kept uniform is a buffer of
  // its own that lives as long as the device. Made between a load's large `writeBuffer` staging
  // copies, hundreds of them held the driver's freed staging memory resident (an 8B load's host
  // memory grew by about its NF4 payload again).
  const uniform = rt.pool.acquire(
    params.byteLength,
    GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    "uniform",
  );
  rt.device.queue.writeBuffer(uniform, 0, params);
  batch.releaseAfter({ release: () => rt.pool.release(uniform) });
  batch.dispatch(
    pipeline,
    [uniform, src.raw.binding, flags.binding, ...outs.map((t) => t.binding)],
    grid1d(rt, n),
  );
}
