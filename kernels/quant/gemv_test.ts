/**
 * The GPU matrix–vector kernel (kernels/quant/gemv.ts), forced on the test adapter, against
 * dequantize-then-matmul in float64: every storage format, 1, 3 and 8 tokens, widths that are not
 * multiples of the workgroup's stride, the subgroup and the workgroup-memory reductions, an
 * epilogue, NaN-poisoned outputs, and a mutated kernel that must fail.
 */
import assert from "node:assert/strict";
import { matmulCpu } from "../cpu/matmul.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { dequantizeNf4, quantizeNf4 } from "./nf4.ts";
import { quantGemvFor, quantMatmul, quantParams, uploadQuantized } from "./qmatmul.ts";
import { type QuantGemvConfig, quantGemvWgsl } from "./gemv.ts";
import { STORED_FORMATS, type StoredWeightMaker, testWeights } from "./testing.ts";

type Maker = StoredWeightMaker;

const FORMATS: [string, Maker][] = ["nf4", "nf4+dq", "int4-g32", "f16", "f32"].map((
  n,
) => [n, STORED_FORMATS[n]]);

// [rows, cols]: cols of 1 to several strides of the workgroup (8 columns per invocation), not
// multiples of 8 or 4 where the format allows; rows not multiples of the rows per workgroup.
const SHAPES: [number, number][] = [[37, 200], [9, 77], [21, 1096], [3, 8]];

const CONFIGS: QuantGemvConfig[] = [
  { rows: 4, wg: 64, subgroups: false },
  { rows: 8, wg: 128, subgroups: true },
  { rows: 3, wg: 16, subgroups: true },
];

for (const [name, make] of FORMATS) {
  Deno.test(`gemv ${name}: 1, 3 and 8 tokens equal float64 (subgroup and tree reductions)`, async () => {
    const rt = await testRuntime({ target: "gpu" });
    let seed = 500;
    for (const [rows, cols] of SHAPES) {
      if (name === "f32" && cols % 8 !== 0) continue; // f32 rows are whole groups of 8
      const { gw, dense } = make(rt, testWeights(rows * cols, seed++), rows, cols);
      for (const tokens of [1, 3, 8]) {
        const x = randomF32(tokens * cols, seed++);
        const prev = randomF32(tokens * rows, seed++);
        for (const gemv of name === "nf4" ? CONFIGS : CONFIGS.slice(0, 2)) {
          const what = `${name} ${tokens}×${rows}×${cols} ${JSON.stringify(gemv)}`;
          const y = rt.upload(prev, [tokens, rows]);
          await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, {
            out: y,
            alpha: 0.5,
            beta: 1,
            gemv,
          });
          const ref = Float64Array.from(prev);
          matmulCpu(x, dense, ref, {
            m: tokens,
            n: rows,
            k: cols,
            transB: true,
            alpha: 0.5,
            beta: 1,
          });
          const err = relativeError(await rt.read(y), ref);
          assert.ok(err < TOLERANCE.f32, `${what}: ${err}`);
        }
        const y0 = rt.empty([tokens, rows]);
        rt.fill(y0, NaN);
        await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, { out: y0, gemv: CONFIGS[1] });
        const ref0 = new Float64Array(tokens * rows);
        matmulCpu(x, dense, ref0, { m: tokens, n: rows, k: cols, transB: true });
        assert.ok(relativeError(await rt.read(y0), ref0) < TOLERANCE.f32, `${name} β = 0`);
      }
      gw.release();
    }
  });
}

Deno.test("gemv: the variants choose it for 1–7 tokens on GPUs, never on CPU adapters", async () => {
  const gpu = await testRuntime({ target: "gpu" });
  const tree = await testRuntime({ target: "gpu", subgroups: false });
  const cpu = await testRuntime({ target: "cpu-adapter" });
  assert.equal(quantGemvFor(cpu, 1), null);
  assert.equal(quantGemvFor(gpu, 8), null); // the tiled kernel's
  assert.equal(quantGemvFor(gpu, 1)?.subgroups, gpu.variants.subgroups);
  assert.equal(quantGemvFor(tree, 4)?.subgroups, false);
});

