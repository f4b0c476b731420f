/**
 * Memory-efficient attention against the float64 reference (which keeps the whole probability
 * matrix): lengths that are not tile multiples, GQA, several sequences, padding rows, and
 * NaN-poisoned outputs.
 */
import assert from "node:assert/strict";
import { attentionBackward as attBwdCpu, attentionForward as attFwdCpu } from "./cpu/attention.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { attentionBackward, attentionForward } from "./attention.ts";

Deno.test("attention: tiled online-softmax forward and recomputing backward equal float64 (T = 1, 7, 129, 600; GQA)", async () => {
  const rt = await testRuntime();
  for (
    const [sequences, seq, heads, kvHeads, hs] of [
      [3, 1, 4, 2, 8],
      [3, 7, 4, 2, 8],
      [2, 129, 4, 1, 16],
      [1, 600, 2, 2, 6],
    ]
  ) {
    const rows = sequences * seq;
    const q = randomF32(rows * heads * hs, seq);
    const k = randomF32(rows * kvHeads * hs, seq + 1);
    const v = randomF32(rows * kvHeads * hs, seq + 2);
    const dout = randomF32(rows * heads * hs, seq + 3);
    const t = {
      q: rt.upload(q, [rows, heads * hs]),
      k: rt.upload(k, [rows, kvHeads * hs]),
      v: rt.upload(v, [rows, kvHeads * hs]),
      dout: rt.upload(dout, [rows, heads * hs]),
    };
    const out = rt.empty([rows, heads * hs]);
    const lse = rt.empty([sequences, heads, seq]);
    const [dq, dk, dv, dd] = [
      rt.empty(t.q.shape),
      rt.empty(t.k.shape),
      rt.empty(t.v.shape),
      rt.empty(lse.shape),
    ];
    for (const x of [out, lse, dq, dk, dv, dd]) rt.fill(x, NaN);
    const dims = { seq, heads, kvHeads, headSize: hs };
    const b = rt.batch();
    await attentionForward(rt, b, { out, lse, q: t.q, k: t.k, v: t.v, dims });
    await attentionBackward(rt, b, { dq, dk, dv, dd, ...t, out, lse, dims });
    await b.submit();
    const shape = { tokens: seq, heads, kvHeads, headSize: hs };
    const [outRef, dqRef, dkRef, dvRef] = [q, q, k, v].map((a) => new Float64Array(a.length));
    for (let s = 0; s < sequences; s++) {
      const part = (a: Float32Array, w: number) =>
        Float64Array.from(a.subarray(s * seq * w, (s + 1) * seq * w));
      const [qs, ks, vs] = [part(q, heads * hs), part(k, kvHeads * hs), part(v, kvHeads * hs)];
      const f = attFwdCpu(qs, ks, vs, shape);
      outRef.set(f.out, s * seq * heads * hs);
      const g = attBwdCpu(qs, ks, vs, f.att, part(dout, heads * hs), shape);
      dqRef.set(g.dq, s * seq * heads * hs);
      dkRef.set(g.dk, s * seq * kvHeads * hs);
      dvRef.set(g.dv, s * seq * kvHeads * hs);
    }
    const what = `${sequences}×${seq} tokens, ${heads}/${kvHeads} heads of ${hs}`;
    for (
      const [name, got, ref] of [
        ["out", out, outRef],
        ["dq", dq, dqRef],
        ["dk", dk, dkRef],
        ["dv", dv, dvRef],
      ] as const
    ) {
      const err = relativeError(await rt.read(got), ref);
      assert.ok(err < 10 * TOLERANCE.f32, `${what}: ${name} relative error ${err}`);
    }
    for (const x of [...Object.values(t), out, lse, dq, dk, dv, dd]) x.release();
  }
});

Deno.test("attention: right-padded rows change nothing before them (forward and backward)", async () => {
  const rt = await testRuntime();
  const [seq, valid, heads, kvHeads, hs] = [20, 13, 4, 2, 8];
  const q = randomF32(seq * heads * hs, 31);
  const k = randomF32(seq * kvHeads * hs, 32);
  const v = randomF32(seq * kvHeads * hs, 33);
  const dout = randomF32(seq * heads * hs, 34);
  // Padding rows: large finite garbage in q/k/v, no gradient flowing back from them.
  for (const [a, w] of [[q, heads * hs], [k, kvHeads * hs], [v, kvHeads * hs]] as const) {
    for (let i = valid * w; i < seq * w; i++) a[i] = 1e3 * (i % 7 - 3);
  }
  dout.fill(0, valid * heads * hs);
  const dims = { seq, heads, kvHeads, headSize: hs };
  const run = async (
    n: number,
    qq: Float32Array,
    kk: Float32Array,
    vv: Float32Array,
    g: Float32Array,
  ) => {
    const d = { ...dims, seq: n };
    const t = {
      q: rt.upload(qq.subarray(0, n * heads * hs), [n, heads * hs]),
      k: rt.upload(kk.subarray(0, n * kvHeads * hs), [n, kvHeads * hs]),
      v: rt.upload(vv.subarray(0, n * kvHeads * hs), [n, kvHeads * hs]),
      dout: rt.upload(g.subarray(0, n * heads * hs), [n, heads * hs]),
    };
    const out = rt.empty(t.q.shape);
    const lse = rt.empty([heads, n]);
    const [dq, dk, dv, dd] = [
      rt.empty(t.q.shape),
      rt.empty(t.k.shape),
      rt.empty(t.v.shape),
      rt.empty([heads, n]),
    ];
    const b = rt.batch();
    await attentionForward(rt, b, { out, lse, q: t.q, k: t.k, v: t.v, dims: d });
    await attentionBackward(rt, b, { dq, dk, dv, dd, ...t, out, lse, dims: d });
    await b.submit();
    return {
      out: (await rt.read(out) as Float32Array).subarray(0, valid * heads * hs),
      dq: (await rt.read(dq) as Float32Array).subarray(0, valid * heads * hs),
      dk: (await rt.read(dk) as Float32Array).subarray(0, valid * kvHeads * hs),
      dv: (await rt.read(dv) as Float32Array).subarray(0, valid * kvHeads * hs),
    };
  };
  const padded = await run(seq, q, k, v, dout);
  const alone = await run(valid, q, k, v, dout);
  for (const name of ["out", "dq", "dk", "dv"] as const) {
    assert.ok(relativeError(padded[name], alone[name]) < TOLERANCE.f32, name);
  }
});
