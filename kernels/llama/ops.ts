/**
 * The LLaMA block's non-matmul layers on the GPU, forward and backward, each the WGSL twin of a
 * float64 reference in `models/llama/cpu/`. Activations are row-major [rows, width] with
 * rows = sequences × T (every sequence the same length T, row r at position r mod T).
 * One invocation per element, per row or per (sequence, head, position): plain loops, like llm.c.
 * With the GPU variants (`rt.variants.target`), RMSNorm takes a workgroup per row (`norm_gpu.ts`)
 * and decode attention splits the KV length (`attention_decode.ts`).
 */
import type { Batch } from "../runtime/batch.ts";
import { FLAT_INDEX_WGSL, launch, uniformLayout } from "../runtime/launch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { rmsnormBackwardGpu, rmsnormForwardGpu } from "./norm_gpu.ts";
import { attentionDecodeGpu } from "./attention_decode.ts";

const HEAD = (bindings: string) => /* wgsl */ `
${bindings}
${FLAT_INDEX_WGSL}`;
const MAIN =
  "@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, " +
  "@builtin(num_workgroups) nwg: vec3<u32>) {\n  let i = flat(gid, nwg);";

function need(cond: boolean, what: string): void {
  if (!cond) throw new RangeError(what);
}

const RMSNORM_P = uniformLayout("P", [["rows", "u32"], ["dim", "u32"], ["eps", "f32"]] as const);

const RMSNORM_WGSL = HEAD(`
${RMSNORM_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> inv: array<f32>;`) + `
${MAIN}
  if (i >= p.rows) { return; }
  let o = i * p.dim;
  var ss = 0.0;
  for (var k = 0u; k < p.dim; k++) { ss += x[o + k] * x[o + k]; }
  let s = inverseSqrt(ss / f32(p.dim) + p.eps);
  inv[i] = s;
  for (var k = 0u; k < p.dim; k++) { y[o + k] = x[o + k] * s * w[k]; }
}`;

/** y = x/rms(x)⊙w per row; inv[r] = 1/rms kept for the backward. */
export async function rmsnormForward(
  rt: GpuRuntime,
  batch: Batch,
  a: { y: GpuTensor; inv: GpuTensor; x: GpuTensor; w: GpuTensor; eps: number },
): Promise<void> {
  const { y, inv, x, w, eps } = a;
  const dim = w.size;
  need(x.size % dim === 0 && y.size === x.size && inv.size === x.size / dim, "rmsnorm: shapes");
  if (rt.variants.target === "gpu") return await rmsnormForwardGpu(rt, batch, a);
  await launch(
    rt,
    batch,
    { code: RMSNORM_WGSL, label: "llama/rmsnorm" },
    RMSNORM_P.pack({ rows: inv.size, dim, eps }),
    [x, w, y, inv],
    inv.size,
  );
}

const RMSNORM_BWD_P = uniformLayout(
  "P",
  [["rows", "u32"], ["dim", "u32"], ["accumulate", "u32"]] as const,
);

const RMSNORM_BWD_WGSL = HEAD(`
${RMSNORM_BWD_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> inv: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;`) + `
${MAIN}
  if (i >= p.rows) { return; }
  let o = i * p.dim;
  let s = inv[i];
  var dot = 0.0;
  for (var k = 0u; k < p.dim; k++) { dot += w[k] * dy[o + k] * x[o + k]; }
  let c = s * s * s * dot / f32(p.dim);
  for (var k = 0u; k < p.dim; k++) {
    var prev = 0.0;
    if (p.accumulate != 0u) { prev = dx[o + k]; }
    dx[o + k] = prev + s * w[k] * dy[o + k] - c * x[o + k];
  }
}`;

