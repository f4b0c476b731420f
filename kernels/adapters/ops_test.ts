/**
 * Each adapter kernel on fresh random inputs against a float64 CPU twin (the adapters' own tests
 * cover them again in context). f32 tolerance: TOLERANCE.f32 relative.
 */
import assert from "node:assert/strict";
import { kronMaterializeCpu, softmax } from "./kron_cpu.ts";
import { dropoutKeep } from "../cpu/random.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { gradMatmul, gradMatmulSlots } from "./grad_matmul.ts";
import {
  GPU_FILL_WORKGROUPS,
  gpuGradSlots,
  gpuProductKernel,
  splitGrad,
  type SplitGradPlan,
  splitGradPlan,
} from "./kron_gpu_kernels.ts";
import {
  difference,
  doraBackward,
  doraForward,
  doraNormGrad,
  doraNorms,
  dotInto,
  dropout,
  gateBackward,
  gatedAxpy,
  kronExpand,
  sumSlices,
  transposeBatched,
} from "./ops.ts";

const close = (out: ArrayLike<number>, ref: ArrayLike<number>, what: string) => {
  const e = relativeError(out, ref);
  assert.ok(e < TOLERANCE.f32, `${what}: relative error ${e}`);
};

Deno.test("ops: gated axpy, transpose, dot, gate backward, sum of slices", async () => {
  const rt = await testRuntime();
  const n = 70_001; // not a multiple of the workgroup
  const gate32 = randomF32(5, 1);
  const alpha = softmax(gate32);
  const [src, dst0] = [randomF32(n, 2), randomF32(n, 3)];
  const gate = rt.upload(gate32, [5]);
  const dst = rt.upload(dst0, [n]);
  const b = rt.batch();
  await gatedAxpy(rt, b, { dst, src: rt.upload(src, [n]), gate, comp: 3, scale: 0.7, beta: 1 });
  const t = rt.upload(randomF32(3 * 7 * 5, 4), [3, 7, 5]);
  const tt = rt.empty([3, 5, 7]);
  await transposeBatched(rt, b, { dst: tt, src: t, rows: 7, cols: 5 });
  const u = rt.empty([5]);
  const va = randomF32(1000, 5);
  const vb = randomF32(1000, 6);
  for (let i = 0; i < 5; i++) {
    await dotInto(rt, b, {
      out: u,
      index: i,
      a: rt.upload(va.map((x) => x * (i + 1)), [1000]),
      b: rt.upload(vb, [1000]),
    });
  }
  const dg = rt.empty([5]);
  await gateBackward(rt, b, { dg, gate, u });
  const slices = rt.upload(randomF32(4 * 33, 7), [4, 33]);
  const summed = rt.upload(randomF32(33, 8), [33]);
  await sumSlices(rt, b, { dst: summed, src: slices, slices: 4, beta: 0.5 });
  const diff = rt.empty([n]);
  await difference(rt, b, { dst: diff, a: rt.upload(src, [n]), b: rt.upload(dst0, [n]) });
  await b.submit();
  close(await rt.read(diff), Float64Array.from(src, (s, i) => s - dst0[i]), "difference");

  close(
    await rt.read(dst),
    Float64Array.from(dst0, (d, i) => d + 0.7 * alpha[3] * src[i]),
    "gatedAxpy",
  );
  const tIn = await rt.read(t);
  const tRef = new Float64Array(105);
  for (let k = 0; k < 3; k++) {
    for (let r = 0; r < 7; r++) {
      for (let c = 0; c < 5; c++) tRef[k * 35 + c * 7 + r] = tIn[k * 35 + r * 5 + c];
    }
  }
  assert.deepEqual([...await rt.read(tt)], [...tRef], "transpose is exact");
  let d = 0;
  for (let i = 0; i < 1000; i++) d += va[i] * vb[i];
  const uRef = [1, 2, 3, 4, 5].map((k) => k * d);
  close(await rt.read(u), uRef, "dot");
  const total = uRef.reduce((a, c) => a + c, 0);
  close(await rt.read(dg), uRef.map((x, j) => x - alpha[j] * total), "gateBackward");
  const sl = await rt.read(slices);
  const sumRef = Float64Array.from(
    { length: 33 },
    (_, i) => sl[i] + sl[33 + i] + sl[66 + i] + sl[99 + i] + 0.5 * randomF32(33, 8)[i],
  );
  close(await rt.read(summed), sumRef, "sumSlices");
});

