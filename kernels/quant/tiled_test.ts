/**
 * The GPU workgroup-tiled frozen matmuls (kernels/quant/tiled.ts), forced on whatever adapter runs
 * the tests, against dequantize-then-matmul in float64: every storage format, token counts and
 * widths that are not tile multiples, several tiles per dimension, NaN-poisoned outputs, and a
 * mutated kernel that must fail the same comparison.
 */
import assert from "node:assert/strict";
import { matmulCpu } from "../cpu/matmul.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { dequantizeNf4, quantizeNf4 } from "./nf4.ts";
import {
  quantMatmul,
  quantMatmulBackward,
  quantParams,
  quantTileFor,
  uploadF32Weight,
  uploadQuantized,
} from "./qmatmul.ts";
import {
  chooseTile,
  type QuantTileConfig,
  quantTiledWgsl,
  TILE_FEW,
  TILE_LARGE,
  TILE_MEDIUM,
} from "./tiled.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import { STORED_FORMATS, type StoredWeightMaker, testWeights } from "./testing.ts";

type Maker = StoredWeightMaker;

const FORMATS: [string, Maker][] = ["nf4", "nf4+dq", "int4-g32", "int4-g128", "bf16", "f16"].map((
  n,
) => [n, STORED_FORMATS[n]]);

/** A tile small enough that the shapes below span several tiles in every dimension. */
const TILE_SMALL: QuantTileConfig = { bm: 8, bn: 16, bk: 8, tm: 4, tn: 4 };
/** Rows and columns per invocation in two chunks each (the 8 × 8 layout of the large tile). */
const TILE_CHUNKED: QuantTileConfig = { bm: 16, bn: 32, bk: 16, tm: 8, tn: 8 };

// [tokens, rows (out), cols (in)]: 1, 7 and 129 tokens; widths not multiples of 8, 4 or any tile.
const SHAPES: [number, number, number][] = [
  [1, 37, 200],
  [7, 33, 77],
  [129, 41, 96],
  [13, 130, 64],
];

/** y = α·x·Wᵀ + β·prev and dx = dy·W through the tiled kernels, against float64. */
async function checkTiled(
  rt: GpuRuntime,
  name: string,
  make: Maker,
  tile: QuantTileConfig,
  [tokens, rows, cols]: [number, number, number],
  seed: number,
): Promise<void> {
  const { gw, dense } = make(rt, testWeights(rows * cols, seed), rows, cols);
  const x = randomF32(tokens * cols, seed + 1);
  const dy = randomF32(tokens * rows, seed + 2);
  const prev = randomF32(tokens * rows, seed + 3);
  const what = `${name} ${tokens}×${rows}×${cols} tile ${JSON.stringify(tile)}`;

  const yRef = Float64Array.from(prev);
  matmulCpu(x, dense, yRef, { m: tokens, n: rows, k: cols, transB: true, alpha: 0.5, beta: 1 });
  const y = rt.upload(prev, [tokens, rows]);
  await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, { out: y, alpha: 0.5, beta: 1, tile });
  const errY = relativeError(await rt.read(y), yRef);
  assert.ok(errY < TOLERANCE.f32, `${what}: forward ${errY}`);

  const y0 = rt.empty([tokens, rows]);
  rt.fill(y0, NaN); // β = 0 must overwrite, never read, the output
  await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, { out: y0, tile });
  const y0Ref = new Float64Array(tokens * rows);
  matmulCpu(x, dense, y0Ref, { m: tokens, n: rows, k: cols, transB: true });
  assert.ok(relativeError(await rt.read(y0), y0Ref) < TOLERANCE.f32, `${what}: forward β = 0`);

  const dx = rt.empty([tokens, cols]);
  rt.fill(dx, NaN);
  await quantMatmulBackward(rt, rt.upload(dy, [tokens, rows]), gw, { out: dx, tile });
  const dxRef = new Float64Array(tokens * cols);
  matmulCpu(dy, dense, dxRef, { m: tokens, n: cols, k: rows });
  const errX = relativeError(await rt.read(dx), dxRef);
  assert.ok(errX < TOLERANCE.f32, `${what}: backward ${errX}`);
  gw.release();
}

