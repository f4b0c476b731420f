/**
 * GPU quantization from stored bytes, and row-blocked frozen matrices, against the host
 * references: the float64 quantizers of kernels/quant on the decoded values, dense matmuls on the
 * dequantized weights, and plain row copies. Odd column counts, partial scale blocks and blocks
 * that divide nothing.
 */
import assert from "node:assert/strict";
import { quantizeInt4 } from "../kernels/quant/int4.ts";
import { dequantizeNf4, NF4_LEVELS, quantizeNf4 } from "../kernels/quant/nf4.ts";
import { unpackCodes } from "../kernels/quant/format.ts";
import { decodeToF32, encodeSafetensors, parseSafetensors } from "./safetensors.ts";
import { matmulCpu } from "../kernels/cpu/matmul.ts";
import { randomF32, relativeError, rng, testRuntime, TOLERANCE } from "../kernels/testing/mod.ts";
import {
  frozenBlockBackward,
  frozenBlockMatmul,
  frozenDequantize,
  frozenGather,
  frozenMatmul,
  frozenMatmulBackward,
  FrozenMatrix,
  frozenRowNorms,
  planRowBlocks,
} from "../kernels/quant/frozen.ts";
import type { GpuQuantWeight, StorageFormat } from "../kernels/quant/qmatmul.ts";
import { quantizeRows, type StoredDType } from "../kernels/quant/quantize.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";

/** Gaussian-ish weights with a wide range of magnitudes. */
function weights(n: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() + next() + next() - 1.5) * 0.1 * (1 + 9 * next());
  return out;
}

/** The bytes a checkpoint would store for `values` as `dtype` (host encoder). */
function stored(values: Float32Array, dtype: StoredDType): Uint8Array {
  const bytes = encodeSafetensors([{ name: "w", shape: [values.length], data: values, dtype }]);
  const file = parseSafetensors(bytes);
  const [begin, end] = file.entries.get("w")!.offsets;
  const start = bytes.byteLength - (end - begin);
  const out = new Uint8Array(Math.ceil((end - begin) / 4) * 4);
  out.set(bytes.subarray(start, bytes.byteLength));
  return out.subarray(0, end - begin);
}

async function gpuQuantize(
  rt: GpuRuntime,
  format: StorageFormat,
  raw: Uint8Array,
  dtype: StoredDType,
  rows: number,
  cols: number,
  options: { rowBase?: number; totalRows?: number; blockSize?: number } = {},
) {
  const m = FrozenMatrix.empty(rt, format, options.totalRows ?? rows, cols, {
    blockSize: options.blockSize ?? (format === "int4" ? 32 : 64),
  });
  const words = new Uint32Array(
    raw.buffer.slice(raw.byteOffset, raw.byteOffset + Math.ceil(raw.byteLength / 4) * 4),
  );
  const flags = rt.upload(new Uint32Array(2), [2], "u32");
  const b = rt.batch();
  await quantizeRows(
    rt,
    b,
    { raw: rt.upload(words, [words.length], "u32"), dtype, rows },
    m.blocks[0].weight,
    options.rowBase ?? 0,
    flags,
    1,
  );
  await b.submit();
  return { m, flag: (await rt.read(flags) as Uint32Array)[1] };
}

async function download(rt: GpuRuntime, w: GpuQuantWeight) {
  return {
    packed: await rt.read(w.packed) as Uint32Array,
    scales: await rt.read(w.scales) as Float32Array,
    aux: await rt.read(w.aux) as Uint32Array,
  };
}

const NF4_MIDS = NF4_LEVELS.slice(1).map((v, i) => (v + NF4_LEVELS[i]) / 2);