/** dx (+)= RMSNorm backward (the norm weight is frozen: no dw). */
export async function rmsnormBackward(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    dx: GpuTensor;
    x: GpuTensor;
    w: GpuTensor;
    inv: GpuTensor;
    dy: GpuTensor;
    accumulate: boolean;
  },
): Promise<void> {
  const { dx, x, w, inv, dy, accumulate } = a;
  need(
    dx.size === x.size && dy.size === x.size && inv.size * w.size === x.size,
    "rmsnorm bwd: shapes",
  );
  if (rt.variants.target === "gpu") return await rmsnormBackwardGpu(rt, batch, a);
  await launch(
    rt,
    batch,
    { code: RMSNORM_BWD_WGSL, label: "llama/rmsnorm-bwd" },
    RMSNORM_BWD_P.pack({ rows: inv.size, dim: w.size, accumulate: accumulate ? 1 : 0 }),
    [x, w, inv, dy, dx],
    inv.size,
  );
}

// Pair j of a head starting at `base`: elements (2j, 2j+1) (interleaved), or (j, j + half) when
// split (Hugging Face's rotate_half). Both RoPE kernels' uniforms have `split` and `half`.
const PAIR_AT = /* wgsl */ `
fn pairAt(base: u32, j: u32) -> vec2<u32> {
  if (p.split != 0u) { return vec2<u32>(base + j, base + j + p.half); }
  return vec2<u32>(base + 2u * j, base + 2u * j + 1u);
}`;

const ROPE_P = uniformLayout(
  "P",
  [
    ["n", "u32"],
    ["heads", "u32"],
    ["half", "u32"],
    ["seq", "u32"],
    ["sign", "f32"],
    ["offset", "u32"],
    ["split", "u32"],
  ] as const,
);

const ROPE_WGSL = HEAD(`
${ROPE_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> cosT: array<f32>;
@group(0) @binding(2) var<storage, read> sinT: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;`) + `
${PAIR_AT}
${MAIN}
  if (i >= p.n) { return; }
  // i enumerates (row, head, pair j); the row's position is row mod seq. Pair j holds elements
  // (2j, 2j+1) of the head (interleaved), or (j, j + half) when split (Hugging Face's rotate_half).
  let pairsPerRow = p.heads * p.half;
  let row = i / pairsPerRow;
  let rem = i - row * pairsPerRow;
  let head = rem / p.half;
  let j = rem - head * p.half;
  let pos = row % p.seq + p.offset;
  let c = cosT[pos * p.half + j];
  let s = p.sign * sinT[pos * p.half + j];
  let at = pairAt((row * p.heads + head) * 2u * p.half, j);
  let v0 = x[at.x];
  let v1 = x[at.y];
  x[at.x] = v0 * c - v1 * s;
  x[at.y] = v0 * s + v1 * c;
}`;

/**
 * Rotate [rows, heads·headSize] in place by the position tables; `inverse` for the backward;
 * `layout` pairs elements as the checkpoint does (`kernels/llama/cpu/rope.ts`).
 */
export async function rope(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    x: GpuTensor;
    cos: GpuTensor;
    sin: GpuTensor;
    heads: number;
    headSize: number;
    seq: number;
    inverse?: boolean;
    /** Added to every position (decoding one token at `offset`). */
    offset?: number;
    /** Interleaved pairs (default) or rotate_half's. */
    layout?: "interleaved" | "half";
  },
): Promise<void> {
  const { x, cos, sin, heads, headSize, seq } = a;
  const half = headSize / 2;
  const offset = a.offset ?? 0;
  need(x.size % (heads * headSize) === 0 && cos.size >= (seq + offset) * half, "rope: shapes");
  const rows = x.size / (heads * headSize);
  need(rows % seq === 0, `rope: ${rows} rows are not whole sequences of ${seq}`);
  await launch(
    rt,
    batch,
    { code: ROPE_WGSL, label: "llama/rope" },
    ROPE_P.pack({
      n: x.size / 2,
      heads,
      half,
      seq,
      sign: a.inverse ? -1 : 1,
      offset,
      split: a.layout === "half" ? 1 : 0,
    }),
    [cos, sin, x],
    x.size / 2,
  );
}