for (const [name, make] of FORMATS) {
  Deno.test(`tiled frozen matmul ${name}: forward and backward equal float64 on odd shapes`, async () => {
    const rt = await testRuntime({ target: "gpu" });
    let seed = 1000;
    for (const shape of SHAPES) {
      for (const tile of [TILE_SMALL, TILE_CHUNKED]) {
        await checkTiled(rt, name, make, tile, shape, seed);
        seed += 10;
      }
    }
  });
}

Deno.test("tiled frozen matmul: the production tiles and the f32 format equal float64", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const f32: Maker = (rt, w, r, c) => ({ gw: uploadF32Weight(rt, w, r, c), dense: w });
  let seed = 2000;
  for (const tile of [TILE_FEW, TILE_MEDIUM, TILE_LARGE]) {
    await checkTiled(rt, "nf4", FORMATS[0][1], tile, [129, 130, 200], seed);
    await checkTiled(rt, "f32", f32, tile, [9, 40, 72], seed + 5);
    seed += 10;
  }
});

Deno.test("tiled frozen matmul: a column window of a wider output and dy", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const [tokens, rows, cols, width, offset] = [11, 24, 40, 60, 28];
  const { gw, dense } = FORMATS[0][1](rt, testWeights(rows * cols, 5), rows, cols);
  const x = randomF32(tokens * cols, 6);
  const wide = randomF32(tokens * width, 7);
  const yRef = Float64Array.from(wide);
  const block = new Float64Array(tokens * rows);
  matmulCpu(x, dense, block, { m: tokens, n: rows, k: cols, transB: true });
  for (let t = 0; t < tokens; t++) {
    for (let o = 0; o < rows; o++) yRef[t * width + offset + o] = block[t * rows + o];
  }
  const y = rt.upload(wide, [tokens, width]);
  await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, {
    out: y,
    outStride: width,
    outOffset: offset,
    tile: TILE_SMALL,
  });
  assert.ok(relativeError(await rt.read(y), yRef) < TOLERANCE.f32, "forward window");
  // Backward from the same window of a wide dy (offset 28 is not a multiple of 8: scalar loads).
  for (const off of [offset, 30]) {
    const window = new Float32Array(tokens * rows);
    for (let t = 0; t < tokens; t++) {
      for (let o = 0; o < rows; o++) window[t * rows + o] = wide[t * width + off + o];
    }
    const dxRef = new Float64Array(tokens * cols);
    matmulCpu(window, dense, dxRef, { m: tokens, n: cols, k: rows });
    const dx = rt.empty([tokens, cols]);
    rt.fill(dx, NaN);
    await quantMatmulBackward(rt, rt.upload(wide, [tokens, width]), gw, {
      out: dx,
      outStride: width,
      outOffset: off,
      tile: TILE_SMALL,
    });
    assert.ok(relativeError(await rt.read(dx), dxRef) < TOLERANCE.f32, `backward window ${off}`);
  }
});

Deno.test("tiled frozen matmul: variants choose the tile; CPU adapters keep their kernels", async () => {
  const gpu = await testRuntime({ target: "gpu" });
  const cpu = await testRuntime({ target: "cpu-adapter" });
  assert.equal(quantTileFor(cpu, 1024, 4096), null);
  assert.equal(quantTileFor(gpu, 1, 4096), null); // a matrix-vector product
  assert.deepEqual(quantTileFor(gpu, 1024, 4096), chooseTile(1024, 4096, 16384));
  assert.deepEqual(chooseTile(1024, 14336, 16384), TILE_LARGE);
  assert.deepEqual(chooseTile(40, 4096, 16384), TILE_MEDIUM);
  assert.deepEqual(chooseTile(9, 4096, 16384), TILE_FEW);
  assert.equal(chooseTile(9, 4096, 8192), null); // no tile fits 8 KiB of workgroup memory
  await assert.rejects(
    quantMatmul(
      gpu,
      gpu.upload(randomF32(64, 1), [1, 64]),
      uploadF32Weight(gpu, randomF32(512, 2), 8, 64),
      {
        tile: { bm: 8, bn: 12, bk: 8, tm: 4, tn: 4 },
      },
    ),
    /multiples of 8/,
  );
});

