/**
 * Generation: greedy decoding and beam search (the commonsense protocol uses 4 beams, 32 new
 * tokens), written once over a {@link Scorer} so the GPU (KV cache) and the float64 CPU model run
 * the very same search and can be compared token for token.
 *
 * Beam search follows Hugging Face's `num_beams` search without sampling: each step ranks the
 * top 2·B continuations of all live beams by summed log-probability; one ending in EOS becomes a
 * finished hypothesis scored sum / (generated length)^lengthPenalty, the others fill the next B
 * beams; the search stops when B hypotheses are finished and none of the live beams can beat the
 * worst of them (HF's `early_stopping=False` rule), or at `maxNew` tokens.
 */
import { beamSelect, beamStateLayout, greedySelect } from "../../kernels/llama/select.ts";
import type { Batch } from "../../kernels/runtime/batch.ts";
import type { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import type { GpuTensor } from "../../kernels/runtime/tensor.ts";
import type { CpuAdapters, CpuLlama } from "./cpu/model.ts";
import type { GpuLlama, KvCache } from "./gpu/model.ts";

/** Next-token logits for a set of slots (beams). */
export interface Scorer {
  /** Logits [vocab] after the prompt; every slot starts from it. */
  start(prompt: number[], slots: number, maxNew: number): Promise<ArrayLike<number>>;
  /**
   * Slot s continues slot parents[s] with tokens[s] at position `pos`; returns logits
   * [slots·vocab] of the next position.
   */
  step(tokens: number[], parents: number[], pos: number): Promise<ArrayLike<number>>;
  /** Free resources. */
  finish(): void;
}

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** New tokens at most. */
  maxNew: number;
  /** Beams (1 = greedy). */
  beams?: number;
  /** End-of-sequence id (llama2.c: 2). */
  eos?: number;
  /** Exponent of the length normalisation (HF default 1). */
  lengthPenalty?: number;
}

function logSoftmax(row: ArrayLike<number>, offset: number, vocab: number): Float64Array {
  let mx = -Infinity;
  for (let j = 0; j < vocab; j++) mx = Math.max(mx, row[offset + j]);
  let sum = 0;
  for (let j = 0; j < vocab; j++) sum += Math.exp(row[offset + j] - mx);
  const lse = mx + Math.log(sum);
  return Float64Array.from({ length: vocab }, (_, j) => row[offset + j] - lse);
}

/** A generation: the new ids (without the prompt and without EOS) and, for beams, its score. */
export interface Generation {
  /** Generated ids. */
  ids: number[];
  /** Beam search: summed log-probability / length^lengthPenalty of the result (greedy: NaN). */
  score: number;
}

/** Generated ids (without the prompt and without EOS). */
export async function generate(
  scorer: Scorer,
  prompt: number[],
  vocab: number,
  options: GenerateOptions,
): Promise<number[]> {
  return (await search(scorer, prompt, vocab, options)).ids;
}

