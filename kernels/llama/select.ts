/**
 * Token selection on the GPU, so decoding never waits for the host between tokens: the chosen ids
 * stay in a buffer the next step's embedding gathers from, and several steps are recorded per
 * submit. Their host twins are the selection loops of `models/llama/generate.ts` (greedy argmax,
 * Hugging Face's beam search), which the tests hold them to.
 *
 * - {@link greedySelect}: per row, the argmax of the logits (the lowest id among equal maxima, as
 *   the host's `>` scan), appended to the row's history; a row that picks EOS records its length
 *   and is done (later steps leave it alone).
 * - {@link beamSelect}: one beam-search step per question, one workgroup each (several questions'
 *   beams decode in one batch): log-softmax of each live beam's
 *   logits, the top 2·B (beam, token) continuations by summed log-probability (ties to the lower
 *   beam, then token, as the host's stable sort), EOS continuations into the finished pool scored
 *   sum / length^lengthPenalty (best B kept), the others the next B beams; HF's early stop; at the
 *   last step the best of finished and live hypotheses. It also writes the KV-cache slot table:
 *   slot s continues its parent's history, so no cache row is ever copied.
 */
import type { Batch } from "../runtime/batch.ts";
import { uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";

const GREEDY_P = uniformLayout(
  "P",
  [["vocab", "u32"], ["step", "u32"], ["maxNew", "u32"], ["eos", "u32"]] as const,
);

const GREEDY_WGSL = /* wgsl */ `
${GREEDY_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> history: array<u32>;
@group(0) @binding(4) var<storage, read_write> status: array<u32>;
@group(0) @binding(5) var<storage, read> limits: array<u32>;
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
    else if (p.step + 1u >= limits[row]) { status[row] = 2u + p.step; }
  }
}`;

/**
 * Greedy selection for `step`: ids[row] = argmax logits[row], history[row, step] = it, and
 * status[row] = 1 + step when it is EOS (1 + limits[row] after the row's last step; limits ≤
 * maxNew, the history's stride). Rows already done are left alone, so steps recorded past EOS
 * change nothing.
 */
export async function greedySelect(
  rt: GpuRuntime,
  batch: Batch,
  a: {
    logits: GpuTensor;
    ids: GpuTensor;
    history: GpuTensor;
    status: GpuTensor;
    limits: GpuTensor;
    vocab: number;
    step: number;
    maxNew: number;
    eos: number;
  },
): Promise<void> {
  const rows = a.ids.size;
  if (
    a.logits.size !== rows * a.vocab || a.history.size !== rows * a.maxNew ||
    a.limits.size !== rows
  ) {
    throw new RangeError("greedySelect: shapes");
  }
  if (a.status.size !== rows || a.step >= a.maxNew) throw new RangeError("greedySelect: step");
  const pipeline = await rt.pipelines.get(GREEDY_WGSL, "llama/greedy-select");
  batch.dispatch(
    pipeline,
    [
      batch.uniform(
        GREEDY_P.pack({ vocab: a.vocab, step: a.step, maxNew: a.maxNew, eos: a.eos >>> 0 }),
      ),
      a.logits.binding,
      a.ids.binding,
      a.history.binding,
      a.status.binding,
      a.limits.binding,
    ],
    [rows],
  );
}

/** Offsets (u32 words) of a beam search's state; see {@link beamStateLayout}. */
export interface BeamStateLayout {
  /** [0] live beams, [1] finished, [2] done (0 running, 1 by the stop rule, 2 out of steps),
   * [3] result length. */
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

const BEAM_P = uniformLayout(
  "P",
  [
    ["vocab", "u32"],
    ["step", "u32"],
    ["eos", "u32"],
    ["pos", "u32"],
    ["maxSeq", "u32"],
    ["lengthPenalty", "f32"],
  ] as const,
);

const beamWgsl = memoWgsl((beams: number, maxNew: number) => {
  const L = beamStateLayout(beams, maxNew);
  const K = 2 * beams;
  return /* wgsl */ `
${BEAM_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> stAll: array<u32>;
@group(0) @binding(3) var<storage, read_write> scAll: array<f32>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;
@group(0) @binding(5) var<storage, read> tableIn: array<u32>;
@group(0) @binding(6) var<storage, read_write> tableOut: array<u32>;
@group(0) @binding(7) var<storage, read> offsets: array<u32>;
@group(0) @binding(8) var<storage, read> limits: array<u32>;
const B = ${beams}u;
const K = ${K}u;
const MAXNEW = ${maxNew}u;
const WORDS = ${L.words}u;
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
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let t = lid.x;
  // Workgroup wq searches question wq: its blocks of the state (from SB) and of the scores (from
  // CB), its beams' rows [wq·B, (wq+1)·B) of ids and slot tables. Step 0 reads the question's
  // prefill row (one per question), later steps its beams' rows.
  let wq = wid.x;
  let SB = wq * WORDS;
  let CB = wq * (2u * B + 1u);
  let rowBase = select(wq * B, wq, p.step == 0u);
  let pos = p.pos + offsets[wq * B];
  if (t == 0u) { live = select(stAll[SB + 0], 1u, p.step == 0u); halt = stAll[SB + 2]; }
  workgroupBarrier();
  if (workgroupUniformLoad(&halt) != 0u) { return; }
  let nLive = workgroupUniformLoad(&live);
  // Log-sum-exp of each live beam's logits.
  for (var b = 0u; b < nLive; b++) {
    var m = -3.4e38;
    for (var j = t; j < p.vocab; j += WG) { m = max(m, logits[(rowBase + b) * p.vocab + j]); }
    red[t] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (t < s) { red[t] = max(red[t], red[t + s]); }
      workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = t; j < p.vocab; j += WG) { sum += exp(logits[(rowBase + b) * p.vocab + j] - mx); }
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
    let base = select(scAll[CB + b], 0.0, p.step == 0u);
    let s = base + (logits[rowBase * p.vocab + c] - lse[b]);
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
    var nFin = stAll[SB + 1];
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
        while (at > 0u && scAll[CB + B + at - 1u] < sc) { at--; }
        if (at < B) {
          var m = min(nFin, B - 1u);
          while (m > at) {
            scAll[CB + B + m] = scAll[CB + B + m - 1u];
            stAll[SB + ${L.finishedLength}u + m] = stAll[SB + ${L.finishedLength}u + m - 1u];
            for (var u = 0u; u < MAXNEW; u++) {
              stAll[SB + ${L.finished}u + m * MAXNEW + u] = stAll[SB + ${L.finished}u + (m - 1u) * MAXNEW + u];
            }
            m--;
          }
          scAll[CB + B + at] = sc;
          stAll[SB + ${L.finishedLength}u + at] = p.step;
          for (var u = 0u; u < p.step; u++) {
            stAll[SB + ${L.finished}u + at * MAXNEW + u] = stAll[SB + src + parent * MAXNEW + u];
          }
          nFin = min(nFin + 1u, B);
        }
      } else {
        for (var u = 0u; u < p.step; u++) {
          stAll[SB + dst + nNext * MAXNEW + u] = stAll[SB + src + parent * MAXNEW + u];
        }
        stAll[SB + dst + nNext * MAXNEW + p.step] = token;
        nextS[nNext] = topS[k];
        parents[nNext] = parent;
        ids[wq * B + nNext] = token;
        nNext++;
      }
    }
    var bestLive = -3.4e38;
    for (var b = 0u; b < nNext; b++) {
      scAll[CB + b] = nextS[b];
      bestLive = max(bestLive, norm(nextS[b], p.step + 1u));
    }
    stAll[SB + 0] = nNext;
    stAll[SB + 1] = nFin;
    var stop = nFin == B && scAll[CB + B + B - 1u] >= bestLive;
    var fromFinished = stop;
    var pick = 0u;
    var outOfSteps = false;
    if (!stop && p.step + 1u >= limits[wq]) {
      outOfSteps = true;
      // Out of steps: the best of finished and live (finished first among equals, as the host's
      // pool lists them first).
      stop = true;
      var best = -3.4e38;
      for (var f = 0u; f < nFin; f++) {
        if (scAll[CB + B + f] > best) { best = scAll[CB + B + f]; fromFinished = true; pick = f; }
      }
      for (var b = 0u; b < nNext; b++) {
        let sc = norm(nextS[b], p.step + 1u);
        if (sc > best) { best = sc; fromFinished = false; pick = b; }
      }
    }
    if (stop) {
      stAll[SB + 2] = select(1u, 2u, outOfSteps);
      if (fromFinished) {
        scAll[CB + 2u * B] = scAll[CB + B + pick];
        stAll[SB + 3] = stAll[SB + ${L.finishedLength}u + pick];
        for (var u = 0u; u < stAll[SB + 3]; u++) {
          stAll[SB + ${L.result}u + u] = stAll[SB + ${L.finished}u + pick * MAXNEW + u];
        }
      } else {
        scAll[CB + 2u * B] = norm(nextS[pick], p.step + 1u);
        stAll[SB + 3] = p.step + 1u;
        for (var u = 0u; u <= p.step; u++) { stAll[SB + ${L.result}u + u] = stAll[SB + dst + pick * MAXNEW + u]; }
      }
    }
    live = nNext;
  }
  workgroupBarrier();
  // Slot s continues its parent's history: positions before pos as the parent saw them, pos
  // (where the chosen token's key and value go) its own row.
  let n = workgroupUniformLoad(&live);
  for (var i = t; i < n * p.maxSeq; i += WG) {
    let s = wq * B + i / p.maxSeq;
    let u = i % p.maxSeq;
    var v = s;
    if (u < pos) { v = tableIn[(wq * B + parents[i / p.maxSeq]) * p.maxSeq + u]; }
    tableOut[s * p.maxSeq + u] = v;
  }
}`;
});

/**
 * One beam-search step (see the module doc) for each of Q questions of B beams, one workgroup per
 * question. Question q owns the logits rows [q·B, (q+1)·B) ([Q·B, vocab]; at step 0 row q of
 * [Q, vocab]), block q of `state` (u32 [Q, {@link beamStateLayout}.words]) and of `scores` (f32
 * [Q, 2·B + 1], the last the result's score), `ids` rows (u32 [Q·B]: the next tokens) and the
 * slot-table rows it reads from `tableIn` and writes to `tableOut` ([Q·B, maxSeq]) for tokens
 * placed at pos + offsets[q·B] (u32 [Q·B]). Question q stops after limits[q] ≤ maxNew steps.
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
    offsets: GpuTensor;
    limits: GpuTensor;
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
  const questions = a.limits.size;
  const slots = questions * beams;
  if (
    a.state.size !== questions * beamStateLayout(beams, maxNew).words ||
    a.scores.size !== questions * (2 * beams + 1) || a.ids.size !== slots ||
    a.offsets.size !== slots || a.logits.size < questions * vocab ||
    a.tableIn.size !== slots * maxSeq || a.tableOut.size !== slots * maxSeq || a.pos > maxSeq ||
    a.step >= maxNew
  ) {
    throw new RangeError("beamSelect: shapes");
  }
  const pipeline = await rt.pipelines.get(beamWgsl(beams, maxNew), "llama/beam-select");
  const params = BEAM_P.pack({
    vocab,
    step: a.step,
    eos: a.eos >>> 0,
    pos: a.pos,
    maxSeq,
    lengthPenalty: a.lengthPenalty,
  });
  const buffers = [a.logits, a.state, a.scores, a.ids, a.tableIn, a.tableOut, a.offsets, a.limits];
  batch.dispatch(
    pipeline,
    [batch.uniform(params), ...buffers.map((t) => t.binding)],
    [questions],
  );
}
