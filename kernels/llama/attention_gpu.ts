/**
 * Causal GQA attention for GPUs, in the manner of FlashAttention-2: a block of rows staged once in
 * workgroup memory, the other operand streamed through it in tiles with coalesced loads.
 *
 * - forward: a workgroup owns `block` query rows of one (sequence, head). It keeps the scaled Q
 *   block in workgroup memory, walks K/V in `tile`-row tiles up to the diagonal with an online
 *   softmax, and writes out and the log-sum-exp L exactly as the CPU-adapter kernel does;
 * - dq: a workgroup per query block walks the K/V tiles, recomputes P = exp(S − L) and
 *   dS = P ⊙ (dout·vᵀ − D), and accumulates dq = scale · dS·K. It computes D = rowsum(dout ⊙ out)
 *   for its rows on the way and writes it for the dk/dv kernel that follows;
 * - dk/dv: a workgroup per key block of one (sequence, KV head) walks the query tiles on and below
 *   the diagonal of every query head of its group, accumulating dv = Pᵀ·dout and
 *   dk = scale · dSᵀ·Q.
 *
 * Every sum has a fixed order and every output element one writer (no atomics), so a recomputed
 * step is bit-identical run to run. Accumulation is in f32.
 *
 * Each step has two phases between barriers. Scores: the block × tile entries are spread over all
 * invocations, each a dot product over vec4 rows of workgroup memory, and staged there. Products:
 * `lanes` invocations share one accumulator row, each owning the vec4 columns lane, lane + lanes,
 * ... (registers, indexed by literals). No subgroup width is assumed. Rows in workgroup memory
 * have an odd vec4 stride: the score phase reads one row per invocation, and an even stride would
 * put them on the same banks. Where the head size is a multiple of 4 the tensors are bound as vec4
 * arrays (16-byte loads and stores).
 */