/** {@link generate} with the result's score. */
export async function search(
  scorer: Scorer,
  prompt: number[],
  vocab: number,
  options: GenerateOptions,
): Promise<Generation> {
  const beams = options.beams ?? 1;
  const eos = options.eos ?? 2;
  const lp = options.lengthPenalty ?? 1;
  const { maxNew } = options;
  if (!(beams >= 1 && Number.isInteger(beams))) throw new RangeError(`generate: beams=${beams}`);
  if (prompt.length === 0) throw new RangeError("generate: empty prompt");
  try {
    let logits = await scorer.start(prompt, beams, maxNew);
    if (beams === 1) {
      const out: number[] = [];
      for (let i = 0; i < maxNew; i++) {
        let best = 0;
        for (let j = 1; j < vocab; j++) if (logits[j] > logits[best]) best = j;
        if (best === eos) break;
        out.push(best);
        if (i + 1 < maxNew) logits = await scorer.step([best], [0], prompt.length + i);
      }
      return { ids: out, score: NaN };
    }
    type Beam = { tokens: number[]; score: number };
    const norm = (score: number, length: number) => score / Math.max(1, length) ** lp;
    let live: Beam[] = [{ tokens: [], score: 0 }]; // one live beam at first: no duplicate starts
    const finished: Beam[] = [];
    for (let step = 0; step < maxNew; step++) {
      const cands: { parent: number; token: number; score: number }[] = [];
      live.forEach((b, i) => {
        const lps = logSoftmax(logits, step === 0 ? 0 : i * vocab, vocab);
        for (let t = 0; t < vocab; t++) {
          cands.push({ parent: i, token: t, score: b.score + lps[t] });
        }
      });
      cands.sort((a, b) => b.score - a.score);
      const next: (Beam & { parent: number })[] = [];
      for (const c of cands.slice(0, 2 * beams)) {
        const tokens = [...live[c.parent].tokens];
        if (c.token === eos) {
          finished.push({ tokens, score: norm(c.score, tokens.length) });
        } else next.push({ tokens: [...tokens, c.token], score: c.score, parent: c.parent });
        if (next.length === beams) break;
      }
      finished.sort((a, b) => b.score - a.score);
      finished.splice(beams);
      const bestLive = Math.max(...next.map((b) => norm(b.score, b.tokens.length)));
      if (finished.length === beams && finished[beams - 1].score >= bestLive) {
        return { ids: finished[0].tokens, score: finished[0].score };
      }
      live = next;
      if (step + 1 < maxNew) {
        logits = await scorer.step(
          next.map((b) => b.tokens.at(-1)!),
          next.map((b) => b.parent),
          prompt.length + step,
        );
      }
    }
    const pool = [
      ...finished,
      ...live.map((b) => ({ tokens: b.tokens, score: norm(b.score, b.tokens.length) })),
    ];
    pool.sort((a, b) => b.score - a.score);
    return { ids: pool[0].tokens, score: pool[0].score };
  } finally {
    scorer.finish();
  }
}

/** Scores with the GPU model and a KV cache (one prefill, then one decode step per token). */
export function gpuScorer(rt: GpuRuntime, model: GpuLlama): Scorer {
  let cache: KvCache | null = null;
  return {
    async start(prompt, slots, maxNew) {
      cache = model.createCache(slots, Math.min(model.config.seqLen, prompt.length + maxNew));
      const ids = rt.upload(Uint32Array.from(prompt), [prompt.length]);
      const b = rt.batch();
      const logits = (await model.forward(b, ids, prompt.length, {
        cache: cache!,
        logits: [prompt.length - 1],
      }))!;
      await b.submit();
      const last = await rt.read(logits) as Float32Array;
      ids.release();
      logits.release();
      return last;
    },
    async step(tokens, parents, pos) {
      if (!cache) throw new Error("gpuScorer: start first");
      if (pos >= cache.maxSeq) {
        throw new RangeError(`generation reached the model's ${cache.maxSeq} positions`);
      }
      const ids = rt.upload(Uint32Array.from(tokens), [tokens.length]);
      const b = rt.batch();
      cache.reorder(b, parents, pos);
      const logits = await model.decode(b, ids, pos, cache);
      await b.submit();
      const out = await rt.read(logits) as Float32Array;
      ids.release();
      logits.release();
      return out;
    },
    finish() {
      cache?.release();
      cache = null;
    },
  };
}

/** Options of {@link generateOnGpu} and {@link searchManyOnGpu}. */
export interface GpuGenerateOptions extends GenerateOptions {
  /**
   * Decode steps recorded per submit (default 16): the host checks for the end (EOS everywhere,
   * or beam search's stop rule) only between submits; steps recorded past the end change nothing.
   */
  stepsPerSubmit?: number;
  /**
   * Cap each prompt's new tokens to the context left after it (seqLen − prompt length) instead
   * of failing when generation reaches the model's last position (default false).
   */
  fitContext?: boolean;
}

/**
 * {@link generate} with the KV-cache GPU model and the token selection on the GPU as well
 * (`kernels/llama/select.ts`): the chosen ids feed the next step's embedding without a host round
 * trip, `stepsPerSubmit` steps go into one submit, and only a few status words come back between
 * submits. Beams share their common prefix through the cache's slot table instead of copying rows.
 * Returns the same ids as {@link generate} over {@link gpuScorer}.
 */
export async function generateOnGpu(
  rt: GpuRuntime,
  model: GpuLlama,
  prompt: number[],
  options: GpuGenerateOptions,
): Promise<number[]> {
  return (await searchOnGpu(rt, model, prompt, options)).ids;
}

