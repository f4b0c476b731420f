import assert from "node:assert/strict";
import { matmulCpu } from "../cpu/matmul.ts";
import { randomF32, relativeError, rng, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { dequantizeNf4, quantizeNf4 } from "./nf4.ts";
import { dequantizeInt4, quantizeInt4 } from "./int4.ts";
import type { QuantizedWeight } from "./format.ts";
import {
  QUANT_DECODE,
  QUANT_PREFILL,
  quantMatmul,
  quantMatmulBackward,
  uploadF32Weight,
  uploadQuantized,
} from "./qmatmul.ts";

/** Gaussian-ish weights (sum of uniforms), never all zero. */
function weights(n: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() + next() + next() - 1.5) * 0.1;
  return out;
}

const FORMATS: [string, (w: Float32Array, r: number, c: number) => QuantizedWeight][] = [
  ["nf4", (w, r, c) => quantizeNf4(w, r, c)],
  ["nf4+dq", (w, r, c) => quantizeNf4(w, r, c, { doubleQuant: true, doubleQuantGroup: 5 })],
  ["int4-g32", (w, r, c) => quantizeInt4(w, r, c, 32)],
  ["int4-g128", (w, r, c) => quantizeInt4(w, r, c, 128)],
];

function dequantize(q: QuantizedWeight): Float32Array {
  return q.format === "nf4" ? dequantizeNf4(q) : dequantizeInt4(q);
}

// [tokens, rows (out), cols (in)]: decode (1 token), odd sizes, cols not a multiple of 8 or of the
// block size, and cols a multiple of 32 for the four-words-per-step kernel (320: the last int4-g128
// group is partial).
const SHAPES: [number, number, number][] = [
  [1, 37, 200],
  [1, 64, 130],
  [3, 17, 77],
  [9, 33, 256],
  [13, 5, 13],
  [1, 41, 320],
  [5, 23, 64],
];

let seed = 100;

for (const [name, quantize] of FORMATS) {
  Deno.test(`quant ${name}: fused y = x·Wᵀ and dx = dy·W equal dequantize-then-matmul`, async () => {
    const rt = await testRuntime();
    for (const [tokens, rows, cols] of SHAPES) {
      const q = quantize(weights(rows * cols, seed++), rows, cols);
      const dense = dequantize(q);
      const gw = uploadQuantized(rt, q);
      const x = randomF32(tokens * cols, seed++);
      const dy = randomF32(tokens * rows, seed++);
      const prev = randomF32(tokens * rows, seed++);

      const yRef = new Float64Array(prev);
      matmulCpu(x, dense, yRef, { m: tokens, n: rows, k: cols, transB: true, alpha: 0.5, beta: 1 });
      // Both forward kernels where the shape allows the four-words-per-step one.
      for (const wide of cols % 32 === 0 ? [true, false] : [true]) {
        const kernel = { ...(tokens === 1 ? QUANT_DECODE : QUANT_PREFILL), wide };
        const y = rt.upload(prev, [tokens, rows]);
        const xg = rt.upload(x, [tokens, cols]);
        await quantMatmul(rt, xg, gw, { out: y, alpha: 0.5, beta: 1, kernel });
        const errY = relativeError(await rt.read(y), yRef);
        const what = `${name} forward${wide ? "" : " (one word)"} ${tokens}×${rows}×${cols}`;
        assert.ok(errY < TOLERANCE.f32, `${what}: ${errY}`);
      }

      const dx = rt.empty([tokens, cols]);
      rt.fill(dx, NaN);
      await quantMatmulBackward(rt, rt.upload(dy, [tokens, rows]), gw, { out: dx });
      const dxRef = new Float64Array(tokens * cols);
      matmulCpu(dy, dense, dxRef, { m: tokens, n: cols, k: rows });
      const errX = relativeError(await rt.read(dx), dxRef);
      assert.ok(errX < TOLERANCE.f32, `${name} backward ${tokens}×${rows}×${cols}: ${errX}`);
      gw.release();
    }
  });
}

Deno.test("quant f32 baseline kernel equals the dense reference", async () => {
  const rt = await testRuntime();
  const [tokens, rows, cols] = [3, 19, 64];
  const w = weights(rows * cols, 7);
  const x = randomF32(tokens * cols, 8);
  const y = await quantMatmul(rt, rt.upload(x, [tokens, cols]), uploadF32Weight(rt, w, rows, cols));
  const ref = new Float64Array(tokens * rows);
  matmulCpu(x, w, ref, { m: tokens, n: rows, k: cols, transB: true });
  assert.ok(relativeError(await rt.read(y), ref) < TOLERANCE.f32);
});

Deno.test("quant: corrupt, short and mismatched inputs are rejected before the GPU", async () => {
  const rt = await testRuntime();
  const q = quantizeNf4(weights(8 * 64, 3), 8, 64);
  assert.throws(
    () => uploadQuantized(rt, { ...q, packed: q.packed.subarray(1) }, "layer0.wq"),
    /layer0\.wq: packed has 63 elements, expected 64/,
  );
  assert.throws(
    () => uploadQuantized(rt, { ...q, absmax: new Float32Array(3) }),
    /absmax has 3 elements, expected 8/,
  );
  const i4 = quantizeInt4(weights(4 * 40, 4), 4, 40, 32);
  assert.throws(() => uploadQuantized(rt, { ...i4, zeros: new Uint32Array(0) }), /zeros has 0/);
  assert.throws(() => uploadQuantized(rt, { ...i4, groupSize: 48 }), /groupSize=48 must be 32/);
  assert.throws(() => quantizeInt4(weights(10, 1), 2, 5, 16), /groupSize=16/);
  assert.throws(() => quantizeNf4(weights(10, 1), 2, 5, { blockSize: 60 }), /multiple of 8/);
  const gw = uploadQuantized(rt, q);
  await assert.rejects(
    quantMatmul(rt, rt.upload(randomF32(63, 1), [63]), gw),
    /63 elements is not a whole number of 64-feature rows/,
  );
  await assert.rejects(
    quantMatmulBackward(rt, rt.upload(randomF32(7, 1), [7]), gw),
    /not a whole number of 8-feature rows/,
  );
  const square = uploadQuantized(rt, quantizeNf4(weights(64 * 64, 5), 64, 64));
  const xs = rt.upload(randomF32(64, 2), [1, 64]);
  await assert.rejects(quantMatmul(rt, xs, square, { out: xs }), /must not alias the input/);
  await assert.rejects(quantMatmulBackward(rt, xs, square, { out: xs }), /must not alias/);
});
