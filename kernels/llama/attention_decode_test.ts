/**
 * The split-KV decode attention (the GPU variant of `attentionDecode`), forced on the test adapter
 * with and without subgroup operations, against the float64 twin (`cpu/attention.ts`): rows of
 * different lengths (1 to 1,000 positions, one block and many), GQA, head sizes 5, 6, 8, 36 and 128,
 * beams sharing prefixes through a slot table, cache rows no beam reads and the output poisoned
 * with NaN. Negative controls: one accumulation of each pass mutated must fail the comparison.
 */
import assert from "node:assert/strict";
import { attentionForward as attFwdCpu } from "./cpu/attention.ts";
import { randomF32, relativeError, rng, testRuntime, TOLERANCE } from "../testing/mod.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import { attentionDecode } from "./ops.ts";
import {
  attentionDecodeGpu,
  type AttentionDecodeKernels,
  attentionDecodeKernels,
} from "./attention_decode.ts";

interface Case {
  heads: number;
  kvHeads: number;
  hs: number;
  maxSeq: number;
  /** Positions each row attends to (its own position + 1); past maxSeq: the row is skipped. */
  lengths: number[];
}

const CASES: Case[] = [
  { heads: 4, kvHeads: 2, hs: 8, maxSeq: 4, lengths: [1] },
  { heads: 3, kvHeads: 3, hs: 5, maxSeq: 9, lengths: [9, 2] },
  { heads: 6, kvHeads: 2, hs: 6, maxSeq: 70, lengths: [63, 65, 1] },
  { heads: 2, kvHeads: 1, hs: 36, maxSeq: 200, lengths: [130, 64, 200] },
  { heads: 2, kvHeads: 1, hs: 128, maxSeq: 140, lengths: [129] },
  { heads: 4, kvHeads: 2, hs: 8, maxSeq: 1000, lengths: [1000, 999, 640, 63, 1, 129, 500, 1001] },
];

/**
 * Inputs of one case on `rt` and the float64 reference. Every slot's rows are random where some
 * row reads them and NaN elsewhere; row b's positions below its shared prefix live in slot b / 2
 * (rows pair up, as beams of one parent do), the rest in its own slot.
 */
function setup(rt: GpuRuntime, c: Case, seed: number) {
  const { heads, kvHeads, hs, maxSeq, lengths } = c;
  const rows = lengths.length;
  const kw = kvHeads * hs;
  const next = rng(seed);
  const table = new Uint32Array(rows * maxSeq);
  const kc = new Float32Array(rows * maxSeq * kw).fill(NaN);
  const vc = new Float32Array(kc.length).fill(NaN);
  const k = randomF32(kc.length, seed + 1);
  const v = randomF32(kc.length, seed + 2);
  const q = randomF32(rows * heads * hs, seed + 3);
  const out = new Float64Array(rows * heads * hs).fill(NaN);
  for (let b = 0; b < rows; b++) {
    const T = lengths[b];
    if (T > maxSeq) continue;
    const shared = Math.floor(next() * T);
    const ks = new Float64Array(T * kw);
    const vs = new Float64Array(T * kw);
    for (let u = 0; u < T; u++) {
      const slot = u < shared ? Math.floor(b / 2) : b;
      table[b * maxSeq + u] = slot;
      const at = (slot * maxSeq + u) * kw;
      kc.set(k.subarray(at, at + kw), at);
      vc.set(v.subarray(at, at + kw), at);
      ks.set(k.subarray(at, at + kw), u * kw);
      vs.set(v.subarray(at, at + kw), u * kw);
    }
    // The twin attends every position; its last row is this row's query.
    const qs = new Float64Array(T * heads * hs);
    qs.set(q.subarray(b * heads * hs, (b + 1) * heads * hs), (T - 1) * heads * hs);
    const ref = attFwdCpu(qs, ks, vs, { tokens: T, heads, kvHeads, headSize: hs });
    out.set(ref.out.subarray((T - 1) * heads * hs), b * heads * hs);
  }
  // The step: every row is at pos + offsets[row], pos the shortest live row's last position.
  const pos = Math.min(...lengths.filter((T) => T <= maxSeq)) - 1;
  const g = {
    q: rt.upload(q, [rows, heads * hs]),
    kc: rt.upload(kc, [rows, maxSeq, kw]),
    vc: rt.upload(vc, [rows, maxSeq, kw]),
    table: rt.upload(table, [rows, maxSeq], "u32"),
    offsets: rt.upload(Uint32Array.from(lengths, (T) => T - 1 - pos), [rows], "u32"),
  };
  return { g, pos, ref: out, rows };
}