Deno.test("tiled frozen matmul: a mutated kernel fails the float64 comparison", async () => {
  // The negative control: the same comparison as above, run on the tiled forward with one
  // accumulation dropped and on the backward with one weight of each group zeroed, must fail.
  const rt = await testRuntime({ target: "gpu" });
  const [tokens, rows, cols] = [9, 20, 64];
  const q = quantizeNf4(testWeights(rows * cols, 3), rows, cols);
  const gw = uploadQuantized(rt, q);
  const dense = dequantizeNf4(q);
  const x = randomF32(tokens * cols, 4);
  const dy = randomF32(tokens * rows, 5);
  const mutations: [string, "forward" | "backward", (code: string) => string][] = [
    [
      "dropped accumulation",
      "forward",
      (c) => c.replace(/acc0_1_0 = fma\([^;]*;/, "acc0_1_0 = acc0_1_0;"),
    ],
    [
      "zeroed weight",
      "backward",
      (c) => c.replace("return G8(vec4<f32>(nf4Level", "return G8(vec4<f32>(0.0 * nf4Level"),
    ],
  ];
  for (const [what, mode, mutate] of mutations) {
    const code = quantTiledWgsl("nf4", mode, TILE_SMALL, true, "");
    const mutated = mutate(code);
    assert.notEqual(mutated, code, `${what}: the mutation must apply`);
    for (const [wgsl, expectOk] of [[code, true], [mutated, false]] as const) {
      const fwd = mode === "forward";
      const out = rt.empty([tokens, fwd ? rows : cols]);
      rt.fill(out, NaN);
      const pipeline = await rt.pipelines.get(wgsl, `negative-control/${what}`);
      const batch = rt.batch();
      batch.dispatch(
        pipeline,
        [
          batch.uniform(quantParams(gw, tokens, 1, 0, rows, 0)),
          gw.packed.buffer,
          gw.scales.buffer,
          gw.aux.buffer,
          rt.upload(fwd ? x : dy, [tokens, fwd ? cols : rows]).binding,
          out.binding,
        ],
        [Math.ceil((fwd ? rows : cols) / TILE_SMALL.bn), Math.ceil(tokens / TILE_SMALL.bm)],
        "negative-control",
      );
      await batch.submit();
      const ref = new Float64Array(tokens * (fwd ? rows : cols));
      if (fwd) matmulCpu(x, dense, ref, { m: tokens, n: rows, k: cols, transB: true });
      else matmulCpu(dy, dense, ref, { m: tokens, n: cols, k: rows });
      const err = relativeError(await rt.read(out), ref);
      assert.equal(
        err < TOLERANCE.f32,
        expectOk,
        `${what} (${expectOk ? "intact" : "mutated"}): ${err}`,
      );
    }
  }
  gw.release();
});

Deno.test("tiled frozen matmul: an epilogue's terms land on the right outputs (vec4 and scalar input)", async () => {
  // e(t, o) = c[o]·x[t, (3·o) mod K] + t: reads the product's input through the kernel's
  // inputAt (and inputVec4 where x is read as vec4s) and its own binding, at the window's column.
  const rt = await testRuntime({ target: "gpu" });
  for (const [tokens, rows, cols] of [[9, 20, 64], [13, 12, 77]] as const) {
    const { gw, dense } = FORMATS[0][1](rt, testWeights(rows * cols, 8), rows, cols);
    const x = randomF32(tokens * cols, 9);
    const c = randomF32(rows, 10);
    const cg = rt.upload(c, [rows]);
    const epilogue = {
      name: "test",
      wgsl: (first: number, vectorInput: boolean) =>
        `@group(0) @binding(${first}) var<storage, read> e_c: array<f32>;
fn epilogue(t: u32, o: u32) -> f32 {
  ${vectorInput ? "_ = inputVec4(t, 0u);" : ""}
  return e_c[o] * inputAt(t, (3u * o) % ${cols}u) + f32(t);
}`,
      bindings: () => [cg.binding],
    };
    const y = rt.empty([tokens, rows]);
    rt.fill(y, NaN);
    await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, { out: y, tile: TILE_SMALL, epilogue });
    const ref = new Float64Array(tokens * rows);
    matmulCpu(x, dense, ref, { m: tokens, n: rows, k: cols, transB: true });
    for (let t = 0; t < tokens; t++) {
      for (let o = 0; o < rows; o++) ref[t * rows + o] += c[o] * x[t * cols + (3 * o) % cols] + t;
    }
    const err = relativeError(await rt.read(y), ref);
    assert.ok(err < TOLERANCE.f32, `${tokens}×${rows}×${cols}: ${err}`);
    gw.release();
  }
});
