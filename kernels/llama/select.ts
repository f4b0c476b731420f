/**
 * Token selection on the GPU, so decoding never waits for the host between tokens: the chosen ids
 * stay in a buffer the next step's embedding gathers from, and several steps are recorded per
 * submit. Their host twins are the selection loops of `models/llama/generate.ts` (greedy argmax,
 * Hugging Face's beam search), which the tests hold them to.
 *
 * - {@link greedySelect}: per row, the argmax of the logits (the lowest id among equal maxima, as
 *   the host's `>` scan), appended to the row's history; a row that picks EOS records its length
 *   and is done (later steps leave it alone).
 * - {@link beamSelect}: one beam-search step in one workgroup: log-softmax of each live beam's
 *   logits, the top 2·B (beam, token) continuations by summed log-probability (ties to the lower
 *   beam, then token, as the host's stable sort), EOS continuations into the finished pool scored
 *   sum / length^lengthPenalty (best B kept), the others the next B beams; HF's early stop; at the
 *   last step the best of finished and live hypotheses. It also writes the KV-cache slot table:
 *   slot s continues its parent's history, so no cache row is ever copied.
 */
import type { Batch } from "../runtime/batch.ts";
import { launch } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";

const GREEDY_WGSL = /* wgsl */ `
struct P { vocab: u32, step: u32, maxNew: u32, eos: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> history: array<u32>;
@group(0) @binding(4) var<storage, read_write> status: array<u32>;
var<workgroup> bestV: array<f32, 256>;
var<workgroup> bestI: array<u32, 256>;
var<workgroup> rowDone: u32;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x;
  let t = lid.x;
  // status[row]: 0 while generating, else 1 + the number of tokens before EOS.
  if (t == 0u) { rowDone = status[row]; }
  if (workgroupUniformLoad(&rowDone) != 0u) { return; }
  var v = -3.4e38;
  var at = 0xffffffffu;
  for (var j = t; j < p.vocab; j += 256u) {
    let x = logits[row * p.vocab + j];
    if (x > v) { v = x; at = j; }
  }
  bestV[t] = v;
  bestI[t] = at;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (t < s) {
      let ov = bestV[t + s];
      let oi = bestI[t + s];
      if (ov > bestV[t] || (ov == bestV[t] && oi < bestI[t])) { bestV[t] = ov; bestI[t] = oi; }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    let id = bestI[0];
    ids[row] = id;
    history[row * p.maxNew + p.step] = id;
    if (id == p.eos) { status[row] = 1u + p.step; }
    else if (p.step + 1u == p.maxNew) { status[row] = 1u + p.maxNew; }
  }
}`;

/**
 * Greedy selection for `step`: ids[row] = argmax logits[row], history[row, step] = it, and
 * status[row] = 1 + step when it is EOS (1 + maxNew after the last step). Rows already done are
 * left alone, so steps recorded past EOS change nothing.
 */
export async function greedySelect(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    logits: GpuTensor;
    ids: GpuTensor;
    history: GpuTensor;
    status: GpuTensor;
    vocab: number;
    step: number;
    maxNew: number;
    eos: number;
  },
): Promise<void> {
  const rows = a.ids.size;
  if (a.logits.size !== rows * a.vocab || a.history.size !== rows * a.maxNew) {
    throw new RangeError("greedySelect: shapes");
  }
  if (a.status.size !== rows || a.step >= a.maxNew) throw new RangeError("greedySelect: step");
  const pipeline = await rt.pipelines.get(GREEDY_WGSL, "llama/greedy-select");
  batch.dispatch(
    pipeline,
    [
      batch.uniform(
        new Uint32Array([a.vocab, a.step, a.maxNew, a.eos >>> 0]),
      ),
      a.logits.binding,
      a.ids.binding,
      a.history.binding,
      a.status.binding,
    ],
    [rows],
  );
}