Deno.test("ops: dropout mask equals the CPU hash; kron expand equals A⊗B", async () => {
  const rt = await testRuntime();
  const n = 50_000;
  const x = randomF32(n, 9);
  const out = rt.empty([n]);
  const b = rt.batch();
  await dropout(rt, b, { dst: out, src: rt.upload(x, [n]), p: 0.3, seed: 4242 });
  const a = randomF32(3 * 4, 10);
  const bb = randomF32(5 * 2, 11);
  const w0 = randomF32(15 * 8, 12);
  const w = rt.upload(w0, [15, 8]);
  const gate = rt.upload(new Float32Array([0.3, -1]), [2]);
  await kronExpand(rt, b, {
    w,
    a: rt.upload(a, [3, 4]),
    b: rt.upload(bb, [5, 2]),
    mb: 5,
    nb: 2,
    rows: 15,
    cols: 8,
    gate,
    comp: 1,
    scale: 2,
    beta: 1,
  });
  await b.submit();
  const got = await rt.read(out);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const keep = dropoutKeep(4242, i, 0.3);
    kept += keep ? 1 : 0;
    assert.equal(got[i], keep ? Math.fround(x[i] * Math.fround(1 / 0.7)) : 0, `element ${i}`);
  }
  assert.ok(Math.abs(kept / n - 0.7) < 0.01, `keep rate ${kept / n}`);
  const ref = Float64Array.from(w0);
  kronMaterializeCpu(
    Float64Array.from(a),
    Float64Array.from(bb),
    { ma: 3, na: 4, mb: 5, nb: 2 },
    2 * softmax([0.3, -1])[1],
    ref,
  );
  close(await rt.read(w), ref, "kronExpand");
});

Deno.test("ops: DoRA norms from factors, forward, backward and the factored norm gradient", async () => {
  const rt = await testRuntime();
  const [tokens, rows, cols, r, scale] = [9, 13, 21, 3, 0.5];
  const w = randomF32(rows * cols, 1);
  const a = randomF32(r * cols, 6);
  const bm = randomF32(rows * r, 7);
  const mag = randomF32(rows, 2).map((x) => 1 + Math.abs(x));
  const y0 = randomF32(tokens * rows, 3);
  const lora = randomF32(tokens * rows, 4);
  const dy = randomF32(tokens * rows, 5);
  // Host factors: ‖W_o‖², C = A·Wᵀ, G = A·Aᵀ; the dense V = W + s·B·A as the reference.
  const wsq = Float32Array.from({ length: rows }, (_, o) => {
    let ss = 0;
    for (let i = 0; i < cols; i++) ss += w[o * cols + i] ** 2;
    return ss;
  });
  const c = new Float32Array(r * rows);
  const g = new Float32Array(r * r);
  const v = new Float64Array(rows * cols);
  for (let k = 0; k < r; k++) {
    for (let o = 0; o < rows; o++) {
      let d = 0;
      for (let i = 0; i < cols; i++) d += a[k * cols + i] * w[o * cols + i];
      c[k * rows + o] = d;
    }
    for (let j = 0; j < r; j++) {
      let d = 0;
      for (let i = 0; i < cols; i++) d += a[k * cols + i] * a[j * cols + i];
      g[k * r + j] = d;
    }
  }
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      let d = w[o * cols + i];
      for (let k = 0; k < r; k++) d += scale * bm[o * r + k] * a[k * cols + i];
      v[o * cols + i] = d;
    }
  }
  const nRef = Array.from(
    { length: rows },
    (_, o) => Math.hypot(...v.subarray(o * cols, (o + 1) * cols)),
  );
  const norms = rt.empty([rows]);
  const y = rt.upload(y0, [tokens, rows]);
  const pre = rt.empty([tokens, rows]);
  const dm = rt.empty([rows]);
  const dys = rt.empty([tokens, rows]);
  const m = rt.upload(mag, [rows]);
  const gb = rt.upload(bm, [rows, r]);
  const db0 = randomF32(rows * r, 8);
  const db = rt.upload(db0, [rows, r]);
  const e = rt.empty([r, rows]);
  for (const t of [norms, pre, dm, dys, e]) rt.fill(t, NaN);
  const gc = rt.upload(c, [r, rows]);
  const gg = rt.upload(g, [r, r]);
  const b = rt.batch();
  await doraNorms(rt, b, { norm: norms, wsq: rt.upload(wsq, [rows]), b: gb, c: gc, g: gg, scale });
  await doraForward(rt, b, {
    y,
    lora: rt.upload(lora, [tokens, rows]),
    magnitude: m,
    norm: norms,
    pre,
    scale,
  });
  await doraBackward(rt, b, {
    dy: rt.upload(dy, [tokens, rows]),
    pre,
    magnitude: m,
    norm: norms,
    dm,
    dyScaled: dys,
  });
  const coef = rt.empty([3, rows]);
  b.copy(m.buffer, 0, coef.buffer, 0, 4 * rows);
  b.copy(norms.buffer, 0, coef.buffer, 4 * rows, 4 * rows);
  b.copy(dm.buffer, 0, coef.buffer, 8 * rows, 4 * rows);
  await doraNormGrad(rt, b, { db, e, b: gb, c: gc, g: gg, coef, scale });
  await b.submit();
  close(await rt.read(norms), nRef, "doraNorms");
  const preRef = Float64Array.from(y0, (yv, i) => yv + scale * lora[i]);
  close(await rt.read(pre), preRef, "dora pre");
  close(await rt.read(y), preRef.map((p, i) => (mag[i % rows] / nRef[i % rows]) * p), "dora y");
  const dmRef = new Float64Array(rows);
  for (let i = 0; i < dy.length; i++) dmRef[i % rows] += (dy[i] * preRef[i]) / nRef[i % rows];
  close(await rt.read(dm), dmRef, "dora dm");
  close(
    await rt.read(dys),
    Float64Array.from(dy, (gv, i) => (mag[i % rows] / nRef[i % rows]) * gv),
    "dora dy scaled",
  );
  // Dense reference of the norm's gradient: dV = c ⊙ V, dB += s·dV·Aᵀ, E = s·(c ⊙ B)ᵀ.
  const coefRef = Array.from({ length: rows }, (_, o) => (-mag[o] * dmRef[o]) / nRef[o] ** 2);
  const dbRef = Float64Array.from(db0);
  const eRef = new Float64Array(r * rows);
  for (let o = 0; o < rows; o++) {
    for (let k = 0; k < r; k++) {
      let d = 0;
      for (let i = 0; i < cols; i++) d += coefRef[o] * v[o * cols + i] * a[k * cols + i];
      dbRef[o * r + k] += scale * d;
      eRef[k * rows + o] = scale * coefRef[o] * bm[o * r + k];
    }
  }
  close(await rt.read(db), dbRef, "dora norm gradient of B");
  close(await rt.read(e), eRef, "dora norm gradient factor E");
});

