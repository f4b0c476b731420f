/**
 * Causal grouped-query attention without a [seq, seq] buffer, as FlashAttention computes it:
 *
 * - forward: one invocation per (sequence, head, query position) walks the keys in tiles with an
 *   online softmax (running max m and sum l, the output rescaled once per tile), writes the output
 *   and the row's log-sum-exp L = m + log l;
 * - backward: D = Σ dout ⊙ out per query row; dq per query row and dk, dv per key row, each
 *   recomputing the probabilities P = exp(q·k/√hs − L) from q, k and L.
 *
 * Memory is the inputs, the outputs and two floats per query row, whatever the length: a 4096-token
 * sequence needs no more per head than a short one. q [rows, heads·hs], k/v [rows, kvHeads·hs],
 * rows = sequences × seq; query head h reads KV head ⌊h / (heads / kvHeads)⌋. The float64 twin is
 * `kernels/llama/cpu/attention.ts`.
 *
 * These are the CPU-adapter kernels (one invocation per row, no workgroup memory). Where
 * `rt.variants.target` is `"gpu"`, the same calls record the workgroup-tiled FlashAttention-2
 * kernels of `attention_gpu.ts` instead, with the same out and lse layout.
 */
import type { Batch } from "../runtime/batch.ts";
import { flatIndexWgsl, launch, uniformLayout } from "../runtime/launch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { memoWgsl } from "../runtime/memo.ts";
import { attentionBackwardGpu, attentionForwardGpu } from "./attention_gpu.ts";

/** Keys scored per step of the online softmax (the output is rescaled once per tile). */
const TILE = 16;

const PARAMS = uniformLayout(
  "P",
  [["n", "u32"], ["seq", "u32"], ["heads", "u32"], ["kvHeads", "u32"], ["scale", "f32"]] as const,
);

const HEADER = `${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;`;

const MAIN = `@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }`;

// i = (b·heads + h)·seq + t: a query row; its KV head, and the offsets of its rows.
const QUERY_ROW = (hs: number) =>
  `  let t = i % p.seq;
  let sh = i / p.seq;
  let h = sh % p.heads;
  let b = sh / p.heads;
  let kh = h / (p.heads / p.kvHeads);
  let qw = p.heads * ${hs}u;
  let kw = p.kvHeads * ${hs}u;
  let qo = (b * p.seq + t) * qw + h * ${hs}u;`;

// 64-wide workgroups: each invocation holds head-size arrays in private memory.
const FLAT64 = flatIndexWgsl(64);

function forwardWgslUncached(hs: number): string {
  return `${HEADER}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
${FLAT64}
${MAIN}
${QUERY_ROW(hs)}
  var qv: array<f32, ${hs}>;
  var acc: array<f32, ${hs}>;
  for (var c = 0u; c < ${hs}u; c++) { qv[c] = q[qo + c] * p.scale; acc[c] = 0.0; }
  var s: array<f32, ${TILE}>;
  var m = -3.0e38;
  var l = 0.0;
  for (var u0 = 0u; u0 <= t; u0 += ${TILE}u) {
    let n = min(${TILE}u, t + 1u - u0);
    var tm = -3.0e38;
    for (var j = 0u; j < n; j++) {
      let ko = (b * p.seq + u0 + j) * kw + kh * ${hs}u;
      var d = 0.0;
      for (var c = 0u; c < ${hs}u; c++) { d = fma(qv[c], k[ko + c], d); }
      s[j] = d;
      tm = max(tm, d);
    }
    let nm = max(m, tm);
    let corr = exp(m - nm);
    l *= corr;
    for (var c = 0u; c < ${hs}u; c++) { acc[c] *= corr; }
    for (var j = 0u; j < n; j++) {
      let pj = exp(s[j] - nm);
      l += pj;
      let vo = (b * p.seq + u0 + j) * kw + kh * ${hs}u;
      for (var c = 0u; c < ${hs}u; c++) { acc[c] = fma(pj, v[vo + c], acc[c]); }
    }
    m = nm;
  }
  let inv = 1.0 / l;
  for (var c = 0u; c < ${hs}u; c++) { out[qo + c] = acc[c] * inv; }
  lse[i] = m + log(l);
}`;
}

