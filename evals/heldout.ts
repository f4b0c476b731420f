/**
 * Held-out loss: the mean negative log-likelihood per target token of examples the model was not
 * trained on — for instruction records, the response tokens after the prompt. Unlike accuracy it
 * moves at every scale: a 260K-parameter model that answers no question right still learns the
 * answer format, and the loss shows how much.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import type { CpuAdapters, CpuLlama } from "../models/llama/cpu/model.ts";
import type { GpuLlama } from "../models/llama/gpu/model.ts";
import type { Example } from "../models/llama/train.ts";

/** Mean NLL per target token and what it rests on. */
export interface HeldOutLoss {
  /** Σ −log p(target) / tokens (nats). */
  loss: number;
  /** Target tokens scored. */
  tokens: number;
  /** Examples scored. */
  examples: number;
}

function checkExamples(examples: Example[], seqLen: number): void {
  examples.forEach((e, i) => {
    if (e.ids.length !== e.targets.length || e.ids.length === 0 || e.ids.length > seqLen) {
      throw new RangeError(
        `held-out example ${i}: ${e.ids.length} ids, ${e.targets.length} targets (max ${seqLen})`,
      );
    }
  });
}

/**
 * Held-out loss on the GPU: examples in groups of `batch`, each group padded to its longest
 * example (padding and −1 targets masked); the logits are never materialised.
 */
export async function heldOutLoss(
  rt: GpuRuntime,
  model: GpuLlama,
  examples: Example[],
  batch = 8,
): Promise<HeldOutLoss> {
  checkExamples(examples, model.config.seqLen);
  let sum = 0;
  let tokens = 0;
  for (let g = 0; g < examples.length; g += batch) {
    const group = examples.slice(g, g + batch);
    let seq = 0;
    for (const e of group) seq = Math.max(seq, e.ids.length);
    const ids = new Uint32Array(group.length * seq);
    const targets = new Uint32Array(group.length * seq).fill(0xffffffff); // −1 as i32
    group.forEach((e, b) => {
      ids.set(e.ids, b * seq);
      e.targets.forEach((t, i) => {
        if (t >= 0) {
          targets[b * seq + i] = t;
          tokens++;
        }
      });
    });
    const gIds = rt.upload(ids, [ids.length]);
    const gTargets = rt.upload(targets, [targets.length]);
    const b = rt.batch();
    const loss = (await model.forward(b, gIds, seq, { logits: { targets: gTargets } }))!;
    await b.submit();
    for (const v of await rt.read(loss) as Float32Array) sum += v; // masked rows hold 0
    for (const t of [gIds, gTargets, loss]) t.release();
  }
  return { loss: tokens ? sum / tokens : NaN, tokens, examples: examples.length };
}

/** The same on the float64 reference model (one sequence at a time). */
export function cpuHeldOutLoss(
  model: CpuLlama,
  examples: Example[],
  adapters?: CpuAdapters,
): HeldOutLoss {
  checkExamples(examples, model.config.seqLen);
  let sum = 0;
  let tokens = 0;
  for (const e of examples) {
    const rows = e.targets.flatMap((t, i) => (t >= 0 ? [i] : []));
    const { logits } = model.forward(e.ids, adapters, rows);
    const vocab = model.config.vocab;
    rows.forEach((r, k) => {
      const row = logits.subarray(k * vocab, (k + 1) * vocab);
      let mx = -Infinity;
      for (const v of row) mx = Math.max(mx, v);
      let s = 0;
      for (const v of row) s += Math.exp(v - mx);
      sum += mx + Math.log(s) - row[e.targets[r]];
      tokens++;
    });
  }
  return { loss: tokens ? sum / tokens : NaN, tokens, examples: examples.length };
}