Deno.test("ops: split-K weight gradient equals Lᵀ·R for split and unsplit shapes", async () => {
  const rt = await testRuntime();
  for (const [tokens, perTokenK, m, n] of [[64, 3, 5, 7], [37, 1, 8, 200], [8, 16, 300, 300]]) {
    const k = tokens * perTokenK;
    const l = randomF32(k * m, 1);
    const r = randomF32(k * n, 2);
    const out0 = randomF32(m * n, 3);
    const out = rt.upload(out0, [m, n]);
    const b = rt.batch();
    await gradMatmul(rt, b, {
      left: rt.upload(l, [k, m]),
      right: rt.upload(r, [k, n]),
      out,
      m,
      n,
      tokens,
      perTokenK,
      alpha: 0.5,
      beta: 1,
    });
    await b.submit();
    const ref = Float64Array.from(out0);
    for (let p = 0; p < k; p++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) ref[i * n + j] += 0.5 * l[p * m + i] * r[p * n + j];
      }
    }
    close(await rt.read(out), ref, `gradMatmul ${tokens}x${perTokenK} → ${m}x${n}`);
  }
});

Deno.test("ops: slot-accumulated gradients over chunks sum to the whole product (both layouts)", async () => {
  const rt = await testRuntime();
  const [m, n, perTokenK, slots] = [6, 10, 3, 2];
  const chunkTokens = [4, 4, 3]; // the last chunk has an odd count: one slot takes it
  const tokens = chunkTokens.reduce((a, b) => a + b);
  for (const layout of ["stacked", "perToken"] as const) {
    // stacked: L [tokens·perTokenK, m], R [tokens·perTokenK, n]; perToken: L [t, m, p], R [t, p, n]
    const l = randomF32(tokens * perTokenK * m, 4);
    const r = randomF32(tokens * perTokenK * n, 5);
    const partial = rt.empty([slots, m, n]);
    const b = rt.batch();
    b.clear(partial.buffer, partial.byteOffset, partial.byteLength);
    let start = 0;
    for (const count of chunkTokens) {
      const lc = l.subarray(start * perTokenK * m, (start + count) * perTokenK * m);
      const rc = r.subarray(start * perTokenK * n, (start + count) * perTokenK * n);
      await gradMatmulSlots(rt, b, {
        left: rt.upload(lc, [lc.length]),
        right: rt.upload(rc, [rc.length]),
        partial,
        slots,
        m,
        n,
        tokens: count,
        perTokenK,
        alpha: 0.5,
        layout,
      });
      start += count;
    }
    const out = rt.empty([m, n]);
    await sumSlices(rt, b, { dst: out, src: partial, slices: slots });
    await b.submit();
    const ref = new Float64Array(m * n);
    for (let t = 0; t < tokens; t++) {
      for (let p = 0; p < perTokenK; p++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            const lv = layout === "stacked"
              ? l[(t * perTokenK + p) * m + i]
              : l[(t * m + i) * perTokenK + p];
            ref[i * n + j] += 0.5 * lv * r[(t * perTokenK + p) * n + j];
          }
        }
      }
    }
    close(await rt.read(out), ref, `gradMatmulSlots ${layout}`);
  }
  await assert.rejects(() =>
    gradMatmulSlots(rt, rt.batch(), {
      left: rt.empty([3]),
      right: rt.empty([3]),
      partial: rt.empty([5]),
      slots: 2,
      m: 1,
      n: 3,
      tokens: 1,
      perTokenK: 1,
    }), /partial of 5, want 2×1×3/);
});

