/**
 * Decode attention for GPUs split over the KV length (flash-decoding): one query row per beam
 * against the KV cache through the slot table, in two passes.
 *
 * - split: a workgroup per (KV block of `block` positions, head, row) computes the block's
 *   partial softmax: the max m of its scores, the sum l of exp(s − m) and the unnormalised
 *   o = Σ exp(s − m)·v (head-size floats), written to scratch;
 * - combine: a workgroup per (head, row) merges the row's blocks in order:
 *   M = max mᵢ, out = Σ exp(mᵢ − M)·oᵢ / Σ exp(mᵢ − M)·lᵢ.
 *
 * One query is too little work for a GPU when each (row, head) walks the whole length alone;
 * split into blocks, 1,000 positions × 32 heads make hundreds of workgroups. Each row decodes its
 * own position pos + offsets[row], so rows of different lengths decode together: blocks past a
 * row's length return at once and the combine reads only the row's own blocks.
 *
 * Inside a split workgroup: the block's cache rows are looked up in the slot table once and kept
 * in workgroup memory. Scores: `lanes` consecutive invocations share a key, each loading a share
 * of its vec4 columns (consecutive invocations read consecutive 16-byte words of one cache row)
 * and dotting them with the scaled query held in registers; the partial dots meet in workgroup
 * memory and one invocation per key sums them in a fixed order. The block's max and sum are
 * workgroup reductions: `subgroupMax`/`subgroupAdd` then one value per subgroup where subgroup
 * operations are granted, a tree in workgroup memory otherwise. Values: groups of HV invocations
 * (one per vec4 column) take every G-th key, four loads in flight, and the groups' sums are added
 * in order through workgroup memory. No float atomics: every sum has a fixed order on a device.
 */
