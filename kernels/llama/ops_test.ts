/**
 * Each LLaMA layer kernel on fresh random inputs against its float64 twin in models/llama/cpu/
 * (f32 tolerance: TOLERANCE.f32 relative). Shapes: 3 sequences of 7 tokens, GQA 4 heads / 2 KV.
 */
import assert from "node:assert/strict";
import { attentionForward as attFwdCpu } from "./cpu/attention.ts";
import { rmsnormBackward as rmsBwdCpu, rmsnormForward as rmsFwdCpu } from "./cpu/rmsnorm.ts";
import { ropeApply } from "./cpu/rope.ts";
import { swigluBackward as swiBwdCpu, swigluForward as swiFwdCpu } from "./cpu/swiglu.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import {
  attentionDecode,
  rmsnormBackward,
  rmsnormForward,
  rope,
  ropeDecode,
  ropeTables,
  swigluBackward,
  swigluForward,
} from "./ops.ts";

const close = (out: ArrayLike<number>, ref: ArrayLike<number>, what: string) => {
  const e = relativeError(out, ref);
  assert.ok(e < TOLERANCE.f32, `${what}: relative error ${e}`);
};
const f64 = (a: Float32Array) => Float64Array.from(a);

Deno.test("llama ops: RMSNorm, RoPE and SwiGLU forward/backward", async () => {
  const rt = await testRuntime();
  const [rows, dim, seq, heads, hs] = [21, 24, 7, 3, 8];
  const x = randomF32(rows * dim, 1);
  const w = randomF32(dim, 2).map((v) => 1 + v / 2);
  const dy = randomF32(rows * dim, 3);
  const g = {
    x: rt.upload(x, [rows, dim]),
    w: rt.upload(w, [dim]),
    dy: rt.upload(dy, [rows, dim]),
  };
  const y = rt.empty([rows, dim]);
  const inv = rt.empty([rows]);
  const dx = rt.upload(randomF32(rows * dim, 5), [rows, dim]);
  const r = rt.upload(x, [rows, dim]);
  const rHalf = rt.upload(x, [rows, dim]);
  const tables = ropeTables(seq, hs, 10000);
  const [cos, sin] = [
    rt.upload(tables.cos, [tables.cos.length]),
    rt.upload(tables.sin, [tables.sin.length]),
  ];
  const a = randomF32(rows * dim, 6).map((v) => 3 * v);
  const bb = randomF32(rows * dim, 7);
  const h = rt.empty([rows, dim]);
  const da = rt.empty([rows, dim]);
  const db = rt.empty([rows, dim]);
  const b = rt.batch();
  await rmsnormForward(rt, b, { y, inv, x: g.x, w: g.w, eps: 1e-5 });
  await rmsnormBackward(rt, b, { dx, x: g.x, w: g.w, inv, dy: g.dy, accumulate: false });
  await rope(rt, b, { x: r, cos, sin, heads, headSize: hs, seq });
  await rope(rt, b, { x: rHalf, cos, sin, heads, headSize: hs, seq, layout: "half" });
  const ga = rt.upload(a, [rows, dim]);
  const gb = rt.upload(bb, [rows, dim]);
  await swigluForward(rt, b, { h, a: ga, b: gb });
  await swigluBackward(rt, b, { da, db, a: ga, b: gb, dh: g.dy });
  await b.submit();

  const fwd = rmsFwdCpu(f64(x), w, rows, dim, 1e-5);
  close(await rt.read(y), fwd.y, "rmsnorm");
  close(await rt.read(inv), fwd.inv, "rmsnorm 1/rms");
  close(
    await rt.read(dx),
    rmsBwdCpu(f64(x), w, fwd.inv, f64(dy), rows, dim).dx,
    "rmsnorm backward",
  );
  const rotated = f64(x);
  ropeApply(rotated, Array.from({ length: rows }, (_, i) => i % seq), heads, hs, 10000);
  close(await rt.read(r), rotated, "rope");
  const rotatedHalf = f64(x);
  const positions = Array.from({ length: rows }, (_, i) => i % seq);
  ropeApply(rotatedHalf, positions, heads, hs, 10000, false, "half");
  close(await rt.read(rHalf), rotatedHalf, "rope, rotate_half layout");
  // The layouts are one rotation in two bases: rotate_half on rows permuted head by head equals
  // the interleaved rotation permuted the same way; and they are not the same map (control).
  const perm = (v: Float64Array) => {
    const out = new Float64Array(v.length);
    for (let t = 0; t < rows; t++) {
      for (let hd = 0; hd < heads; hd++) {
        for (let j = 0; j < hs / 2; j++) {
          for (let a = 0; a < 2; a++) {
            out[t * dim + hd * hs + a * (hs / 2) + j] = v[t * dim + hd * hs + 2 * j + a];
          }
        }
      }
    }
    return out;
  };
  const viaHalf = perm(f64(x));
  ropeApply(viaHalf, positions, heads, hs, 10000, false, "half");
  close(viaHalf, perm(rotated), "rotate_half of permuted rows = permuted interleaved rotation");
  assert.ok(rotatedHalf.some((v, i) => Math.abs(v - rotated[i]) > 1e-3), "layouts differ");
  close(await rt.read(h), swiFwdCpu(f64(a), f64(bb)), "swiglu");
  const sb = swiBwdCpu(f64(a), f64(bb), f64(dy));
  close(await rt.read(da), sb.da, "swiglu da");
  close(await rt.read(db), sb.db, "swiglu db");
});