Deno.test("ops: GPU split gradients over slots equal the product, bit for bit on every run; wrong plans and sums fail", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const v = rt.variants;
  // Tiles fit the d = 4096 MoKA shapes: 32×128 and 128×32 per token, tall outputs 32 wide.
  const tile = (m: number, n: number, batch = 1) => {
    const k = gpuProductKernel(v, m, n, batch);
    return [16 * k.tm, 16 * k.tn];
  };
  assert.deepEqual(tile(32, 128, 512), [32, 128]);
  assert.deepEqual(tile(128, 32, 512), [128, 32]);
  assert.deepEqual(tile(64, 64, 512), [64, 64]);
  assert.deepEqual(tile(65536, 32), [128, 32]);
  // A 64×64 gradient over 512 tokens of 64: 256 slices of 128 (the shortest useful slice).
  const big = 1 << 30;
  assert.equal(gpuGradSlots(v, { m: 64, n: 64, tokens: 512, perTokenK: 64, maxFloats: big }), 256);
  assert.equal(gpuGradSlots(v, { m: 64, n: 64, tokens: 512, perTokenK: 64, maxFloats: 4096 }), 1);
  assert.ok(
    gpuGradSlots(v, { m: 8, n: 8, tokens: 1 << 20, perTokenK: 1, maxFloats: big }) ===
      GPU_FILL_WORKGROUPS,
  );
  assert.deepEqual(splitGradPlan(129, 8, [256, 256]), { used: 8, perSlice: 16, rest: 1 });
  assert.deepEqual(splitGradPlan(128, 8, [256, 256]), { used: 8, perSlice: 16, rest: 0 });
  // 121 tokens at 192-byte rows is no bindable split point: the divisor 3 takes them.
  assert.deepEqual(splitGradPlan(129, 11, [192, 384]), { used: 3, perSlice: 43, rest: 0 });

  const [m, n, perTokenK, tokens, slots] = [6, 10, 3, 129, 8];
  for (const layout of ["stacked", "perToken"] as const) {
    const l = randomF32(tokens * perTokenK * m, 6);
    const r = randomF32(tokens * perTokenK * n, 7);
    const ref = new Float64Array(m * n);
    for (let t = 0; t < tokens; t++) {
      for (let p = 0; p < perTokenK; p++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            const lv = layout === "stacked"
              ? l[(t * perTokenK + p) * m + i]
              : l[(t * m + i) * perTokenK + p];
            ref[i * n + j] += 0.5 * lv * r[(t * perTokenK + p) * n + j];
          }
        }
      }
    }
    const left = rt.upload(l, [tokens, l.length / tokens]);
    const right = rt.upload(r, [tokens, r.length / tokens]);
    const run = async (plan?: SplitGradPlan, sumOver = slots) => {
      const partial = rt.empty([slots, m, n]);
      rt.fill(partial, NaN); // beta = 0 overwrites every slot the plan uses
      const out = rt.empty([m, n]);
      rt.fill(out, NaN);
      const b = rt.batch();
      const args = { left, right, m, n, tokens, perTokenK, alpha: 0.5, layout, plan };
      if (plan && plan.used < slots) {
        b.clear(partial.buffer, partial.byteOffset, partial.byteLength);
      }
      await splitGrad(rt, b, { ...args, partial, slots });
      await sumSlices(rt, b, {
        dst: out,
        src: partial.view([sumOver * m * n]),
        slices: sumOver,
      });
      await b.submit();
      const got = await rt.read(out) as Float32Array;
      partial.release();
      out.release();
      return got;
    };
    const first = await run();
    close(first, ref, `splitGrad ${layout}`);
    assert.deepEqual(await run(), first, `splitGrad ${layout}: not bit-reproducible`);
    close(await run({ used: 3, perSlice: 43, rest: 0 }), ref, `splitGrad ${layout} divisor plan`);
    // Negative controls: a plan that drops the rest token, a sum that misses the last slot.
    const wrong = (got: Float32Array, what: string) =>
      assert.ok(relativeError(got, ref) > 1e-3, `${what} passed the comparison`);
    wrong(await run({ used: 8, perSlice: 16, rest: 0 }), `${layout}: rest dropped`);
    wrong(await run(undefined, slots - 1), `${layout}: last slot not summed`);
    left.release();
    right.release();
  }
});
