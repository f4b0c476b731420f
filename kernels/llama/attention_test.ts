/**
 * Memory-efficient attention against the float64 reference (which keeps the whole probability
 * matrix): lengths that are not tile multiples, GQA, several sequences, padding rows, and
 * NaN-poisoned outputs. The GPU family (`attention_gpu.ts`) is forced on whatever adapter runs the
 * tests, at both its device tiles and WebGPU's 16 KiB minimum, with a rerun that must be
 * bit-identical and a mutated kernel per pass that must fail the same comparison.
 */
import assert from "node:assert/strict";
import { attentionBackward as attBwdCpu, attentionForward as attFwdCpu } from "./cpu/attention.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { attentionBackward, attentionForward } from "./attention.ts";
import {
  attentionBackwardGpu,
  attentionForwardGpu,
  type AttentionGpuKernels,
  attentionGpuKernels,
} from "./attention_gpu.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";

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

for (const target of ["cpu-adapter", "gpu"] as const) {
  Deno.test(`attention (${target} kernels): right-padded rows change nothing before them (forward and backward)`, async () => {
    await paddedRowsCheck(await testRuntime({ target }));
  });
}

async function paddedRowsCheck(rt: GpuRuntime): Promise<void> {
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
}

// ---- GPU family (workgroup-tiled FlashAttention-2), forced on whatever adapter runs the tests ----

/** [sequences, seq, heads, kvHeads, headSize] */
type Case = readonly [number, number, number, number, number];

/** Float64 log-sum-exp of every query row, [sequences, heads, seq] (the kernels' lse layout). */
function lseRef(q: Float32Array, k: Float32Array, [sequences, seq, heads, kvHeads, hs]: Case) {
  const out = new Float64Array(sequences * heads * seq);
  const [qw, kw, scale] = [heads * hs, kvHeads * hs, 1 / Math.sqrt(hs)];
  for (let b = 0; b < sequences; b++) {
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / (heads / kvHeads));
      for (let t = 0; t < seq; t++) {
        const s: number[] = [];
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let c = 0; c < hs; c++) {
            d += q[(b * seq + t) * qw + h * hs + c] * k[(b * seq + u) * kw + kh * hs + c];
          }
          s.push(d * scale);
        }
        const m = Math.max(...s);
        out[(b * heads + h) * seq + t] = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0));
      }
    }
  }
  return out;
}

/**
 * Run the GPU kernels (the device's, or `kernels`) on NaN-poisoned outputs and return each
 * output's relative error against float64, and the outputs' bytes.
 */
async function gpuAgainstFloat64(rt: GpuRuntime, c: Case, kernels?: AttentionGpuKernels) {
  const [sequences, seq, heads, kvHeads, hs] = c;
  const rows = sequences * seq;
  const q = randomF32(rows * heads * hs, seq + hs);
  const k = randomF32(rows * kvHeads * hs, seq + hs + 1);
  const v = randomF32(rows * kvHeads * hs, seq + hs + 2);
  const dout = randomF32(rows * heads * hs, seq + hs + 3);
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
  const b = rt.batch({ profile: true });
  const dims = { seq, heads, kvHeads, headSize: hs };
  if (kernels) {
    const d = { ...dims, sequences };
    await attentionForwardGpu(rt, b, { out, lse, q: t.q, k: t.k, v: t.v }, d, kernels);
    await attentionBackwardGpu(rt, b, { dq, dk, dv, dd, ...t, out, lse }, d, kernels);
  } else {
    await attentionForward(rt, b, { out, lse, q: t.q, k: t.k, v: t.v, dims });
    await attentionBackward(rt, b, { dq, dk, dv, dd, ...t, out, lse, dims });
  }
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
  const err: Record<string, number> = {};
  const bytes: Float32Array[] = [];
  for (
    const [name, got, ref] of [
      ["out", out, outRef],
      ["lse", lse, lseRef(q, k, c)],
      ["dq", dq, dqRef],
      ["dk", dk, dkRef],
      ["dv", dv, dvRef],
    ] as const
  ) {
    const data = await rt.read(got) as Float32Array;
    err[name] = relativeError(data, ref);
    bytes.push(data);
  }
  for (const x of [...Object.values(t), out, lse, dq, dk, dv, dd]) x.release();
  return { err, bytes, labels: b.durations().map((d) => d.label) };
}