for (const target of ["cpu-adapter", "gpu"] as const) {
  Deno.test(`llama ops (${target} variants): one decoding step of attention over a KV cache with a slot table and per-beam positions; RoPE at an offset`, async () => {
    const rt = await testRuntime({ target });
    const [heads, kvHeads, hs, maxSeq, pos] = [4, 2, 8, 10, 5];
    // Beam b decodes position pos + offsets[b]; the last is past the cache and must be skipped.
    const offsets = [0, 3, maxSeq - pos];
    const beams = offsets.length;
    const outRef = new Float64Array(beams * heads * hs).fill(NaN);
    const qs = new Float32Array(beams * heads * hs);
    const kc = new Float32Array(beams * maxSeq * kvHeads * hs).fill(NaN); // unwritten rows stay NaN
    const vc = new Float32Array(kc.length).fill(NaN);
    // Position u of beam b lives in slot (b + u) % beams: a table that is not the identity.
    const table = Uint32Array.from(
      { length: beams * maxSeq },
      (_, i) => (Math.floor(i / maxSeq) + (i % maxSeq)) % beams,
    );
    const w = kvHeads * hs;
    for (let b = 0; b < beams; b++) {
      const at = pos + offsets[b];
      if (at >= maxSeq) continue;
      const T = at + 1;
      const q = randomF32(T * heads * hs, 10 * b + 1);
      const k = randomF32(T * kvHeads * hs, 10 * b + 2);
      const v = randomF32(T * kvHeads * hs, 10 * b + 3);
      const ref = attFwdCpu(f64(q), f64(k), f64(v), { tokens: T, heads, kvHeads, headSize: hs });
      outRef.set(ref.out.subarray(at * heads * hs), b * heads * hs);
      qs.set(q.subarray(at * heads * hs), b * heads * hs);
      for (let u = 0; u < T; u++) {
        const row = (table[b * maxSeq + u] * maxSeq + u) * w;
        kc.set(k.subarray(u * w, (u + 1) * w), row);
        vc.set(v.subarray(u * w, (u + 1) * w), row);
      }
    }
    const out = rt.upload(new Float32Array(beams * heads * hs).fill(NaN), [beams, heads * hs]);
    const x = randomF32(2 * heads * hs, 9);
    const rx = rt.upload(x, [2, heads * hs]);
    const tables = ropeTables(16, hs, 10000);
    const b = rt.batch();
    await attentionDecode(rt, b, {
      out,
      scores: rt.empty([beams, heads, maxSeq]),
      q: rt.upload(qs, [beams, heads * hs]),
      kc: rt.upload(kc, [beams, maxSeq, kvHeads * hs]),
      vc: rt.upload(vc, [beams, maxSeq, kvHeads * hs]),
      table: rt.upload(table, [beams, maxSeq], "u32"),
      heads,
      kvHeads,
      headSize: hs,
      pos,
      maxSeq,
      offsets: rt.upload(Uint32Array.from(offsets), [beams], "u32"),
    });
    const [cos, sin] = [
      rt.upload(tables.cos, [tables.cos.length]),
      rt.upload(tables.sin, [tables.sin.length]),
    ];
    await rope(rt, b, { x: rx, cos, sin, heads, headSize: hs, seq: 1, offset: 7 });
    await b.submit();
    const got = await rt.read(out) as Float32Array;
    const live = (beams - 1) * heads * hs;
    close(got.subarray(0, live), outRef.subarray(0, live), "attention decode");
    assert.ok(got.subarray(live).every(Number.isNaN), "the beam past the cache is skipped");
    const rotated = f64(x);
    ropeApply(rotated, [7, 7], heads, hs, 10000);
    close(await rt.read(rx), rotated, "rope at offset 7");
  });
}