Deno.test("quantize on GPU: stored F32/F16/BF16 bytes become f32, bf16, f16, NF4 and int4 as the host quantizers make them", async () => {
  const rt = await testRuntime();
  for (const [rows, cols] of [[9, 77], [5, 130], [3, 64]]) {
    const values = weights(rows * cols, rows * cols);
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const raw = stored(values, dtype);
      const decoded = decodeToF32(raw, dtype); // what the checkpoint holds
      const what = `${dtype} ${rows}×${cols}`;
      // f32: exact widening.
      {
        const { m, flag } = await gpuQuantize(rt, "f32", raw, dtype, rows, cols);
        assert.deepEqual(await rt.read(m.blocks[0].weight.packed), decoded, `${what} → f32`);
        assert.equal(flag, 0);
        m.release();
      }
      // bf16: the top halves, rounded to nearest even (as the host encoder rounds).
      {
        const { m } = await gpuQuantize(rt, "bf16", raw, dtype, rows, cols);
        const wide = new Float32Array(rows * cols);
        const words = (await download(rt, m.blocks[0].weight)).packed;
        const stride = Math.ceil(cols / 8) * 8;
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < cols; c++) {
            const half = new Uint16Array(words.buffer)[r * stride + c];
            wide[r * cols + c] = new Float32Array(new Uint32Array([half << 16]).buffer)[0];
          }
        }
        assert.deepEqual(wide, decodeToF32(stored(decoded, "BF16"), "BF16"), `${what} → bf16`);
        m.release();
      }
      // NF4: absmax exact; codes as the reference except where v/absmax is within f32 rounding
      // of a level midpoint.
      {
        const { m } = await gpuQuantize(rt, "nf4", raw, dtype, rows, cols);
        const ref = quantizeNf4(decoded, rows, cols);
        const got = await download(rt, m.blocks[0].weight);
        assert.deepEqual(got.scales, ref.absmax, `${what} NF4 absmax`);
        const gc = unpackCodes(got.packed, rows, cols);
        const rc = unpackCodes(ref.packed, rows, cols);
        for (let i = 0; i < gc.length; i++) {
          if (gc[i] === rc[i]) continue;
          const x = decoded[i] /
            ref.absmax![Math.floor(i / cols) * Math.ceil(cols / 64) + Math.floor((i % cols) / 64)];
          const near = Math.min(...NF4_MIDS.map((t) => Math.abs(x - t)));
          assert.ok(near < 1e-6, `${what} NF4 code ${i}: ${gc[i]} vs ${rc[i]} at ${x}`);
        }
        m.release();
      }
      // int4 (group 32): scales within an f32 rounding (the host rounds once from float64),
      // zero points and codes as the reference's except at rounding ties.
      {
        const { m } = await gpuQuantize(rt, "int4", raw, dtype, rows, cols);
        const ref = quantizeInt4(decoded, rows, cols, 32);
        const got = await download(rt, m.blocks[0].weight);
        got.scales.forEach((v, i) =>
          assert.ok(Math.abs(v - ref.scales[i]) <= 2 ** -22 * ref.scales[i], `${what} scale ${i}`)
        );
        const gpr = Math.ceil(cols / 32);
        const zeros = unpackCodes(got.aux, rows, gpr);
        const refZeros = unpackCodes(ref.zeros, rows, gpr);
        const codes = unpackCodes(got.packed, rows, cols);
        const refCodes = unpackCodes(ref.packed, rows, cols);
        let differing = 0;
        zeros.forEach((z, i) => differing += Number(z !== refZeros[i]));
        codes.forEach((q, i) => differing += Number(q !== refCodes[i]));
        assert.ok(differing <= Math.ceil(codes.length / 1000), `${what} int4: ${differing} differ`);
        m.release();
      }
    }
  }
});

Deno.test("quantize on GPU: rows land at their offset, and NaN/Inf inputs are flagged", async () => {
  const rt = await testRuntime();
  const [rows, cols] = [4, 40];
  const values = weights(rows * cols, 3);
  const { m, flag } = await gpuQuantize(rt, "nf4", stored(values, "F32"), "F32", rows, cols, {
    rowBase: 3,
    totalRows: 9,
  });
  assert.equal(flag, 0);
  const got = await download(rt, m.blocks[0].weight);
  const ref = quantizeNf4(values, rows, cols);
  const wpr = Math.ceil(cols / 8);
  assert.deepEqual(got.packed.subarray(3 * wpr, 7 * wpr), ref.packed);
  m.release();
  for (const bad of [NaN, Infinity, -Infinity]) {
    for (const format of ["f32", "bf16", "nf4", "int4"] as const) {
      const poisoned = values.slice();
      poisoned[57] = bad;
      const r = await gpuQuantize(rt, format, stored(poisoned, "F32"), "F32", rows, cols);
      assert.equal(r.flag, 1, `${format}: ${bad} is flagged`);
      r.m.release();
    }
  }
});

Deno.test("frozen matrix: row blocks plan within the limit", () => {
  assert.deepEqual(planRowBlocks(40, 64, 7 * 64), [7, 7, 7, 7, 7, 5]);
  assert.deepEqual(planRowBlocks(10, 4, 1000), [10]);
  assert.deepEqual(planRowBlocks(128256, 8192, 2 ** 27), [
    16032,
    16032,
    16032,
    16032,
    16032,
    16032,
    16032,
    16032,
  ]);
  assert.throws(() => planRowBlocks(3, 1000, 999), /does not fit/);
});