/** Offsets (u32 words) of a beam search's state; see {@link beamStateLayout}. */
export interface BeamStateLayout {
  /** [0] live beams, [1] finished, [2] done (0/1), [3] result length. */
  header: number;
  /** Live token histories, two copies (ping-pong by step parity), [beams, maxNew] each. */
  live: [number, number];
  /** Finished hypotheses' tokens [beams, maxNew]. */
  finished: number;
  /** Finished hypotheses' lengths [beams]. */
  finishedLength: number;
  /** The result's tokens [maxNew]. */
  result: number;
  /** Total words. */
  words: number;
}

/** Layout of the u32 state of a beam search (offsets in u32 words). */
export function beamStateLayout(beams: number, maxNew: number): BeamStateLayout {
  const live = 4;
  return {
    /** [0] live beams, [1] finished, [2] done (0/1), [3] result length. */
    header: 0,
    /** Live token histories, two copies (ping-pong by step parity), [beams, maxNew] each. */
    live: [live, live + beams * maxNew],
    /** Finished hypotheses' tokens [beams, maxNew]. */
    finished: live + 2 * beams * maxNew,
    /** Finished hypotheses' lengths [beams]. */
    finishedLength: live + 3 * beams * maxNew,
    /** The result's tokens [maxNew]. */
    result: live + 3 * beams * maxNew + beams,
    /** Total words. */
    words: live + 3 * beams * maxNew + beams + maxNew,
  };
}