import type { Batch } from "../runtime/batch.ts";
import { uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { colsPer, headAccessWgsl, lanesOf, unrollCols, vecCols } from "./head_wgsl.ts";
import { subgroupPrelude } from "../runtime/variants.ts";

const PARAMS = uniformLayout(
  "P",
  [
    ["heads", "u32"],
    ["kvHeads", "u32"],
    ["pos", "u32"],
    ["maxSeq", "u32"],
    ["nb", "u32"],
    ["scale", "f32"],
  ] as const,
);

// Invocations of a split workgroup (a power of two: the tree reduction halves it) and of a
// combine workgroup.
const WG = 128;
const WG_COMBINE = 64;

// Key groups of the value phase (one invocation per vec4 column each); value loads in flight per
// invocation. The score phase shares a key among lanesOf(hs) invocations (head_wgsl.ts).
const groupsOf = (hs: number) => Math.floor(WG / vecCols(hs));
const UNROLL = 4;

/** The two kernels of the split-KV decode for one head size and block: WGSL and label each. */
export interface AttentionDecodeKernels {
  /** Positions per KV block (one split workgroup each). */
  block: number;
  /** Pass 1: per-block (m, l, o). */
  split: { code: string; label: string };
  /** Pass 2: the blocks merged into the output. */
  combine: { code: string; label: string };
}

// f32 words of workgroup memory the split kernel declares.
function splitWords(hs: number, block: number): number {
  return block * (lanesOf(hs) + 1) + block + block + 4 * groupsOf(hs) * vecCols(hs) + WG;
}

/**
 * Positions per KV block for a cache of `maxSeq` positions within `bytes` of workgroup memory:
 * 64 up to 2,048 positions (at 1,000 positions, 16 blocks: 512 workgroups for one row of 32
 * heads), 128 up to 8,192, then 256 (at most 32 blocks per row before the longest contexts; the
 * combine's reads stay a small fraction of the cache's). Halved while it does not fit.
 */
export function attentionDecodeBlock(maxSeq: number, hs: number, bytes: number): number {
  let block = maxSeq <= 2048 ? 64 : maxSeq <= 8192 ? 128 : 256;
  while (block > 16 && 4 * splitWords(hs, block) > bytes) block /= 2;
  if (4 * splitWords(hs, block) > bytes) {
    throw new RangeError(`attention decode: head size ${hs} does not fit ${bytes} bytes`);
  }
  return block;
}

// A workgroup reduction of one f32 per invocation, the result in every invocation. With subgroup
// operations: the subgroup's value, then the subgroups' values in index order (subgroups are runs
// of consecutive local indices, checked when the device is opened). Otherwise a halving tree.
function reduceFn(name: string, subgroups: boolean, op: "max" | "add"): string {
  const join = (a: string, b: string) => op === "max" ? `max(${a}, ${b})` : `${a} + ${b}`;
  if (subgroups) {
    return `fn ${name}(x: f32, tid: u32, sg: u32) -> f32 {
  let s = ${op === "max" ? "subgroupMax" : "subgroupAdd"}(x);
  if (tid % sg == 0u) { red[tid / sg] = s; }
  workgroupBarrier();
  var r = red[0];
  for (var i = 1u; i < WG / sg; i++) { r = ${join("r", "red[i]")}; }
  workgroupBarrier();
  return r;
}`;
  }
  return `fn ${name}(x: f32, tid: u32) -> f32 {
  red[tid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (tid < s) { red[tid] = ${join("red[tid]", "red[tid + s]")}; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;
}

function header(hs: number, block: number): string {
  return `${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;
const HS = ${hs}u;
const HV = ${vecCols(hs)}u;
const B = ${block}u;
const WG = ${WG}u;`;
}

function splitWgslUncached(hs: number, block: number, subgroups: boolean, prelude: string): string {
  const el = hs % 4 === 0 ? "vec4<f32>" : "f32";
  const lanes = lanesOf(hs);
  const groups = groupsOf(hs);
  const sgArg = subgroups ? ", sg" : "";
  // The value phase: UNROLL keys j, j + G, ... loaded before any is used.
  const loads = Array.from({ length: UNROLL }, (_, t) =>
    `      var v${t} = vec4<f32>();
      var p${t} = 0.0;
      if (j + ${t * groups}u < n) {
        v${t} = ld_vc(ro[j + ${t * groups}u], c);
        p${t} = ss[j + ${t * groups}u];
      }`).join("\n");
  const fmas = Array.from({ length: UNROLL }, (_, t) => `      acc = fma(vec4(p${t}), v${t}, acc);`)
    .join("\n");
  return `${prelude}${header(hs, block)}
const LANES = ${lanes}u;
const KPS = ${WG / lanes}u;
const SPW = ${lanes + 1}u;
const NC = ${colsPer(hs)};
const G = ${groups}u;
@group(0) @binding(1) var<storage, read> q: array<${el}>;
@group(0) @binding(2) var<storage, read> kc: array<${el}>;
@group(0) @binding(3) var<storage, read> vc: array<${el}>;
@group(0) @binding(4) var<storage, read> table: array<u32>;
@group(0) @binding(5) var<storage, read> offsets: array<u32>;
@group(0) @binding(6) var<storage, read_write> po: array<${el}>;
@group(0) @binding(7) var<storage, read_write> ml: array<vec2<f32>>;
${headAccessWgsl(hs, "q", false)}
${headAccessWgsl(hs, "kc", false)}
${headAccessWgsl(hs, "vc", false)}
${headAccessWgsl(hs, "po", true)}
// Partial dots (odd stride: one invocation per key reads a row), scores then probabilities,
// cache-row offsets of the block's keys, the value groups' sums, reduction slots.
var<workgroup> sp: array<f32, ${block * (lanes + 1)}>;
var<workgroup> ss: array<f32, ${block}>;
var<workgroup> ro: array<u32, ${block}>;
var<workgroup> os: array<vec4<f32>, ${groups * vecCols(hs)}>;
var<workgroup> red: array<f32, ${WG}>;
${reduceFn("blockMax", subgroups, "max")}
${reduceFn("blockSum", subgroups, "add")}

@compute @workgroup_size(${WG})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,${
    subgroups ? "\n  @builtin(subgroup_size) sg: u32," : ""
  }
) {
  let blk = wid.x;
  let h = wid.y;
  let b = wid.z;
  // The row attends to positions 0..=last; blocks past them (and rows past the cache) do nothing.
  let last = p.pos + offsets[b];
  let u0 = blk * B;
  if (last >= p.maxSeq || u0 > last) { return; }
  let n = min(B, last + 1u - u0);
  let kh = h / (p.heads / p.kvHeads);
  let kw = p.kvHeads * HS;
  // Each key's cache row, through the slot table, once for both phases.
  for (var j = tid; j < n; j += WG) {
    let u = u0 + j;
    ro[j] = (table[b * p.maxSeq + u] * p.maxSeq + u) * kw + kh * HS;
  }
  workgroupBarrier();
  // Scores: LANES invocations per key, each its vec4 columns lane + LANES·k.
  let r = tid / LANES;
  let lane = tid % LANES;
  let qo = (b * p.heads + h) * HS;
  var qv: array<vec4<f32>, NC>;
${unrollCols(hs, (k) => `qv[${k}] = ld_q(qo, lane + ${k * lanes}u) * p.scale;`, 2)}
  for (var j = r; j < n; j += KPS) {
    let ko = ro[j];
    var d = 0.0;
${unrollCols(hs, (k) => `d += dot(qv[${k}], ld_kc(ko, lane + ${k * lanes}u));`, 4)}
    sp[j * SPW + lane] = d;
  }
  workgroupBarrier();
  var mx = -3.0e38;
  for (var j = tid; j < n; j += WG) {
    var s = 0.0;
    for (var i = 0u; i < LANES; i++) { s += sp[j * SPW + i]; }
    ss[j] = s;
    mx = max(mx, s);
  }
  let m = blockMax(mx, tid${sgArg});
  var sum = 0.0;
  for (var j = tid; j < n; j += WG) {
    let e = exp(ss[j] - m);
    ss[j] = e;
    sum += e;
  }
  // The reduction's barriers also publish the probabilities for the value phase.
  let l = blockSum(sum, tid${sgArg});
  // Values: group g of HV invocations takes keys g, g + G, ...; invocation c its vec4 column c.
  let g = tid / HV;
  let c = tid % HV;
  if (g < G) {
    var acc = vec4<f32>();
    for (var j = g; j < n; j += ${UNROLL}u * G) {
${loads}
${fmas}
    }
    os[g * HV + c] = acc;
  }
  workgroupBarrier();
  let part = (b * p.heads + h) * p.nb + blk;
  if (tid < HV) {
    var o = os[tid];
    for (var i = 1u; i < G; i++) { o += os[i * HV + tid]; }
    st_po(part * HS, tid, o);
  }
  if (tid == 0u) { ml[part] = vec2<f32>(m, l); }
}`;
}

function combineWgslUncached(hs: number, block: number): string {
  return `${header(hs, block)}
@group(0) @binding(1) var<storage, read> po: array<f32>;
@group(0) @binding(2) var<storage, read> ml: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(${WG_COMBINE})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let b = wid.y;
  let last = p.pos + offsets[b];
  if (last >= p.maxSeq) { return; }
  // The row's blocks, in order: M = max m, L = Σ exp(m − M)·l, out = Σ exp(m − M)·o / L.
  let nb = last / B + 1u;
  let first = (b * p.heads + h) * p.nb;
  var mm = -3.0e38;
  for (var i = 0u; i < nb; i++) { mm = max(mm, ml[first + i].x); }
  var ll = 0.0;
  for (var i = 0u; i < nb; i++) { ll += exp(ml[first + i].x - mm) * ml[first + i].y; }
  let inv = 1.0 / ll;
  for (var c = tid; c < HS; c += ${WG_COMBINE}u) {
    var o = 0.0;
    for (var i = 0u; i < nb; i++) { o += exp(ml[first + i].x - mm) * po[(first + i) * HS + c]; }
    out[(b * p.heads + h) * HS + c] = o * inv;
  }
}`;
}

const splitWgsl: typeof splitWgslUncached = memoWgsl(splitWgslUncached);
const combineWgsl: typeof combineWgslUncached = memoWgsl(combineWgslUncached);

/**
 * The split-KV decode kernels for head size `hs` and a cache of `maxSeq` positions on `rt`'s
 * variants (subgroup reductions where granted; the block from {@link attentionDecodeBlock}).
 */
export function attentionDecodeKernels(
  rt: GpuRuntime,
  hs: number,
  maxSeq: number,
): AttentionDecodeKernels {
  if (vecCols(hs) > WG) throw new RangeError(`attention decode: head size ${hs} over ${4 * WG}`);
  const v = rt.variants;
  const block = attentionDecodeBlock(maxSeq, hs, v.workgroupStorageBytes);
  const sg = v.subgroups;
  const name = (kind: string) =>
    `llama/attention-decode-${kind}-hs${hs}-b${block}${sg && kind === "split" ? "-sg" : ""}`;
  return {
    block,
    split: { code: splitWgsl(hs, block, sg, sg ? subgroupPrelude(v) : ""), label: name("split") },
    combine: { code: combineWgsl(hs, block), label: name("combine") },
  };
}

/** Shapes of one split-KV decode step. */
export interface AttentionDecodeDims {
  /** Query rows (beams). */
  rows: number;
  /** Query heads. */
  heads: number;
  /** KV heads. */
  kvHeads: number;
  /** Head size. */
  headSize: number;
  /** The step: row r decodes position pos + offsets[r]. */
  pos: number;
  /** Positions per cache slot. */
  maxSeq: number;
}

/**
 * Record the split-KV decode (shapes already checked by the caller): out [rows, heads·hs] from
 * q [rows, heads·hs] and the caches kc/vc [slots, maxSeq, kvHeads·hs] through the slot table
 * (u32 [rows, maxSeq]). The partials are scratch of this batch, recycled after the combine.
 * `kernels` defaults to {@link attentionDecodeKernels} for the runtime.
 */
export async function attentionDecodeGpu(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    out: GpuTensor;
    q: GpuTensor;
    kc: GpuTensor;
    vc: GpuTensor;
    table: GpuTensor;
    offsets: GpuTensor;
  },
  d: AttentionDecodeDims,
  kernels: AttentionDecodeKernels = attentionDecodeKernels(rt, d.headSize, d.maxSeq),
): Promise<void> {
  const nb = Math.ceil(d.maxSeq / kernels.block);
  const params = batch.uniform(PARAMS.pack({
    heads: d.heads,
    kvHeads: d.kvHeads,
    pos: d.pos,
    maxSeq: d.maxSeq,
    nb,
    scale: 1 / Math.sqrt(d.headSize),
  }));
  const parts = d.rows * d.heads * nb;
  const po = batch.scratch([parts, d.headSize]);
  const ml = batch.scratch([parts, 2]);
  const split = await rt.pipelines.get(kernels.split.code, kernels.split.label);
  batch.dispatch(split, [
    params,
    ...[a.q, a.kc, a.vc, a.table, a.offsets, po, ml].map((t) => t.binding),
  ], [nb, d.heads, d.rows]);
  const combine = await rt.pipelines.get(kernels.combine.code, kernels.combine.label);
  batch.dispatch(combine, [params, ...[po, ml, a.offsets, a.out].map((t) => t.binding)], [
    d.heads,
    d.rows,
  ]);
  batch.recycle(po);
  batch.recycle(ml);
}