const ROPE_DECODE_P = uniformLayout(
  "P",
  [
    ["n", "u32"],
    ["rows", "u32"],
    ["heads", "u32"],
    ["kvHeads", "u32"],
    ["half", "u32"],
    ["pos", "u32"],
    ["maxSeq", "u32"],
    ["split", "u32"],
  ] as const,
);

const ROPE_DECODE_WGSL = HEAD(`
${ROPE_DECODE_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> cosT: array<f32>;
@group(0) @binding(2) var<storage, read> sinT: array<f32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;
@group(0) @binding(8) var<storage, read> offsets: array<u32>;`) + `
${PAIR_AT}
${MAIN}
  if (i >= p.n) { return; }
  // Three ranges of invocations: q's pairs (rotated in place), k's pairs (rotated into the
  // cache row of slot row at its position), v's elements (copied there). A row's position is
  // pos + offsets[row]; rows past the cache are left alone.
  let hs = 2u * p.half;
  let kw = p.kvHeads * hs;
  let nq = p.rows * p.heads * p.half;
  let nk = p.rows * p.kvHeads * p.half;
  if (i < nq + nk) {
    var e = i;
    var heads = p.heads;
    if (i >= nq) { e = i - nq; heads = p.kvHeads; }
    let row = e / (heads * p.half);
    let head = (e / p.half) % heads;
    let j = e % p.half;
    let pos = p.pos + offsets[row];
    if (pos >= p.maxSeq) { return; }
    let cj = cosT[pos * p.half + j];
    let sj = sinT[pos * p.half + j];
    if (i < nq) {
      let at = pairAt((row * heads + head) * hs, j);
      let v0 = q[at.x];
      let v1 = q[at.y];
      q[at.x] = v0 * cj - v1 * sj;
      q[at.y] = v0 * sj + v1 * cj;
    } else {
      let src = pairAt(row * kw + head * hs, j);
      let to = pairAt((row * p.maxSeq + pos) * kw + head * hs, j);
      let v0 = k[src.x];
      let v1 = k[src.y];
      kc[to.x] = v0 * cj - v1 * sj;
      kc[to.y] = v0 * sj + v1 * cj;
    }
    return;
  }
  let e = i - nq - nk;
  let row = e / kw;
  let pos = p.pos + offsets[row];
  if (pos >= p.maxSeq) { return; }
  vc[(row * p.maxSeq + pos) * kw + e % kw] = v[e];
}`;

/**
 * One decoding step's RoPE and cache write in one dispatch: q [rows, heads·hs] rotated in place;
 * k [rows, kvHeads·hs] rotated and, with v, written to row `pos + offsets[row]` of slot `row` of
 * the caches kc/vc [slots, maxSeq, kvHeads·hs] (k itself is left as it was). `offsets` (u32
 * [rows]) lets sequences of different lengths decode together; a row whose position is past the
 * cache is skipped.
 */
export async function ropeDecode(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    q: GpuTensor;
    k: GpuTensor;
    v: GpuTensor;
    kc: GpuTensor;
    vc: GpuTensor;
    cos: GpuTensor;
    sin: GpuTensor;
    heads: number;
    kvHeads: number;
    headSize: number;
    pos: number;
    maxSeq: number;
    offsets: GpuTensor;
    layout?: "interleaved" | "half";
  },
): Promise<void> {
  const { q, k, v, kc, vc, heads, kvHeads, headSize, pos, maxSeq, offsets } = a;
  const half = headSize / 2;
  const rows = q.size / (heads * headSize);
  const kw = kvHeads * headSize;
  need(
    Number.isInteger(rows) && k.size === rows * kw && v.size === k.size &&
      kc.size >= rows * maxSeq * kw && vc.size === kc.size && pos < maxSeq &&
      a.cos.size >= maxSeq * half && offsets.size === rows,
    "rope decode: shapes",
  );
  const n = rows * (heads * half + kvHeads * half + kw);
  await launch(
    rt,
    batch,
    { code: ROPE_DECODE_WGSL, label: "llama/rope-decode" },
    ROPE_DECODE_P.pack({
      n,
      rows,
      heads,
      kvHeads,
      half,
      pos,
      maxSeq,
      split: a.layout === "half" ? 1 : 0,
    }),
    [a.cos, a.sin, q, k, v, kc, vc, offsets],
    n,
  );
}