/** Run a case (through `attentionDecode`, or `kernels` when given); the output and reference. */
async function run(rt: GpuRuntime, c: Case, seed: number, kernels?: AttentionDecodeKernels) {
  const { g, pos, ref, rows } = setup(rt, c, seed);
  const { heads, kvHeads, hs, maxSeq } = c;
  const out = rt.upload(new Float32Array(rows * heads * hs).fill(NaN), [rows, heads * hs]);
  const b = rt.batch();
  if (kernels) {
    const dims = { rows, heads, kvHeads, headSize: hs, pos, maxSeq };
    await attentionDecodeGpu(rt, b, { out, ...g }, dims, kernels);
  } else {
    const scores = rt.empty([rows, heads, maxSeq]);
    await attentionDecode(rt, b, { out, scores, ...g, heads, kvHeads, headSize: hs, pos, maxSeq });
  }
  assert.equal(b.dispatchCount, 2, "the split and the combine");
  await b.submit();
  const got = await rt.read(out) as Float32Array;
  for (const t of [out, ...Object.values(g)]) t.release();
  return { got, ref };
}

// The live rows' error; rows past the cache must keep their NaN.
function check(got: Float32Array, ref: Float64Array, c: Case): number {
  const w = c.heads * c.hs;
  let worst = 0;
  c.lengths.forEach((T, b) => {
    const [g, r] = [got.subarray(b * w, (b + 1) * w), ref.subarray(b * w, (b + 1) * w)];
    if (T > c.maxSeq) assert.ok(g.every(Number.isNaN), `row ${b} past the cache is skipped`);
    else worst = Math.max(worst, relativeError(g, r));
  });
  return worst;
}

for (const subgroups of [true, false]) {
  Deno.test(`attention decode, split over the KV length (${subgroups ? "subgroups" : "workgroup trees"}): equals the float64 twin`, async () => {
    const rt = await testRuntime({ target: "gpu", subgroups });
    assert.equal(rt.variants.subgroups, subgroups);
    for (const [i, c] of CASES.entries()) {
      const { got, ref } = await run(rt, c, 100 + i);
      const e = check(got, ref, c);
      const what = `hs ${c.hs}, ${c.heads}/${c.kvHeads} heads, lengths ${c.lengths}`;
      assert.ok(e < TOLERANCE.f32, `${what}: relative error ${e}`);
    }
    // Fixed summation order: a rerun is bit-identical.
    const c = CASES[CASES.length - 1];
    const [a, b] = [await run(rt, c, 7), await run(rt, c, 7)];
    assert.deepEqual(a.got, b.got, "deterministic");
  });
}

Deno.test("attention decode, split over the KV length: one accumulation of either pass mutated fails the comparison", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const c = CASES[CASES.length - 1];
  const kernels = attentionDecodeKernels(rt, c.hs, c.maxSeq);
  assert.ok(kernels.block < 1000, "the long rows span several blocks");
  const mutate = (code: string, from: string, to: string) => {
    assert.ok(code.includes(from), `the generated WGSL has "${from}"`);
    return code.replace(from, to);
  };
  const mutants: [string, AttentionDecodeKernels][] = [
    ["split: the partial dots", {
      ...kernels,
      split: {
        code: mutate(kernels.split.code, "s += sp[j * SPW + i]", "s += sp[j * SPW]"),
        label: `${kernels.split.label}-mutant`,
      },
    }],
    ["combine: the blocks' outputs unweighted", {
      ...kernels,
      combine: {
        code: mutate(kernels.combine.code, "o += exp(ml[first + i].x - mm) * po[", "o += po["),
        label: `${kernels.combine.label}-mutant`,
      },
    }],
  ];
  const good = await run(rt, c, 11, kernels);
  assert.ok(check(good.got, good.ref, c) < TOLERANCE.f32, "the unmutated kernels pass");
  for (const [what, k] of mutants) {
    const { got, ref } = await run(rt, c, 11, k);
    const e = check(got, ref, c);
    assert.ok(e > 100 * TOLERANCE.f32, `${what}: relative error ${e} should fail`);
  }
});