const beamWgsl = memoWgsl((beams: number, maxNew: number) => {
  const L = beamStateLayout(beams, maxNew);
  const K = 2 * beams;
  return /* wgsl */ `
struct P { vocab: u32, step: u32, eos: u32, pos: u32, maxSeq: u32, lengthPenalty: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> st: array<u32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;
@group(0) @binding(5) var<storage, read> tableIn: array<u32>;
@group(0) @binding(6) var<storage, read_write> tableOut: array<u32>;
const B = ${beams}u;
const K = ${K}u;
const MAXNEW = ${maxNew}u;
const WG = 64u;
var<workgroup> red: array<f32, 64>;
var<workgroup> lse: array<f32, ${beams}>;
var<workgroup> candS: array<f32, ${64 * K}>;
var<workgroup> candI: array<u32, ${64 * K}>;
var<workgroup> parents: array<u32, ${beams}>;
var<workgroup> live: u32;
var<workgroup> halt: u32;

// scores: [0, B) live sums of log-probabilities, [B, 2B) finished normalised scores, [2B] the
// result's normalised score.
fn norm(score: f32, length: u32) -> f32 {
  return score / pow(f32(max(1u, length)), p.lengthPenalty);
}

// a ranks before b: higher score, then lower index (the host's stable sort order).
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
  return sa > sb || (sa == sb && ia < ib);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  if (t == 0u) { live = select(st[0], 1u, p.step == 0u); halt = st[2]; }
  workgroupBarrier();
  if (workgroupUniformLoad(&halt) != 0u) { return; }
  let nLive = workgroupUniformLoad(&live);
  // Log-sum-exp of each live beam's logits.
  for (var b = 0u; b < nLive; b++) {
    var m = -3.4e38;
    for (var j = t; j < p.vocab; j += WG) { m = max(m, logits[b * p.vocab + j]); }
    red[t] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (t < s) { red[t] = max(red[t], red[t + s]); }
      workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = t; j < p.vocab; j += WG) { sum += exp(logits[b * p.vocab + j] - mx); }
    red[t] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (t < s) { red[t] += red[t + s]; }
      workgroupBarrier();
    }
    if (t == 0u) { lse[b] = mx + log(red[0]); }
    workgroupBarrier();
  }
  // Each thread's best K candidates (index = beam·vocab + token), kept sorted.
  var ts: array<f32, ${K}>;
  var ti: array<u32, ${K}>;
  for (var k = 0u; k < K; k++) { ts[k] = -3.4e38; ti[k] = 0xffffffffu; }
  let total = nLive * p.vocab;
  for (var c = t; c < total; c += WG) {
    let b = c / p.vocab;
    let base = select(scores[b], 0.0, p.step == 0u);
    let s = base + (logits[c] - lse[b]);
    if (!before(s, c, ts[K - 1u], ti[K - 1u])) { continue; }
    var k = K - 1u;
    while (k > 0u && before(s, c, ts[k - 1u], ti[k - 1u])) {
      ts[k] = ts[k - 1u];
      ti[k] = ti[k - 1u];
      k--;
    }
    ts[k] = s;
    ti[k] = c;
  }
  for (var k = 0u; k < K; k++) { candS[t * K + k] = ts[k]; candI[t * K + k] = ti[k]; }
  workgroupBarrier();
  if (t == 0u) {
    // Merge the per-thread lists into the global top K, then the host's bookkeeping.
    var head: array<u32, 64>;
    for (var w = 0u; w < WG; w++) { head[w] = 0u; }
    var topS: array<f32, ${K}>;
    var topI: array<u32, ${K}>;
    for (var k = 0u; k < K; k++) {
      var bw = 0xffffffffu;
      for (var w = 0u; w < WG; w++) {
        if (head[w] >= K) { continue; }
        let s = candS[w * K + head[w]];
        let i = candI[w * K + head[w]];
        if (i == 0xffffffffu) { continue; }
        if (bw == 0xffffffffu || before(s, i, candS[bw * K + head[bw]], candI[bw * K + head[bw]])) {
          bw = w;
        }
      }
      if (bw == 0xffffffffu) { topS[k] = -3.4e38; topI[k] = 0xffffffffu; continue; }
      topS[k] = candS[bw * K + head[bw]];
      topI[k] = candI[bw * K + head[bw]];
      head[bw]++;
    }
    let src = ${L.live[0]}u + (p.step % 2u) * B * MAXNEW;
    let dst = ${L.live[0]}u + ((p.step + 1u) % 2u) * B * MAXNEW;
    var nFin = st[1];
    var nNext = 0u;
    var nextS: array<f32, ${beams}>;
    for (var k = 0u; k < K && nNext < B; k++) {
      if (topI[k] == 0xffffffffu) { break; }
      let parent = topI[k] / p.vocab;
      let token = topI[k] % p.vocab;
      if (token == p.eos) {
        // A finished hypothesis of the parent's tokens (step of them), inserted in score order
        // after equal scores (the host's stable sort), the worst dropped past B.
        let sc = norm(topS[k], p.step);
        var at = nFin;
        while (at > 0u && scores[B + at - 1u] < sc) { at--; }
        if (at < B) {
          var m = min(nFin, B - 1u);
          while (m > at) {
            scores[B + m] = scores[B + m - 1u];
            st[${L.finishedLength}u + m] = st[${L.finishedLength}u + m - 1u];
            for (var u = 0u; u < MAXNEW; u++) {
              st[${L.finished}u + m * MAXNEW + u] = st[${L.finished}u + (m - 1u) * MAXNEW + u];
            }
            m--;
          }
          scores[B + at] = sc;
          st[${L.finishedLength}u + at] = p.step;
          for (var u = 0u; u < p.step; u++) {
            st[${L.finished}u + at * MAXNEW + u] = st[src + parent * MAXNEW + u];
          }
          nFin = min(nFin + 1u, B);
        }
      } else {
        for (var u = 0u; u < p.step; u++) {
          st[dst + nNext * MAXNEW + u] = st[src + parent * MAXNEW + u];
        }
        st[dst + nNext * MAXNEW + p.step] = token;
        nextS[nNext] = topS[k];
        parents[nNext] = parent;
        ids[nNext] = token;
        nNext++;
      }
    }
    var bestLive = -3.4e38;
    for (var b = 0u; b < nNext; b++) {
      scores[b] = nextS[b];
      bestLive = max(bestLive, norm(nextS[b], p.step + 1u));
    }
    st[0] = nNext;
    st[1] = nFin;
    var stop = nFin == B && scores[B + B - 1u] >= bestLive;
    var fromFinished = stop;
    var pick = 0u;
    if (!stop && p.step + 1u == MAXNEW) {
      // Out of steps: the best of finished and live (finished first among equals, as the host's
      // pool lists them first).
      stop = true;
      var best = -3.4e38;
      for (var f = 0u; f < nFin; f++) {
        if (scores[B + f] > best) { best = scores[B + f]; fromFinished = true; pick = f; }
      }
      for (var b = 0u; b < nNext; b++) {
        let sc = norm(nextS[b], p.step + 1u);
        if (sc > best) { best = sc; fromFinished = false; pick = b; }
      }
    }
    if (stop) {
      st[2] = 1u;
      if (fromFinished) {
        scores[2u * B] = scores[B + pick];
        st[3] = st[${L.finishedLength}u + pick];
        for (var u = 0u; u < st[3]; u++) {
          st[${L.result}u + u] = st[${L.finished}u + pick * MAXNEW + u];
        }
      } else {
        scores[2u * B] = norm(nextS[pick], p.step + 1u);
        st[3] = p.step + 1u;
        for (var u = 0u; u <= p.step; u++) { st[${L.result}u + u] = st[dst + pick * MAXNEW + u]; }
      }
    }
    live = nNext;
  }
  workgroupBarrier();
  // Slot s continues its parent's history: positions before pos as the parent saw them, pos
  // (where the chosen token's key and value go) its own row.
  let n = workgroupUniformLoad(&live);
  for (var i = t; i < n * p.maxSeq; i += WG) {
    let s = i / p.maxSeq;
    let q = i % p.maxSeq;
    var v = s;
    if (q < p.pos) { v = tableIn[parents[s] * p.maxSeq + q]; }
    tableOut[i] = v;
  }
}`;
});