Deno.test("llama ops: RoPE of q and k with the cache write in one dispatch equals rope + copies", async () => {
  const rt = await testRuntime();
  const [heads, kvHeads, hs, maxSeq, pos] = [4, 2, 6, 9, 5];
  // Row r is at position pos + offsets[r]; the last is past the cache and must be left alone.
  const offsets = [0, 2, maxSeq - pos];
  const rows = offsets.length;
  const kw = kvHeads * hs;
  const tables = ropeTables(maxSeq, hs, 10000);
  const [cos, sin] = [
    rt.upload(tables.cos, [tables.cos.length]),
    rt.upload(tables.sin, [tables.sin.length]),
  ];
  for (const layout of ["interleaved", "half"] as const) {
    const q = randomF32(rows * heads * hs, 31);
    const k = randomF32(rows * kw, 32);
    const v = randomF32(rows * kw, 33);
    const cache = () =>
      rt.upload(new Float32Array(rows * maxSeq * kw).fill(NaN), [rows, maxSeq, kw]);
    const g = {
      q: rt.upload(q, [rows, heads * hs]),
      k: rt.upload(k, [rows, kw]),
      v: rt.upload(v, [rows, kw]),
    };
    const [kc, vc] = [cache(), cache()];
    const b = rt.batch();
    await ropeDecode(rt, b, {
      ...g,
      kc,
      vc,
      cos,
      sin,
      heads,
      kvHeads,
      headSize: hs,
      pos,
      maxSeq,
      offsets: rt.upload(Uint32Array.from(offsets), [rows], "u32"),
      layout,
    });
    // The reference: rope of each row at its own offset on copies, then the rows placed by hand.
    const qw = heads * hs;
    const rq = [...Array(rows - 1).keys()].map((r) =>
      rt.upload(q.slice(r * qw, (r + 1) * qw), [qw])
    );
    const rk = [...Array(rows - 1).keys()].map((r) =>
      rt.upload(k.slice(r * kw, (r + 1) * kw), [kw])
    );
    for (let row = 0; row < rows - 1; row++) {
      const r = { cos, sin, headSize: hs, seq: 1, offset: pos + offsets[row], layout };
      await rope(rt, b, { x: rq[row], heads, ...r });
      await rope(rt, b, { x: rk[row], heads: kvHeads, ...r });
    }
    await b.submit();
    const qRef = new Float32Array(q);
    const kRef = new Float32Array(k);
    for (let row = 0; row < rows - 1; row++) {
      qRef.set(await rt.read(rq[row]) as Float32Array, row * qw);
      kRef.set(await rt.read(rk[row]) as Float32Array, row * kw);
    }
    close(
      await rt.read(g.q) as Float32Array,
      f64(qRef),
      `${layout}: q (the skipped row unchanged)`,
    );
    assert.deepEqual(await rt.read(g.k), k, "k itself is left alone");
    const [kGot, vGot] = await Promise.all(
      [kc, vc].map(async (t) => await rt.read(t) as Float32Array),
    );
    for (let row = 0; row < rows; row++) {
      for (let u = 0; u < maxSeq; u++) {
        const at = (row * maxSeq + u) * kw;
        if (u !== pos + offsets[row]) {
          assert.ok(kGot.subarray(at, at + kw).every(Number.isNaN), "other cache rows untouched");
          continue;
        }
        close(
          kGot.subarray(at, at + kw),
          f64(kRef.subarray(row * kw, (row + 1) * kw)),
          `${layout}: k row`,
        );
        assert.deepEqual(vGot.subarray(at, at + kw), v.subarray(row * kw, (row + 1) * kw));
      }
    }
  }
});