import type { Batch } from "../runtime/batch.ts";
import { uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { colsPer, headAccessWgsl, lanesOf, unrollCols, vecCols } from "./head_wgsl.ts";

const PARAMS = uniformLayout(
  "P",
  [["seq", "u32"], ["heads", "u32"], ["kvHeads", "u32"], ["scale", "f32"]] as const,
);

/** One of the three GPU attention kernels. */
export type AttentionKernelKind = "forward" | "dq" | "dkv";

/** Rows a workgroup owns (`block`) and rows streamed per step (`tile`) of one GPU kernel. */
export interface AttentionTiles {
  /** Rows whose results one workgroup owns (query rows; key rows for dk/dv). */
  block: number;
  /** Rows of the other operand staged per step (key rows; query rows for dk/dv). */
  tile: number;
}

/** The three GPU attention kernels of one head size: WGSL, label and tile shape each. */
export interface AttentionGpuKernels {
  /** Forward: out and lse. */
  forward: { code: string; label: string; tiles: AttentionTiles };
  /** Backward, query side: D and dq. */
  dq: { code: string; label: string; tiles: AttentionTiles };
  /** Backward, key side: dk and dv. */
  dkv: { code: string; label: string; tiles: AttentionTiles };
}

// Odd row stride of a head in workgroup memory (vec4s), against bank conflicts.
const strideOf = (hs: number) => vecCols(hs) | 1;

// f32 words of workgroup memory a kernel declares for a tile shape.
function words(kind: AttentionKernelKind, hs: number, { block, tile }: AttentionTiles): number {
  const w = 4 * strideOf(hs);
  if (kind === "forward") return w * (block + 2 * tile) + 2 * block * (tile + 1);
  if (kind === "dq") return w * (2 * block + 2 * tile) + block * (tile + 1) + 2 * block;
  return w * (2 * block + 2 * tile) + 2 * block * tile + 2 * tile;
}

/**
 * The tile shape of a kernel at head size `hs` within `bytes` of workgroup memory: the largest
 * block (256, 128 or 64 invocations; it sets how often each streamed row is reused), then the
 * largest tile down to a quarter of the block (fewer barriers per row). At hs 128 (forward,
 * backward): 16 KiB gives 16×4 and 8×4, 32 KiB 32×8 and 16×8, 48 KiB 32×16 and 32×8.
 */
export function attentionTiles(
  kind: AttentionKernelKind,
  hs: number,
  bytes: number,
): AttentionTiles {
  const lanes = lanesOf(hs);
  for (const invocations of [256, 128, 64]) {
    const block = invocations / lanes;
    const least = invocations === 64 ? 1 : block / 4;
    for (let tile = block; tile >= least; tile /= 2) {
      if (4 * words(kind, hs, { block, tile }) <= bytes) return { block, tile };
    }
  }
  throw new RangeError(
    `attention: head size ${hs} does not fit ${bytes} bytes of workgroup memory`,
  );
}

// Tensor bindings: vec4 arrays where the head size allows, then their load/store helpers;
// "row-" bindings hold one f32 per query row (lse, dd).
function bindings(hs: number, list: [string, "in" | "out" | "row-in" | "row-out"][]): string {
  const el = hs % 4 === 0 ? "vec4<f32>" : "f32";
  return list.map(([name, use], i) => {
    const rw = use.endsWith("out") ? "read_write" : "read";
    const decl = `@group(0) @binding(${i + 1}) var<storage, ${rw}> ${name}: array<${
      use.startsWith("row") ? "f32" : el
    }>;`;
    return use.startsWith("row") ? decl : `${decl}\n${headAccessWgsl(hs, name, use === "out")}`;
  }).join("\n");
}

function header(hs: number, t: AttentionTiles): string {
  return `${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;
const HS = ${hs}u;
const HV = ${vecCols(hs)}u;
const W = ${strideOf(hs)}u;
const NC = ${colsPer(hs)};
const LANES = ${lanesOf(hs)}u;
const BLOCK = ${t.block}u;
const TILE = ${t.tile}u;
const ST = ${t.tile + 1}u;
const WG = ${t.block * lanesOf(hs)}u;`;
}

// Stage `n` head rows of a tensor in workgroup memory, zero past the sequence: consecutive
// invocations read consecutive vec4s of a row.
const stage = (
  indent: number,
  dst: string,
  n: string,
  src: string,
  width: string,
  first: string,
  head: string,
  scale = "",
) =>
  `for (var e = tid; e < ${n} * W; e += WG) {
  let r = e / W;
  let cv = e % W;
  var x = vec4<f32>();
  if (${first} + r < p.seq && cv < HV) {
    x = ld_${src}((b * p.seq + ${first} + r) * ${width} + ${head} * HS, cv)${scale};
  }
  ${dst}[e] = x;
}`.replace(/^/gm, " ".repeat(indent));

// The last vec4 of a dot product whose length is odd (the loop above takes pairs).
const ODD_TAIL = "\n        d0 += dot(qs[i * W + HV - 1u], ks[j * W + HV - 1u]);";

function forwardWgslUncached(hs: number, t: AttentionTiles): string {
  const w = strideOf(hs);
  return `${header(hs, t)}
${bindings(hs, [["q", "in"], ["k", "in"], ["v", "in"], ["out", "out"], ["lse", "row-out"]])}
var<workgroup> qs: array<vec4<f32>, ${t.block * w}>;
var<workgroup> ks: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> vs: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> ss: array<f32, ${t.block * (t.tile + 1)}>;
var<workgroup> ps: array<f32, ${t.block * (t.tile + 1)}>;

@compute @workgroup_size(${t.block * lanesOf(hs)})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  // Last query blocks first: they walk the most keys, so the long workgroups start early.
  let t0 = (nwg.x - 1u - wid.x) * BLOCK;
  let h = wid.y;
  let b = wid.z;
  let kh = h / (p.heads / p.kvHeads);
  let qw = p.heads * HS;
  let kvw = p.kvHeads * HS;
  // This invocation's query row and its vec4 columns lane + LANES·k.
  let r = tid / LANES;
  let lane = tid % LANES;
  let t = t0 + r;
${stage(2, "qs", "BLOCK", "q", "qw", "t0", "h", " * p.scale")}
  var acc: array<vec4<f32>, NC>;
  var m = -3.0e38;
  var l = 0.0;
  // Keys past the block's last row are above the diagonal of every row: those tiles are skipped.
  let last = min(t0 + BLOCK, p.seq);
  for (var u0 = 0u; u0 < last; u0 += TILE) {
    workgroupBarrier();
${stage(4, "ks", "TILE", "k", "kvw", "u0", "kh")}
${stage(4, "vs", "TILE", "v", "kvw", "u0", "kh")}
    workgroupBarrier();
    // Scores of the block × tile, masked above the diagonal (two sums in flight per dot).
    for (var e = tid; e < BLOCK * TILE; e += WG) {
      let i = e / TILE;
      let j = e % TILE;
      var d = -3.0e38;
      if (u0 + j <= t0 + i) {
        var d0 = 0.0;
        var d1 = 0.0;
        for (var c = 0u; c + 1u < HV; c += 2u) {
          d0 += dot(qs[i * W + c], ks[j * W + c]);
          d1 += dot(qs[i * W + c + 1u], ks[j * W + c + 1u]);
        }${vecCols(hs) % 2 === 1 ? ODD_TAIL : ""}
        d = d0 + d1;
      }
      ss[i * ST + j] = d;
    }
    workgroupBarrier();
    // Row r's new max (alike in each of its lanes); each lane turns its share of the keys into P,
    // so every exp is taken once.
    var nm = m;
    for (var j = 0u; j < TILE; j++) { nm = max(nm, ss[r * ST + j]); }
    for (var j = lane; j < TILE; j += LANES) {
      ps[r * ST + j] = select(0.0, exp(ss[r * ST + j] - nm), u0 + j <= t);
    }
    workgroupBarrier();
    // Online softmax: rescale once per tile, then acc += P·V.
    let corr = exp(m - nm);
    l *= corr;
${unrollCols(hs, (k) => `acc[${k}] *= corr;`)}
    for (var j = 0u; j < TILE; j++) {
      let pj = ps[r * ST + j];
      l += pj;
      let vo = j * W + lane;
${unrollCols(hs, (k) => `acc[${k}] = fma(vec4(pj), vs[vo + ${k * lanesOf(hs)}u], acc[${k}]);`, 6)}
    }
    m = nm;
  }
  if (t < p.seq) {
    let inv = 1.0 / l;
    let qo = (b * p.seq + t) * qw + h * HS;
${unrollCols(hs, (k) => `st_out(qo, lane + ${k * lanesOf(hs)}u, acc[${k}] * inv);`)}
    if (lane == 0u) { lse[(b * p.heads + h) * p.seq + t] = m + log(l); }
  }
}`;
}

function dqWgslUncached(hs: number, t: AttentionTiles): string {
  const w = strideOf(hs);
  return `${header(hs, t)}
${
    bindings(hs, [
      ["q", "in"],
      ["k", "in"],
      ["v", "in"],
      ["dout", "in"],
      ["out", "in"],
      ["lse", "row-in"],
      ["dd", "row-out"],
      ["dq", "out"],
    ])
  }
var<workgroup> qs: array<vec4<f32>, ${t.block * w}>;
var<workgroup> gs: array<vec4<f32>, ${t.block * w}>;
var<workgroup> ks: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> vs: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> ds: array<f32, ${t.block * (t.tile + 1)}>;
var<workgroup> ls: array<f32, ${t.block}>;
var<workgroup> dsum: array<f32, ${t.block}>;

@compute @workgroup_size(${t.block * lanesOf(hs)})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  // Last query blocks first: they walk the most keys, so the long workgroups start early.
  let t0 = (nwg.x - 1u - wid.x) * BLOCK;
  let h = wid.y;
  let b = wid.z;
  let kh = h / (p.heads / p.kvHeads);
  let qw = p.heads * HS;
  let kvw = p.kvHeads * HS;
  let r = tid / LANES;
  let lane = tid % LANES;
  let t = t0 + r;
${stage(2, "qs", "BLOCK", "q", "qw", "t0", "h", " * p.scale")}
${stage(2, "gs", "BLOCK", "dout", "qw", "t0", "h")}
  workgroupBarrier();
  // D = rowsum(dout ⊙ out) and L of each row, one invocation per row; dd is kept for dk/dv.
  if (lane == 0u) {
    var dsr = 0.0;
    var lr = 0.0;
    if (t < p.seq) {
      let qo = (b * p.seq + t) * qw + h * HS;
      for (var c = 0u; c < HV; c++) { dsr += dot(gs[r * W + c], ld_out(qo, c)); }
      let row = (b * p.heads + h) * p.seq + t;
      lr = lse[row];
      dd[row] = dsr;
    }
    dsum[r] = dsr;
    ls[r] = lr;
  }
  var acc: array<vec4<f32>, NC>;
  let last = min(t0 + BLOCK, p.seq);
  for (var u0 = 0u; u0 < last; u0 += TILE) {
    workgroupBarrier();
${stage(4, "ks", "TILE", "k", "kvw", "u0", "kh")}
${stage(4, "vs", "TILE", "v", "kvw", "u0", "kh")}
    workgroupBarrier();
    // dS = P ⊙ (dout·vᵀ − D) with P = exp(S − L) recomputed, zero above the diagonal.
    for (var e = tid; e < BLOCK * TILE; e += WG) {
      let i = e / TILE;
      let j = e % TILE;
      var g = 0.0;
      if (u0 + j <= t0 + i && t0 + i < p.seq) {
        var s = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < HV; c++) {
          s += dot(qs[i * W + c], ks[j * W + c]);
          dp += dot(gs[i * W + c], vs[j * W + c]);
        }
        g = exp(s - ls[i]) * (dp - dsum[i]);
      }
      ds[i * ST + j] = g;
    }
    workgroupBarrier();
    for (var j = 0u; j < TILE; j++) {
      let g = ds[r * ST + j];
      let ko = j * W + lane;
${unrollCols(hs, (k) => `acc[${k}] = fma(vec4(g), ks[ko + ${k * lanesOf(hs)}u], acc[${k}]);`, 6)}
    }
  }
  if (t < p.seq) {
    let qo = (b * p.seq + t) * qw + h * HS;
${unrollCols(hs, (k) => `st_dq(qo, lane + ${k * lanesOf(hs)}u, acc[${k}] * p.scale);`)}
  }
}`;
}

function dkvWgslUncached(hs: number, t: AttentionTiles): string {
  const w = strideOf(hs);
  return `${header(hs, t)}
${
    bindings(hs, [
      ["q", "in"],
      ["k", "in"],
      ["v", "in"],
      ["dout", "in"],
      ["lse", "row-in"],
      ["dd", "row-in"],
      ["dk", "out"],
      ["dv", "out"],
    ])
  }
var<workgroup> ks: array<vec4<f32>, ${t.block * w}>;
var<workgroup> vs: array<vec4<f32>, ${t.block * w}>;
var<workgroup> qs: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> gs: array<vec4<f32>, ${t.tile * w}>;
var<workgroup> ps: array<f32, ${t.tile * t.block}>;
var<workgroup> ds: array<f32, ${t.tile * t.block}>;
var<workgroup> ls: array<f32, ${t.tile}>;
var<workgroup> dsum: array<f32, ${t.tile}>;

@compute @workgroup_size(${t.block * lanesOf(hs)})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let u0 = wid.x * BLOCK;
  let kh = wid.y;
  let b = wid.z;
  let group = p.heads / p.kvHeads;
  let qw = p.heads * HS;
  let kvw = p.kvHeads * HS;
  // This invocation's key row and its vec4 columns lane + LANES·k.
  let j = tid / LANES;
  let lane = tid % LANES;
  let u = u0 + j;
${stage(2, "ks", "BLOCK", "k", "kvw", "u0", "kh", " * p.scale")}
${stage(2, "vs", "BLOCK", "v", "kvw", "u0", "kh")}
  var gk: array<vec4<f32>, NC>;
  var gv: array<vec4<f32>, NC>;
  for (var h = kh * group; h < (kh + 1u) * group; h++) {
    // Query rows before the block's first key see none of its keys.
    for (var t0 = u0; t0 < p.seq; t0 += TILE) {
      workgroupBarrier();
${stage(6, "qs", "TILE", "q", "qw", "t0", "h")}
${stage(6, "gs", "TILE", "dout", "qw", "t0", "h")}
      for (var e = tid; e < TILE; e += WG) {
        var lr = 0.0;
        var dsr = 0.0;
        if (t0 + e < p.seq) {
          let row = (b * p.heads + h) * p.seq + t0 + e;
          lr = lse[row];
          dsr = dd[row];
        }
        ls[e] = lr;
        dsum[e] = dsr;
      }
      workgroupBarrier();
      // P and dS of the tile × block, zero above the diagonal.
      for (var e = tid; e < TILE * BLOCK; e += WG) {
        let i = e / BLOCK;
        let jj = e % BLOCK;
        var pr = 0.0;
        var g = 0.0;
        if (u0 + jj <= t0 + i && t0 + i < p.seq) {
          var s = 0.0;
          var dp = 0.0;
          for (var c = 0u; c < HV; c++) {
            s += dot(qs[i * W + c], ks[jj * W + c]);
            dp += dot(gs[i * W + c], vs[jj * W + c]);
          }
          pr = exp(s - ls[i]);
          g = pr * (dp - dsum[i]);
        }
        ps[e] = pr;
        ds[e] = g;
      }
      workgroupBarrier();
      for (var i = 0u; i < TILE; i++) {
        let pr = ps[i * BLOCK + j];
        let g = ds[i * BLOCK + j];
        let qo = i * W + lane;
${unrollCols(hs, (k) => `gk[${k}] = fma(vec4(g), qs[qo + ${k * lanesOf(hs)}u], gk[${k}]);`, 8)}
${unrollCols(hs, (k) => `gv[${k}] = fma(vec4(pr), gs[qo + ${k * lanesOf(hs)}u], gv[${k}]);`, 8)}
      }
    }
  }
  if (u < p.seq) {
    let ko = (b * p.seq + u) * kvw + kh * HS;
${unrollCols(hs, (k) => `st_dk(ko, lane + ${k * lanesOf(hs)}u, gk[${k}] * p.scale);`)}
${unrollCols(hs, (k) => `st_dv(ko, lane + ${k * lanesOf(hs)}u, gv[${k}]);`)}
  }
}`;
}

const forwardWgsl: typeof forwardWgslUncached = memoWgsl(forwardWgslUncached);
const dqWgsl: typeof dqWgslUncached = memoWgsl(dqWgslUncached);
const dkvWgsl: typeof dkvWgslUncached = memoWgsl(dkvWgslUncached);

/** The GPU attention kernels for head size `hs`, tiled for `bytes` of workgroup memory. */
export function attentionGpuKernels(hs: number, bytes: number): AttentionGpuKernels {
  const tf = attentionTiles("forward", hs, bytes);
  const tq = attentionTiles("dq", hs, bytes);
  const tk = attentionTiles("dkv", hs, bytes);
  const name = (kind: string, t: AttentionTiles) =>
    `llama/attention-gpu-${kind}-hs${hs}-${t.block}x${t.tile}`;
  return {
    forward: { code: forwardWgsl(hs, tf), label: name("fwd", tf), tiles: tf },
    dq: { code: dqWgsl(hs, tq), label: name("bwd-q", tq), tiles: tq },
    dkv: { code: dkvWgsl(hs, tk), label: name("bwd-kv", tk), tiles: tk },
  };
}

/** Shapes the GPU kernels need: tokens per sequence, sequences, heads, KV heads, head size. */
export interface AttentionGpuDims {
  /** Tokens per sequence. */
  seq: number;
  /** Sequences (rows = sequences × seq). */
  sequences: number;
  /** Query heads. */
  heads: number;
  /** KV heads. */
  kvHeads: number;
  /** Head size. */
  headSize: number;
}

function params(d: AttentionGpuDims): ArrayBuffer {
  return PARAMS.pack({
    seq: d.seq,
    heads: d.heads,
    kvHeads: d.kvHeads,
    scale: 1 / Math.sqrt(d.headSize),
  });
}

async function record(
  rt: GpuRuntime,
  batch: Batch,
  kernel: { code: string; label: string },
  d: AttentionGpuDims,
  buffers: GpuTensor[],
  grid: [number, number, number],
): Promise<void> {
  const pipeline = await rt.pipelines.get(kernel.code, kernel.label);
  batch.dispatch(pipeline, [batch.uniform(params(d)), ...buffers.map((t) => t.binding)], grid);
}

/**
 * Record the GPU forward (shapes already checked by the caller): a workgroup per
 * (query block, head, sequence). `kernels` defaults to {@link attentionGpuKernels} for the device.
 */
export async function attentionForwardGpu(
  rt: GpuRuntime,
  batch: Batch,
  a: { out: GpuTensor; lse: GpuTensor; q: GpuTensor; k: GpuTensor; v: GpuTensor },
  d: AttentionGpuDims,
  kernels: AttentionGpuKernels = attentionGpuKernels(
    d.headSize,
    rt.variants.workgroupStorageBytes,
  ),
): Promise<void> {
  const f = kernels.forward;
  await record(rt, batch, f, d, [a.q, a.k, a.v, a.out, a.lse], [
    Math.ceil(d.seq / f.tiles.block),
    d.heads,
    d.sequences,
  ]);
}

/**
 * Record the GPU backward (shapes already checked by the caller): D and dq with a workgroup per
 * query block, then dk and dv with a workgroup per key block of each KV head. `dd` receives D.
 */
export async function attentionBackwardGpu(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    dq: GpuTensor;
    dk: GpuTensor;
    dv: GpuTensor;
    dd: GpuTensor;
    q: GpuTensor;
    k: GpuTensor;
    v: GpuTensor;
    out: GpuTensor;
    lse: GpuTensor;
    dout: GpuTensor;
  },
  d: AttentionGpuDims,
  kernels: AttentionGpuKernels = attentionGpuKernels(
    d.headSize,
    rt.variants.workgroupStorageBytes,
  ),
): Promise<void> {
  await record(rt, batch, kernels.dq, d, [a.q, a.k, a.v, a.dout, a.out, a.lse, a.dd, a.dq], [
    Math.ceil(d.seq / kernels.dq.tiles.block),
    d.heads,
    d.sequences,
  ]);
  await record(rt, batch, kernels.dkv, d, [a.q, a.k, a.v, a.dout, a.lse, a.dd, a.dk, a.dv], [
    Math.ceil(d.seq / kernels.dkv.tiles.block),
    d.kvHeads,
    d.sequences,
  ]);
}