// D = Σ dout ⊙ out per query row (the softmax backward's row term).
function rowDotWgslUncached(hs: number): string {
  return `${HEADER}
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> dd: array<f32>;
${FLAT64}
${MAIN}
${QUERY_ROW(hs)}
  _ = kh;
  _ = kw;
  var d = 0.0;
  for (var c = 0u; c < ${hs}u; c++) { d = fma(dout[qo + c], out[qo + c], d); }
  dd[i] = d;
}`;
}

// dq_t = scale · Σ_u P_tu (dout_t·v_u − D_t) k_u, one query row per invocation.
function backwardQWgslUncached(hs: number): string {
  return `${HEADER}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> dd: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
${FLAT64}
${MAIN}
${QUERY_ROW(hs)}
  var qv: array<f32, ${hs}>;
  var go: array<f32, ${hs}>;
  var acc: array<f32, ${hs}>;
  for (var c = 0u; c < ${hs}u; c++) {
    qv[c] = q[qo + c] * p.scale;
    go[c] = dout[qo + c];
    acc[c] = 0.0;
  }
  let L = lse[i];
  let D = dd[i];
  for (var u = 0u; u <= t; u++) {
    let ko = (b * p.seq + u) * kw + kh * ${hs}u;
    var sc = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < ${hs}u; c++) {
      sc = fma(qv[c], k[ko + c], sc);
      dp = fma(go[c], v[ko + c], dp);
    }
    let ds = exp(sc - L) * (dp - D);
    for (var c = 0u; c < ${hs}u; c++) { acc[c] = fma(ds, k[ko + c], acc[c]); }
  }
  for (var c = 0u; c < ${hs}u; c++) { dq[qo + c] = acc[c] * p.scale; }
}`;
}

// dk_u = scale · Σ_{h in group, t ≥ u} P_tu (dout_t·v_u − D_t) q_t and dv_u = Σ P_tu dout_t,
// one key row (b, kv head, u) per invocation.
function backwardKvWgslUncached(hs: number): string {
  return `${HEADER}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> dd: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;
${FLAT64}
${MAIN}
  let u = i % p.seq;
  let bk = i / p.seq;
  let kh = bk % p.kvHeads;
  let b = bk / p.kvHeads;
  let group = p.heads / p.kvHeads;
  let qw = p.heads * ${hs}u;
  let kw = p.kvHeads * ${hs}u;
  let ko = (b * p.seq + u) * kw + kh * ${hs}u;
  var kv: array<f32, ${hs}>;
  var vv: array<f32, ${hs}>;
  var gk: array<f32, ${hs}>;
  var gv: array<f32, ${hs}>;
  for (var c = 0u; c < ${hs}u; c++) {
    kv[c] = k[ko + c] * p.scale;
    vv[c] = v[ko + c];
    gk[c] = 0.0;
    gv[c] = 0.0;
  }
  for (var h = kh * group; h < (kh + 1u) * group; h++) {
    for (var t = u; t < p.seq; t++) {
      let row = (b * p.heads + h) * p.seq + t;
      let qo = (b * p.seq + t) * qw + h * ${hs}u;
      var sc = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < ${hs}u; c++) {
        sc = fma(q[qo + c], kv[c], sc);
        dp = fma(dout[qo + c], vv[c], dp);
      }
      let pr = exp(sc - lse[row]);
      let ds = pr * (dp - dd[row]);
      for (var c = 0u; c < ${hs}u; c++) {
        gk[c] = fma(ds, q[qo + c], gk[c]);
        gv[c] = fma(pr, dout[qo + c], gv[c]);
      }
    }
  }
  for (var c = 0u; c < ${hs}u; c++) {
    dk[ko + c] = gk[c] * p.scale;
    dv[ko + c] = gv[c];
  }
}`;
}

/** Shapes of an attention call. */
export interface AttentionDims {
  /** Tokens per sequence. */
  seq: number;
  /** Query heads. */
  heads: number;
  /** KV heads. */
  kvHeads: number;
  /** Head size. */
  headSize: number;
}

function fields(d: AttentionDims, n: number): ArrayBuffer {
  return PARAMS.pack({
    n,
    seq: d.seq,
    heads: d.heads,
    kvHeads: d.kvHeads,
    scale: 1 / Math.sqrt(d.headSize),
  });
}