/** Blocked matmuls, gathers, norms and copies of every format on `rt`'s kernel variants. */
async function checkBlockedFrozen(rt: GpuRuntime, tokens: number): Promise<void> {
  const [rows, cols] = [37, 48];
  const values = weights(rows * cols, 11);
  for (const format of ["f32", "bf16", "f16", "nf4", "int4"] as const) {
    for (const blockRows of [rows, 8]) { // one block, then five (the last of 5 rows)
      const bytesPerRow = format === "f32"
        ? 4 * cols
        : format === "bf16" || format === "f16"
        ? 16 * Math.ceil(cols / 8)
        : 4 * Math.ceil(cols / 8) + 4 * Math.ceil(cols / 32) + (format === "int4" ? 4 : 0);
      const m = FrozenMatrix.empty(rt, format, rows, cols, {
        blockSize: 32,
        maxBlockBytes: blockRows * bytesPerRow,
      });
      assert.equal(m.blocks.length, Math.ceil(rows / blockRows));
      const raw = stored(values, "F32");
      const words = new Uint32Array(
        raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength),
      );
      const flags = rt.upload(new Uint32Array(1), [1], "u32");
      const b = rt.batch();
      for (const { rowStart, weight } of m.blocks) {
        const part = words.subarray(rowStart * cols, (rowStart + weight.rows) * cols);
        await quantizeRows(
          rt,
          b,
          {
            raw: rt.upload(part.slice(), [part.length], "u32"),
            dtype: "F32",
            rows: weight.rows,
          },
          weight,
          0,
          flags,
          0,
        );
      }
      const dense = await frozenDequantize(rt, b, m);
      await b.submit();
      const w = await rt.read(dense) as Float32Array;
      const what = `${format}, ${m.blocks.length} block(s)`;
      // The stored weight is the source quantized: close to it, exactly for f32.
      const tol = format === "f32"
        ? 0
        : format === "bf16"
        ? 2 ** -8
        : format === "f16"
        ? 2 ** -11
        : 0.2;
      assert.ok(relativeError(w, values) <= tol, `${what}: stored ≈ source`);
      if (format === "nf4" && m.blocks.length === 1) {
        assert.deepEqual(w, dequantizeNf4(quantizeNf4(values, rows, cols, { blockSize: 32 })));
      }
      const x = randomF32(tokens * cols, 12);
      const dy = randomF32(tokens * rows, 13);
      const prev = randomF32(tokens * rows, 14);
      const yRef = Float64Array.from(prev);
      matmulCpu(x, w, yRef, { m: tokens, n: rows, k: cols, transB: true, beta: 1 });
      const dxRef = new Float64Array(tokens * cols);
      matmulCpu(dy, w, dxRef, { m: tokens, n: cols, k: rows });
      const y = rt.upload(prev, [tokens, rows]);
      const dx = rt.empty([tokens, cols]);
      rt.fill(dx, NaN);
      const ids = Uint32Array.from([36, 0, 8, 7, 20, 36]);
      const gathered = rt.empty([ids.length, cols]);
      rt.fill(gathered, NaN);
      const norms = rt.empty([rows]);
      rt.fill(norms, NaN);
      const xs = rt.upload(x, [tokens, cols]);
      const b2 = rt.batch();
      await frozenMatmul(rt, b2, xs, m, { out: y, beta: 1 });
      await frozenMatmulBackward(rt, b2, rt.upload(dy, [tokens, rows]), m, { out: dx });
      await frozenGather(rt, b2, rt.upload(ids, [ids.length], "u32"), m, gathered);
      await frozenRowNorms(rt, b2, m, norms);
      // The last block alone: its logits-style product and backward.
      const last = m.blocks.length - 1;
      const lb = m.blocks[last];
      const blockOut = rt.empty([tokens, lb.weight.rows]);
      await frozenBlockMatmul(rt, b2, xs, m, last, blockOut);
      const blockDx = rt.empty([tokens, cols]);
      await frozenBlockBackward(rt, b2, blockOut, m, last, blockDx, 0);
      await b2.submit();
      assert.ok(relativeError(await rt.read(y), yRef) < TOLERANCE.f32, `${what}: y`);
      assert.ok(relativeError(await rt.read(dx), dxRef) < TOLERANCE.f32, `${what}: dx`);
      const gRef = new Float32Array(ids.length * cols);
      ids.forEach((id, i) => gRef.set(w.subarray(id * cols, (id + 1) * cols), i * cols));
      assert.deepEqual(await rt.read(gathered), gRef, `${what}: gather`);
      const nRef = Array.from(
        { length: rows },
        (_, r) => Math.hypot(...w.subarray(r * cols, (r + 1) * cols)),
      );
      assert.ok(relativeError(await rt.read(norms), nRef) < TOLERANCE.f32, `${what}: norms`);
      const wb = w.subarray(lb.rowStart * cols);
      const boRef = new Float64Array(tokens * lb.weight.rows);
      matmulCpu(x, wb, boRef, { m: tokens, n: lb.weight.rows, k: cols, transB: true });
      const bo = await rt.read(blockOut) as Float32Array;
      assert.ok(relativeError(bo, boRef) < TOLERANCE.f32, `${what}: block matmul`);
      const bdRef = new Float64Array(tokens * cols);
      matmulCpu(bo, wb, bdRef, { m: tokens, n: cols, k: lb.weight.rows });
      assert.ok(relativeError(await rt.read(blockDx), bdRef) < TOLERANCE.f32, `${what}: block dx`);
      m.release();
    }
  }
}

Deno.test("frozen matrix: blocked matmuls, gathers, norms and dequantized copies equal the host references", async () => {
  await checkBlockedFrozen(await testRuntime(), 5);
});

Deno.test("frozen matrix: the same with the GPU kernel variants (workgroup tiles, 11 tokens)", async () => {
  await checkBlockedFrozen(await testRuntime({ target: "gpu" }), 11);
});
