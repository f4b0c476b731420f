import assert from "node:assert/strict";
import { matmulCpu, type MatmulSpec, resolveMatmulSpec } from "../cpu/matmul.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import {
  CPU_ADAPTER_MATMUL,
  CPU_ADAPTER_MATMUL_SMALL,
  GPU_MATMUL,
  GPU_MATMUL_LARGE,
  matmul,
  matmulParams,
  NAIVE_MATMUL,
} from "./matmul.ts";
import { kernelName, type MatmulKernelConfig, matmulWgsl, workgroupTile } from "./wgsl.ts";

const KERNELS: MatmulKernelConfig[] = [
  NAIVE_MATMUL,
  CPU_ADAPTER_MATMUL,
  CPU_ADAPTER_MATMUL_SMALL,
  GPU_MATMUL,
  { kind: "register", tm: 4, tn: 8, wx: 2, wy: 3 }, // vec4 reads on both operands, odd groups
  { kind: "register", tm: 3, tn: 5, wx: 4, wy: 2 }, // odd tiles: exercises every edge path
  { kind: "shared", tm: 2, tn: 3, wx: 8, wy: 4, bk: 7 },
  GPU_MATMUL_LARGE,
  { kind: "shared", tm: 8, tn: 4, wx: 2, wy: 3, bk: 5 }, // vec4 chunks, odd workgroup and bk
];

// Each odd size appears as m, n and k somewhere; 513 crosses several 64-wide tiles.
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [3, 17, 1],
  [17, 1, 3],
  [255, 3, 17],
  [1, 255, 513],
  [513, 17, 255],
  [17, 513, 3],
  [12, 20, 8], // multiples of 4: the vec4 paths
  [36, 516, 68],
  [20, 5, 44],
];

let seed = 1;

async function check(spec: MatmulSpec, kernel: MatmulKernelConfig): Promise<void> {
  const rt = await testRuntime();
  const batch = spec.batch ?? 1;
  const { m, n, k } = spec;
  const aData = randomF32((spec.broadcastA ? 1 : batch) * m * k, seed++);
  const bData = randomF32((spec.broadcastB ? 1 : batch) * k * n, seed++);
  const outBatch = batch / (spec.reduceBatch ?? 1);
  const cInit = randomF32(outBatch * m * n, seed++);
  const a = rt.upload(aData, [aData.length]);
  const b = rt.upload(bData, [bData.length]);
  const c = rt.empty([outBatch, m, n]);
  // Poison: beta = 0 must overwrite NaN; beta ≠ 0 starts from known values.
  if ((spec.beta ?? 0) === 0) rt.fill(c, NaN);
  else rt.write(c, cInit);
  try {
    await matmul(rt, a, b, spec, { out: c, kernel });
    const out = await rt.read(c);
    const ref = new Float64Array(cInit);
    matmulCpu(aData, bData, ref, spec, "f64");
    const err = relativeError(out, ref);
    assert.ok(
      err < TOLERANCE.f32,
      `${kernelName(kernel)} ${JSON.stringify(spec)}: relative error ${err} ≥ ${TOLERANCE.f32}`,
    );
  } finally {
    a.release();
    b.release();
    c.release();
  }
}

for (const kernel of KERNELS) {
  Deno.test(`matmul ${kernelName(kernel)}: odd sizes × transposes vs CPU reference`, async () => {
    for (const [m, n, k] of SIZES) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          // 513 on every axis at once costs seconds on the naive kernel; skip nothing else.
          await check({ m, n, k, transA, transB }, kernel);
        }
      }
    }
  });

  Deno.test(`matmul ${kernelName(kernel)}: batched, broadcast and fused C += αAB`, async () => {
    await check({ m: 17, n: 33, k: 9, batch: 3 }, kernel);
    await check({ m: 17, n: 33, k: 9, batch: 4, broadcastB: true, transB: true }, kernel);
    await check({ m: 5, n: 7, k: 65, batch: 2, broadcastA: true, transA: true }, kernel);
    await check({ m: 31, n: 29, k: 37, alpha: -0.75, beta: 1 }, kernel);
    await check({ m: 31, n: 29, k: 37, batch: 2, alpha: 2, beta: 0.5, transA: true }, kernel);
  });

  Deno.test(`matmul ${kernelName(kernel)}: batch-reduce sums groups of entries`, async () => {
    await check({ m: 17, n: 12, k: 9, batch: 6, reduceBatch: 3 }, kernel);
    // Each layout is a pipeline to compile; the 16×16 kernel takes seconds per pipeline here.
    if (kernel === CPU_ADAPTER_MATMUL) return;
    await check({ m: 8, n: 20, k: 12, batch: 5, reduceBatch: 5, transB: true, beta: 1 }, kernel);
    await check({
      m: 12,
      n: 7,
      k: 16,
      batch: 4,
      reduceBatch: 2,
      broadcastA: true,
      transA: true,
    }, kernel);
  });
}