/** {@link generateOnGpu} with the result's score (beams; f32 on the GPU). */
export async function searchOnGpu(
  rt: GpuRuntime,
  model: GpuLlama,
  prompt: number[],
  options: GpuGenerateOptions,
): Promise<Generation> {
  return (await searchManyOnGpu(rt, model, [prompt], options))[0];
}

/**
 * {@link searchOnGpu} for several prompts in one batch: prompt q's beams are rows [q·B, (q+1)·B)
 * of every decode step, each row at its own position (prompts of different lengths share the
 * batch through per-slot position offsets), one selection workgroup per prompt. Each result
 * equals that prompt's {@link searchOnGpu}; the batch ends when every prompt has.
 */
export async function searchManyOnGpu(
  rt: GpuRuntime,
  model: GpuLlama,
  prompts: number[][],
  options: GpuGenerateOptions,
): Promise<Generation[]> {
  const beams = options.beams ?? 1;
  const eos = options.eos ?? 2;
  const lengthPenalty = options.lengthPenalty ?? 1;
  const perSubmit = options.stepsPerSubmit ?? 16;
  const { maxNew } = options;
  const { vocab, seqLen } = model.config;
  if (!(beams >= 1 && Number.isInteger(beams))) throw new RangeError(`generate: beams=${beams}`);
  if (!(perSubmit >= 1 && Number.isInteger(perSubmit))) {
    throw new RangeError(`generate: stepsPerSubmit=${perSubmit}`);
  }
  if (!(maxNew >= 0 && Number.isInteger(maxNew))) {
    throw new RangeError(`generate: maxNew=${maxNew}`);
  }
  prompts.forEach((p, q) => {
    if (p.length === 0) throw new RangeError(`generate: prompt ${q} is empty`);
    if (p.length > seqLen) {
      throw new RangeError(`generate: prompt ${q} of ${p.length} tokens > seqLen ${seqLen}`);
    }
    const bad = p.findIndex((id) => !(Number.isInteger(id) && id >= 0 && id < vocab));
    if (bad >= 0) {
      throw new RangeError(`generate: prompt ${q} token ${bad} = ${p[bad]} outside the vocabulary`);
    }
  });
  const n = prompts.length;
  if (n === 0) return [];
  // Each prompt's step budget: maxNew, or what its context leaves.
  const wanted = prompts.map((p) =>
    options.fitContext ? Math.min(maxNew, seqLen - p.length) : maxNew
  );
  const filled = maxNew > 0 ? wanted.findIndex((w) => w < 1) : -1;
  if (filled >= 0) {
    throw new RangeError(
      `generate: prompt ${filled} of ${
        prompts[filled].length
      } tokens fills the model's ${seqLen} positions`,
    );
  }
  if (maxNew === 0) return prompts.map(() => ({ ids: [], score: NaN }));
  // Loops, not Math.max(...): one element per prompt, and there may be many.
  let longest = 0;
  prompts.forEach((p, q) => longest = Math.max(longest, p.length + wanted[q]));
  const maxSeq = Math.min(seqLen, longest);
  // Selections a prompt can make before its next token has no cache position: past it, the
  // prompt stops as if out of steps, and the host reports the position limit.
  const limits = prompts.map((p, q) => Math.min(wanted[q], maxSeq - p.length + 1));
  let steps = 0;
  for (const l of limits) steps = Math.max(steps, l);
  let stride = 0;
  for (const w of wanted) stride = Math.max(stride, w);
  const slots = n * beams;
  const cache = model.createCache(slots, maxSeq);
  cache.setOffsets(Array.from({ length: slots }, (_, s) => prompts[Math.floor(s / beams)].length));
  const owned: GpuTensor[] = [];
  const upload = (words: Uint32Array) => {
    const t = rt.upload(words, [words.length], "u32");
    owned.push(t);
    return t;
  };
  const zeros = (count: number) => upload(new Uint32Array(count));
  const ids = zeros(slots);
  const limitsGpu = upload(Uint32Array.from(limits));
  const logits = rt.empty([slots, vocab]);
  owned.push(logits);
  const layout = beamStateLayout(beams, stride);
  // Greedy: ids history [n, stride] and status (0 running, else 1 + length). Beams: state, scores.
  const history = beams === 1 ? zeros(n * stride) : null;
  const status = beams === 1 ? zeros(n) : null;
  const state = beams === 1 ? null : zeros(n * layout.words);
  const scores = beams === 1 ? null : rt.empty([n * (2 * beams + 1)]);
  if (scores) owned.push(scores);
  const select = async (batch: Batch, from: GpuTensor, step: number) => {
    if (beams === 1) {
      await greedySelect(rt, batch, {
        logits: from,
        ids,
        history: history!,
        status: status!,
        limits: limitsGpu,
        vocab,
        step,
        maxNew: stride,
        eos,
      });
      return;
    }
    await beamSelect(rt, batch, {
      logits: from,
      state: state!,
      scores: scores!,
      ids,
      tableIn: cache.table,
      tableOut: cache.tableNext,
      offsets: cache.offsets,
      limits: limitsGpu,
      beams,
      vocab,
      maxNew: stride,
      step,
      pos: step,
      maxSeq,
      eos,
      lengthPenalty,
    });
    cache.swapTables();
  };
  // Done flags: greedy status [n]; beams word 2 of each prompt's state block.
  const doneOf = (words: Uint32Array) =>
    prompts.map((_, q) => beams === 1 ? words[q] : words[q * layout.words + 2]);
  const allDone = (buffer: ArrayBuffer) => doneOf(new Uint32Array(buffer)).every((d) => d !== 0);
  // Each batch ends with copies of the flags and of what the results are read from (greedy: the
  // ids history; beams: the state, which holds the flags, and the scores), all mapped with the
  // batch's completion: the last batch's copies are the results, with no read of their own.
  const snapshots = (batch: Batch) => {
    const taken = beams === 1
      ? [batch.snapshot(status!), batch.snapshot(history!)]
      : [batch.snapshot(state!), batch.snapshot(scores!)];
    return { flags: taken[0], results: taken };
  };
  let step = 0;
  // Record decode steps from `step` on, at most perSubmit of them: step s decodes the token
  // chosen at s − 1, at position length + s − 1 of each prompt.
  const recordSteps = async (batch: Batch) => {
    for (let k = 0; k < perSubmit && step < steps; k++) {
      await model.decode(batch, ids, step - 1, cache, logits);
      await select(batch, logits, step++);
    }
  };
  try {
    // The prefill: prompts right-padded to the longest (causal attention never looks right),
    // the logits of each prompt's last token, the cache filled for each prompt's beams.
    let width = 0;
    for (const p of prompts) width = Math.max(width, p.length);
    const padded = new Uint32Array(n * width);
    prompts.forEach((p, q) => padded.set(p, q * width));
    const promptIds = rt.upload(padded, [padded.length], "u32");
    let batch = rt.batch();
    batch.releaseAfter(promptIds);
    const first = (await model.forward(batch, promptIds, width, {
      cache,
      logits: prompts.map((p, q) => q * width + p.length - 1),
    }))!;
    batch.releaseAfter(first);
    await select(batch, first, step++);
    await recordSteps(batch);
    // Pipelined: while the GPU runs one batch, the next is recorded and queued behind it; the done
    // flags of the first are then read (a snapshot, so the read waits for that batch only).
    let snapshot = snapshots(batch);
    let running = batch.submit();
    for (;;) {
      let next: { snapshot: typeof snapshot; running: Promise<void> } | null = null;
      if (step < steps) {
        batch = rt.batch();
        await recordSteps(batch);
        next = { snapshot: snapshots(batch), running: batch.submit() };
      }
      await running;
      const done = allDone(await snapshot.flags.read());
      if (done || !next) {
        if (next) {
          await next.running;
          snapshot = next.snapshot;
        }
        break;
      }
      ({ snapshot, running } = next);
    }
    const [statusOrState, historyOrScores] = await Promise.all(
      snapshot.results.map((r) => r.read()),
    );
    const done = doneOf(new Uint32Array(statusOrState));
    // A prompt stopped for want of positions (not by EOS or the stop rule) is an error.
    prompts.forEach((_, q) => {
      const outOfPositions = limits[q] < wanted[q] &&
        (beams === 1 ? done[q] === 1 + limits[q] : done[q] === 2);
      if (done[q] === 0 || outOfPositions) {
        throw new RangeError(
          `generation reached the model's ${maxSeq} positions` + (n > 1 ? ` (prompt ${q})` : ""),
        );
      }
    });
    if (beams === 1) {
      const all = new Uint32Array(historyOrScores);
      return prompts.map((_, q) => ({
        ids: Array.from(all.subarray(q * stride, q * stride + done[q] - 1)),
        score: NaN,
      }));
    }
    const words = new Uint32Array(statusOrState);
    const sc = new Float32Array(historyOrScores);
    return prompts.map((_, q) => {
      const at = q * layout.words;
      return {
        ids: Array.from(words.subarray(at + layout.result, at + layout.result + words[at + 3])),
        score: sc[q * (2 * beams + 1) + 2 * beams],
      };
    });
  } finally {
    cache.release();
    for (const t of owned) t.release();
  }
}