function assertClose(c: Case, err: Record<string, number>, what = ""): void {
  for (const [name, e] of Object.entries(err)) {
    assert.ok(e < TOLERANCE.f32, `${what}${c.join("/")}: ${name} relative error ${e}`);
  }
}

Deno.test("attention (gpu kernels): FlashAttention-2 forward and backward equal float64 (T = 1, 7, 17, 33, 37, 129; GQA 4; hs 6, 8, 36, 64, 128)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  for (
    const c of [
      [3, 1, 8, 2, 8],
      [2, 7, 4, 1, 8],
      [2, 129, 4, 1, 8],
      [1, 37, 3, 3, 6],
      [1, 33, 2, 1, 36],
      [2, 17, 4, 2, 64],
      [3, 7, 4, 1, 128],
      [1, 129, 4, 1, 128],
    ] as const
  ) {
    const { err, labels } = await gpuAgainstFloat64(rt, c);
    assertClose(c, err);
    // The public entry points recorded the GPU family (where timestamps name the dispatches).
    if (rt.gpu.hasTimestamps) {
      assert.deepEqual(labels.map((l) => l.split("-hs")[0]), [
        "llama/attention-gpu-fwd",
        "llama/attention-gpu-bwd-q",
        "llama/attention-gpu-bwd-kv",
      ]);
    }
  }
});

Deno.test("attention (gpu kernels): the 16 KiB tiles (WebGPU's minimum) at hs 128 equal float64", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const kernels = attentionGpuKernels(128, 16384);
  assert.deepEqual(
    [kernels.forward.tiles, kernels.dq.tiles, kernels.dkv.tiles],
    [{ block: 16, tile: 4 }, { block: 8, tile: 4 }, { block: 8, tile: 4 }],
  );
  for (const c of [[1, 37, 4, 1, 128], [2, 5, 8, 2, 128]] as const) {
    assertClose(c, (await gpuAgainstFloat64(rt, c, kernels)).err, "16 KiB ");
  }
});

Deno.test("attention (gpu kernels): a rerun is bit-identical (no atomics, fixed summation order)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const c = [2, 45, 4, 1, 8] as const;
  const [a, b] = [await gpuAgainstFloat64(rt, c), await gpuAgainstFloat64(rt, c)];
  a.bytes.forEach((x, i) => assert.deepEqual(x, b.bytes[i], `output ${i} differs between runs`));
});

Deno.test("attention (gpu kernels): negative controls — one wrong accumulation per kernel fails the comparison", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const c = [2, 20, 4, 1, 8] as const;
  const good = attentionGpuKernels(8, rt.variants.workgroupStorageBytes);
  assertClose(c, (await gpuAgainstFloat64(rt, c, good)).err);
  for (
    const [kernel, from, to, broken] of [
      ["forward", "acc[0] = fma(vec4(pj),", "acc[0] = fma(vec4(0.5 * pj),", "out"],
      ["dq", "acc[0] = fma(vec4(g),", "acc[0] = fma(vec4(0.5 * g),", "dq"],
      ["dkv", "gk[0] = fma(vec4(g),", "gk[0] = fma(vec4(0.5 * g),", "dk"],
    ] as const
  ) {
    const code = good[kernel].code.replace(from, to);
    assert.notEqual(code, good[kernel].code, `${kernel}: mutation "${from}" not found`);
    const bad = { ...good, [kernel]: { ...good[kernel], code, label: `${kernel}-mutated` } };
    const { err } = await gpuAgainstFloat64(rt, c, bad);
    assert.ok(
      err[broken] > 100 * TOLERANCE.f32,
      `mutated ${kernel} passed: ${broken} error ${err[broken]}`,
    );
  }
});