Deno.test("matmul: K = 0 gives beta·C; empty M is a no-op", async () => {
  const rt = await testRuntime();
  const a = rt.upload(new Float32Array(0), [0]);
  const b = rt.upload(new Float32Array(0), [0]);
  const c = rt.upload(new Float32Array([1, 2, 3, 4]), [2, 2]);
  await matmul(rt, a, b, { m: 2, n: 2, k: 0, beta: 0.5 }, { out: c });
  assert.deepEqual([...await rt.read(c)], [0.5, 1, 1.5, 2]);
  const empty = await matmul(rt, a, b, { m: 0, n: 2, k: 0 });
  assert.deepEqual(empty.shape, [1, 0, 2]);
  assert.equal((await rt.read(empty)).length, 0);
});

Deno.test("matmul: mismatched operands are rejected with the operand named", async () => {
  assert.throws(
    () => matmulCpu([], [], new Float64Array(0), { m: 0, n: 0, k: 0, batch: 4, reduceBatch: 3 }),
    /reduceBatch=3 must be a positive integer dividing batch=4/,
  );
  const rt = await testRuntime();
  const a = rt.upload(randomF32(6, 9), [2, 3]);
  const b = rt.upload(randomF32(6, 10), [3, 2]);
  await assert.rejects(
    matmul(rt, a, b, { m: 2, n: 2, k: 4 }),
    /operand A has 6 elements, expected 8/,
  );
  await assert.rejects(
    matmul(rt, a, b, { m: 2, n: 2, k: 3, beta: 1 }),
    /options.out must be given/,
  );
  await assert.rejects(
    matmul(rt, a, b, { m: 2, n: 2, k: 3 }, { out: a }),
    /operand C has 6 elements, expected 4/,
  );
  const square = rt.upload(randomF32(4, 11), [2, 2]);
  await assert.rejects(
    matmul(rt, square, square, { m: 2, n: 2, k: 2 }, { out: square }),
    /C must not alias A or B/,
  );
  const u = rt.upload(new Uint32Array(6), [6]);
  await assert.rejects(matmul(rt, u, b, { m: 2, n: 2, k: 3 }), /expected dtype f32, got u32/);
});

Deno.test("matmul: the default kernel for narrow outputs (tall-thin tiles) is right", async () => {
  const rt = await testRuntime();
  for (
    const spec of [
      { m: 200, n: 24, k: 40, batch: 3 },
      { m: 24, n: 200, k: 33, batch: 2, transA: true },
      { m: 301, n: 47, k: 20, batch: 2, transB: true }, // the 16×8 block for 33–64 wide outputs
    ]
  ) {
    const s = { transA: false, transB: false, ...spec, broadcastA: false };
    const a = randomF32(s.batch * s.m * s.k, 1);
    const b = randomF32(s.batch * s.k * s.n, 2);
    const c = await matmul(rt, rt.upload(a, [a.length]), rt.upload(b, [b.length]), s);
    const ref = new Float64Array(s.batch * s.m * s.n);
    matmulCpu(a, b, ref, s);
    assert.ok(relativeError(await rt.read(c), ref) < TOLERANCE.f32, JSON.stringify(spec));
  }
});

Deno.test("matmul: a mutated GPU shared kernel fails the float64 comparison (negative control)", async () => {
  // The chunked shared kernel with one accumulation dropped, dispatched as matmul() would: the
  // comparison that passes for the intact kernel must fail for the mutated one.
  const rt = await testRuntime();
  const spec = resolveMatmulSpec({ m: 37, n: 41, k: 29, transB: true });
  const aData = randomF32(spec.m * spec.k, 91);
  const bData = randomF32(spec.k * spec.n, 92);
  const ref = new Float64Array(spec.m * spec.n);
  matmulCpu(aData, bData, ref, spec, "f64");
  const layout = { transA: false, transB: true, reduce: false };
  const code = matmulWgsl(GPU_MATMUL, layout);
  const mutated = code.replace(/acc0_2_0 = fma\([^;]*;/, "acc0_2_0 = acc0_2_0;");
  assert.notEqual(mutated, code, "the mutation must apply");
  const tile = workgroupTile(GPU_MATMUL);
  for (const [wgsl, intact] of [[code, true], [mutated, false]] as const) {
    const c = rt.empty([spec.m, spec.n]);
    rt.fill(c, NaN);
    const batch = rt.batch();
    batch.dispatch(
      await rt.pipelines.get(wgsl, "matmul/negative-control"),
      [
        batch.uniform(matmulParams(spec)),
        rt.upload(aData, [aData.length]).binding,
        rt.upload(bData, [bData.length]).binding,
        c.binding,
      ],
      [Math.ceil(spec.n / tile.cols), Math.ceil(spec.m / tile.rows), 1],
      "matmul/negative-control",
    );
    await batch.submit();
    const err = relativeError(await rt.read(c), ref);
    assert.equal(err < TOLERANCE.f32, intact, `${intact ? "intact" : "mutated"}: ${err}`);
  }
});