Deno.test("gemv: an epilogue's terms land on the right outputs of a column window", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const [tokens, rows, cols, width, offset] = [3, 10, 64, 24, 8];
  const q = quantizeNf4(testWeights(rows * cols, 41), rows, cols);
  const gw = uploadQuantized(rt, q);
  const dense = dequantizeNf4(q);
  const x = randomF32(tokens * cols, 42);
  const c = randomF32(width, 43);
  const cg = rt.upload(c, [width]);
  const epilogue = {
    name: "test",
    wgsl: (first: number) =>
      `@group(0) @binding(${first}) var<storage, read> e_c: array<f32>;
fn epilogue(t: u32, o: u32) -> f32 { return e_c[o] * inputAt(t, (5u * o) % ${cols}u) + f32(t); }`,
    bindings: () => [cg.binding],
  };
  const wide = randomF32(tokens * width, 44);
  const ref = Float64Array.from(wide);
  const block = new Float64Array(tokens * rows);
  matmulCpu(x, dense, block, { m: tokens, n: rows, k: cols, transB: true });
  for (let t = 0; t < tokens; t++) {
    for (let o = 0; o < rows; o++) {
      const col = offset + o;
      ref[t * width + col] = block[t * rows + o] + c[col] * x[t * cols + (5 * col) % cols] + t;
    }
  }
  for (const gemv of CONFIGS) {
    const y = rt.upload(wide, [tokens, width]);
    await quantMatmul(rt, rt.upload(x, [tokens, cols]), gw, {
      out: y,
      outStride: width,
      outOffset: offset,
      gemv,
      epilogue,
    });
    const err = relativeError(await rt.read(y), ref);
    assert.ok(err < TOLERANCE.f32, `${JSON.stringify(gemv)}: ${err}`);
  }
  gw.release();
});

Deno.test("gemv: a mutated kernel fails the float64 comparison (negative control)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const [tokens, rows, cols] = [3, 12, 200];
  const q = quantizeNf4(testWeights(rows * cols, 51), rows, cols);
  const gw = uploadQuantized(rt, q);
  const dense = dequantizeNf4(q);
  const x = randomF32(tokens * cols, 52);
  const ref = new Float64Array(tokens * rows);
  matmulCpu(x, dense, ref, { m: tokens, n: rows, k: cols, transB: true });
  for (const gemv of [CONFIGS[0], CONFIGS[1]]) {
    const code = quantGemvWgsl("nf4", gemv, tokens, true, "", "");
    // The tree drops its partner's sum for one value; the subgroup path drops one subgroup slot.
    const mutated = gemv.subgroups
      ? code.replace("sum += red[v * ", "sum += 0.0 * red[v * ")
      : code.replace(/red\[0u \+ li\] \+= [^;]*;/, "");
    assert.notEqual(mutated, code, "the mutation must apply");
    for (const [wgsl, intact] of [[code, true], [mutated, false]] as const) {
      const y = rt.empty([tokens, rows]);
      rt.fill(y, NaN);
      const batch = rt.batch();
      batch.dispatch(
        await rt.pipelines.get(wgsl, "gemv/negative-control"),
        [
          batch.uniform(quantParams(gw, tokens, 1, 0, rows, 0)),
          gw.packed.buffer,
          gw.scales.buffer,
          gw.aux.buffer,
          rt.upload(x, [tokens, cols]).binding,
          y.binding,
        ],
        [Math.ceil(rows / gemv.rows), 1],
        "gemv/negative-control",
      );
      await batch.submit();
      const err = relativeError(await rt.read(y), ref);
      assert.equal(err < TOLERANCE.f32, intact, `${JSON.stringify(gemv)} ${intact}: ${err}`);
    }
  }
  gw.release();
});