/** Scores with the float64 CPU model by full recomputation (the reference). */
export function cpuScorer(model: CpuLlama, adapters?: CpuAdapters): Scorer {
  let seqs: number[][] = [];
  const vocab = model.config.vocab;
  const last = (ids: number[]) => model.forward(ids, adapters, [ids.length - 1]).logits;
  return {
    start(prompt, slots) {
      seqs = Array.from({ length: slots }, () => [...prompt]);
      return Promise.resolve(last(prompt));
    },
    step(tokens, parents) {
      seqs = parents.map((p, s) => [...seqs[p], tokens[s]]);
      const out = new Float64Array(seqs.length * vocab);
      seqs.forEach((ids, s) => out.set(last(ids), s * vocab));
      return Promise.resolve(out);
    },
    finish() {
      seqs = [];
    },
  };
}

/**
 * Logits after chosen positions of several sequences in one forward: sequences are right-padded
 * to the longest (causal attention never looks right, so padding changes nothing) and the
 * classifier runs on the requested rows only. Returns, for sequence i, one [vocab] row per entry
 * of positions[i].
 */
export async function logitsAt(
  rt: GpuRuntime,
  model: GpuLlama,
  seqs: number[][],
  positions: number[][],
): Promise<Float32Array[][]> {
  if (seqs.length === 0) return [];
  if (seqs.some((p) => p.length === 0)) throw new RangeError("logitsAt: empty sequence");
  let seq = 0;
  for (const p of seqs) seq = Math.max(seq, p.length);
  const vocab = model.config.vocab;
  const ids = new Uint32Array(seqs.length * seq);
  seqs.forEach((p, i) => ids.set(p, i * seq));
  const rows: number[] = [];
  positions.forEach((ps, i) =>
    ps.forEach((t) => {
      if (!Number.isInteger(t) || t < 0 || t >= seqs[i].length) {
        throw new RangeError(`logitsAt: position ${t} of a ${seqs[i].length}-token sequence`);
      }
      rows.push(i * seq + t);
    })
  );
  const gpuIds = rt.upload(ids, [ids.length]);
  const b = rt.batch();
  const logits = (await model.forward(b, gpuIds, seq, { logits: rows }))!;
  await b.submit();
  const all = await rt.read(logits) as Float32Array;
  gpuIds.release();
  logits.release();
  let k = 0;
  return positions.map((ps) => ps.map(() => all.slice(k * vocab, ++k * vocab)));
}

/** {@link logitsAt} on the float64 reference model (full recomputation per sequence). */
export function cpuLogitsAt(
  model: CpuLlama,
  adapters?: CpuAdapters,
): (seqs: number[][], positions: number[][]) => Promise<Float64Array[][]> {
  const vocab = model.config.vocab;
  return (seqs, positions) =>
    Promise.resolve(seqs.map((ids, i) => {
      const { logits } = model.forward(ids, adapters, positions[i]);
      return positions[i].map((_, k) => logits.slice(k * vocab, (k + 1) * vocab));
    }));
}

/** Next-token logits after each prompt, batched (see {@link logitsAt}). */
export async function nextTokenLogits(
  rt: GpuRuntime,
  model: GpuLlama,
  prompts: number[][],
): Promise<Float32Array[]> {
  const rows = await logitsAt(rt, model, prompts, prompts.map((p) => [p.length - 1]));
  return rows.map((r) => r[0]);
}