/** cos/sin tables [seq, headSize/2] in float64, rounded once to f32 (as llama2.c's own tables). */
export function ropeTables(
  seq: number,
  headSize: number,
  theta: number,
): { cos: Float32Array; sin: Float32Array } {
  const half = headSize / 2;
  const cos = new Float32Array(seq * half);
  const sin = new Float32Array(seq * half);
  for (let pos = 0; pos < seq; pos++) {
    for (let j = 0; j < half; j++) {
      const angle = pos / theta ** ((2 * j) / headSize);
      cos[pos * half + j] = Math.cos(angle);
      sin[pos * half + j] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

const N_P = uniformLayout("P", [["n", "u32"]] as const);

const SWIGLU_WGSL = HEAD(`
${N_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;`) + `
${MAIN}
  if (i >= p.n) { return; }
  let x = a[i];
  h[i] = x / (1.0 + exp(-x)) * b[i];
}`;

/** h = silu(a)⊙b. */
export async function swigluForward(
  rt: GpuRuntime,
  batch: Batch,
  t: { h: GpuTensor; a: GpuTensor; b: GpuTensor },
): Promise<void> {
  need(t.a.size === t.b.size && t.h.size === t.a.size, "swiglu: shapes");
  await launch(
    rt,
    batch,
    { code: SWIGLU_WGSL, label: "llama/swiglu" },
    N_P.pack({ n: t.h.size }),
    [t.a, t.b, t.h],
    t.h.size,
  );
}

const SWIGLU_BWD_WGSL = HEAD(`
${N_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> dh: array<f32>;
@group(0) @binding(4) var<storage, read_write> da: array<f32>;
@group(0) @binding(5) var<storage, read_write> db: array<f32>;`) + `
${MAIN}
  if (i >= p.n) { return; }
  let x = a[i];
  let sig = 1.0 / (1.0 + exp(-x));
  db[i] = dh[i] * x * sig;
  da[i] = dh[i] * b[i] * sig * (1.0 + x * (1.0 - sig));
}`;

/** da, db of h = silu(a)⊙b. */
export async function swigluBackward(
  rt: GpuRuntime,
  batch: Batch,
  t: { da: GpuTensor; db: GpuTensor; a: GpuTensor; b: GpuTensor; dh: GpuTensor },
): Promise<void> {
  need([t.b, t.dh, t.da, t.db].every((x) => x.size === t.a.size), "swiglu bwd: shapes");
  await launch(
    rt,
    batch,
    { code: SWIGLU_BWD_WGSL, label: "llama/swiglu-bwd" },
    N_P.pack({ n: t.a.size }),
    [t.a, t.b, t.dh, t.da, t.db],
    t.a.size,
  );
}

const ADD_WGSL = HEAD(`
${N_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;`) + `
${MAIN}
  if (i >= p.n) { return; }
  dst[i] += src[i];
}`;

/** dst += src (residual connections, gradient sums). */
export async function addInto(
  rt: GpuRuntime,
  batch: Batch,
  t: { dst: GpuTensor; src: GpuTensor },
): Promise<void> {
  need(t.dst.size === t.src.size, "add: shapes");
  await launch(
    rt,
    batch,
    { code: ADD_WGSL, label: "llama/add" },
    N_P.pack({ n: t.dst.size }),
    [t.src, t.dst],
    t.dst.size,
  );
}

const ATTN_DECODE_P = uniformLayout(
  "P",
  [
    ["n", "u32"],
    ["heads", "u32"],
    ["kvHeads", "u32"],
    ["hs", "u32"],
    ["pos", "u32"],
    ["maxSeq", "u32"],
    ["scale", "f32"],
  ] as const,
);

const ATTN_DECODE_WGSL = HEAD(`
${ATTN_DECODE_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> table: array<u32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> offsets: array<u32>;`) + `
${MAIN}
  if (i >= p.n) { return; }
  // i = beam·heads + h; position u of the beam's sequence lives in cache slot table[beam, u]; the
  // beam's own position is pos + offsets[beam] (past the cache: nothing to do).
  let h = i % p.heads;
  let beam = i / p.heads;
  let pos = p.pos + offsets[beam];
  if (pos >= p.maxSeq) { return; }
  let kh = h / (p.heads / p.kvHeads);
  let kw = p.kvHeads * p.hs;
  let qo = i * p.hs;
  let so = i * p.maxSeq;
  var mx = -3.0e38;
  for (var u = 0u; u <= pos; u++) {
    let ko = (table[beam * p.maxSeq + u] * p.maxSeq + u) * kw + kh * p.hs;
    var d = 0.0;
    for (var c = 0u; c < p.hs; c++) { d += q[qo + c] * kc[ko + c]; }
    d *= p.scale;
    scores[so + u] = d;
    mx = max(mx, d);
  }
  var sum = 0.0;
  for (var u = 0u; u <= pos; u++) { let e = exp(scores[so + u] - mx); scores[so + u] = e; sum += e; }
  for (var c = 0u; c < p.hs; c++) { out[qo + c] = 0.0; }
  for (var u = 0u; u <= pos; u++) {
    let pr = scores[so + u] / sum;
    let vo = (table[beam * p.maxSeq + u] * p.maxSeq + u) * kw + kh * p.hs;
    for (var c = 0u; c < p.hs; c++) { out[qo + c] += pr * v[vo + c]; }
  }
}`.replace("v[vo + c]", "vc[vo + c]");

/**
 * One decoding step of attention: q [beams, heads·hs] of the token at `pos + offsets[beam]`
 * against the KV cache kc/vc [slots, maxSeq, kvHeads·hs], where position u of beam b is row u of
 * slot table[b, u] (u32 [beams, maxSeq]; beams share prefixes without copies). scores is scratch
 * [beams, heads, maxSeq] of the CPU-adapter kernel; a beam whose position is past the cache is
 * skipped. With the GPU variants the KV length is split into blocks with a combine pass
 * (`attention_decode.ts`), and `scores` is not used.
 */
export async function attentionDecode(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    out: GpuTensor;
    scores: GpuTensor;
    q: GpuTensor;
    kc: GpuTensor;
    vc: GpuTensor;
    table: GpuTensor;
    heads: number;
    kvHeads: number;
    headSize: number;
    pos: number;
    maxSeq: number;
    offsets: GpuTensor;
  },
): Promise<void> {
  const { out, scores, q, kc, vc, table, heads, kvHeads, headSize, pos, maxSeq, offsets } = a;
  const beams = q.size / (heads * headSize);
  need(Number.isInteger(beams) && out.size === q.size && pos < maxSeq, "attention decode: shapes");
  need(
    kc.size === beams * maxSeq * kvHeads * headSize && vc.size === kc.size,
    "attention decode: cache",
  );
  need(scores.size >= beams * heads * maxSeq, "attention decode: scratch");
  need(table.size === beams * maxSeq, "attention decode: slot table");
  need(offsets.size === beams, "attention decode: offsets");
  if (rt.variants.target === "gpu") {
    const dims = { rows: beams, heads, kvHeads, headSize, pos, maxSeq };
    await attentionDecodeGpu(rt, batch, { out, q, kc, vc, table, offsets }, dims);
    return;
  }
  const n = beams * heads;
  await launch(
    rt,
    batch,
    { code: ATTN_DECODE_WGSL, label: "llama/attention-decode" },
    ATTN_DECODE_P.pack({
      n,
      heads,
      kvHeads,
      hs: headSize,
      pos,
      maxSeq,
      scale: 1 / Math.sqrt(headSize),
    }),
    [q, kc, vc, table, scores, out, offsets],
    n,
  );
}