/** Query rows (sequences × heads × seq) of q, checked against k and v. */
function queryRows(q: GpuTensor, k: GpuTensor, v: GpuTensor, d: AttentionDims): number {
  const rows = q.size / (d.heads * d.headSize);
  const sequences = rows / d.seq;
  if (
    !Number.isInteger(sequences) || d.heads % d.kvHeads !== 0 ||
    k.size !== rows * d.kvHeads * d.headSize || v.size !== k.size
  ) {
    throw new RangeError(
      `attention: q of ${q.size}, k/v of ${k.size}/${v.size} for ${JSON.stringify(d)}`,
    );
  }
  return sequences * d.heads * d.seq;
}

/**
 * Causal GQA attention forward: out [rows, heads·hs] and lse [sequences, heads, seq] (the
 * log-sum-exp of each query row, all the backward keeps of the softmax).
 */
export async function attentionForward(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    out: GpuTensor;
    lse: GpuTensor;
    q: GpuTensor;
    k: GpuTensor;
    v: GpuTensor;
    dims: AttentionDims;
  },
): Promise<void> {
  const { out, lse, q, k, v, dims } = a;
  const n = queryRows(q, k, v, dims);
  if (out.size !== q.size || lse.size !== n) {
    throw new RangeError(`attention: out ${out.size} / lse ${lse.size} for ${n} query rows`);
  }
  if (rt.variants.target === "gpu") {
    // Workgroup-tiled FlashAttention-2 forward (`attention_gpu.ts`).
    const sequences = n / (dims.heads * dims.seq);
    await attentionForwardGpu(rt, batch, { out, lse, q, k, v }, { ...dims, sequences });
    return;
  }
  await launch(
    rt,
    batch,
    { code: forwardWgsl(dims.headSize), label: `llama/attention-hs${dims.headSize}` },
    fields(dims, n),
    [q, k, v, out, lse],
    n,
    64,
  );
}

/**
 * Attention backward from the forward's out and lse: dq, dk, dv (written, not accumulated).
 * `dd` is scratch [sequences, heads, seq].
 */
export async function attentionBackward(
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
    dims: AttentionDims;
  },
): Promise<void> {
  const { dq, dk, dv, dd, q, k, v, out, lse, dout, dims } = a;
  const n = queryRows(q, k, v, dims);
  if (
    dq.size !== q.size || dk.size !== k.size || dv.size !== v.size || out.size !== q.size ||
    dout.size !== q.size || lse.size !== n || dd.size !== n
  ) {
    throw new RangeError("attention backward: shapes");
  }
  if (rt.variants.target === "gpu") {
    // D and dq per query block, then dk/dv per key block (`attention_gpu.ts`).
    const sequences = n / (dims.heads * dims.seq);
    await attentionBackwardGpu(rt, batch, { dq, dk, dv, dd, q, k, v, out, lse, dout }, {
      ...dims,
      sequences,
    });
    return;
  }
  const hs = dims.headSize;
  await launch(
    rt,
    batch,
    { code: rowDotWgsl(hs), label: `llama/attention-dd-hs${hs}` },
    fields(dims, n),
    [dout, out, dd],
    n,
    64,
  );
  await launch(
    rt,
    batch,
    { code: backwardQWgsl(hs), label: `llama/attention-bwd-q-hs${hs}` },
    fields(dims, n),
    [q, k, v, dout, lse, dd, dq],
    n,
    64,
  );
  const nk = (n / dims.heads) * dims.kvHeads;
  await launch(
    rt,
    batch,
    { code: backwardKvWgsl(hs), label: `llama/attention-bwd-kv-hs${hs}` },
    fields(dims, nk),
    [q, k, v, dout, lse, dd, dk, dv],
    nk,
    64,
  );
}

const forwardWgsl: typeof forwardWgslUncached = memoWgsl(forwardWgslUncached);

const rowDotWgsl: typeof rowDotWgslUncached = memoWgsl(rowDotWgslUncached);

const backwardQWgsl: typeof backwardQWgslUncached = memoWgsl(backwardQWgslUncached);

const backwardKvWgsl: typeof backwardKvWgslUncached = memoWgsl(backwardKvWgslUncached);