/**
 * One beam-search step (see the module doc) over logits [beams, vocab] (row 0 only at step 0):
 * `state` (u32, {@link beamStateLayout}), `scores` (f32 [2·beams + 1], the last the result's score), `ids` (u32 [beams]: the next
 * tokens), and the slot table read from `tableIn` and written to `tableOut` ([beams, maxSeq]) for
 * tokens placed at `pos`.
 */
export async function beamSelect(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    logits: GpuTensor;
    state: GpuTensor;
    scores: GpuTensor;
    ids: GpuTensor;
    tableIn: GpuTensor;
    tableOut: GpuTensor;
    beams: number;
    vocab: number;
    maxNew: number;
    step: number;
    pos: number;
    maxSeq: number;
    eos: number;
    lengthPenalty: number;
  },
): Promise<void> {
  const { beams, vocab, maxNew, maxSeq } = a;
  if (beams < 1 || beams > 8) throw new RangeError(`beamSelect: ${beams} beams (1–8)`);
  if (
    a.state.size !== beamStateLayout(beams, maxNew).words || a.scores.size !== 2 * beams + 1 ||
    a.ids.size !== beams || a.logits.size < vocab || a.tableIn.size !== beams * maxSeq ||
    a.tableOut.size !== beams * maxSeq || a.pos > maxSeq || a.step >= maxNew
  ) {
    throw new RangeError("beamSelect: shapes");
  }
  await launch(
    rt,
    batch,
    { code: beamWgsl(beams, maxNew), label: "llama/beam-select" },
    [
      { u: vocab },
      { u: a.step },
      { u: a.eos >>> 0 },
      { u: a.pos },
      { u: maxSeq },
      { f: a.lengthPenalty },
    ],
    [a.logits, a.state, a.scores, a.ids, a.tableIn, a.tableOut],
    "one",
    64,
  );
}
