import assert from "node:assert/strict";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../../../kernels/testing/mod.ts";
import { kronForwardCpu, kronMaterializeCpu } from "../../../kernels/adapters/kron_cpu.ts";
import { finiteDifferenceError, gpuVsCpu, randomizeParams } from "../testing.ts";
import { MokaConfigSchema } from "./config.ts";
import { MokaAdapter } from "./layer.ts";
import { proposeMokaShapes } from "./shapes.ts";

// Non-square layer, components of different shapes (rank flexibility), non-square factors.
const CONFIG = { kind: "moka", components: [[2, 3], [4, 1], [1, 6]], scale: 0.7 };
const D_IN = 12;
const D_OUT = 8;

Deno.test("kron: the vec-trick equals the materialised A⊗B (and B⊗A would not)", () => {
  const s = { ma: 3, na: 2, mb: 2, nb: 5 };
  const a = Float64Array.from(randomF32(6, 1));
  const b = Float64Array.from(randomF32(10, 2));
  const x = Float64Array.from(randomF32(3 * 10, 3));
  const dense = new Float64Array(6 * 10);
  kronMaterializeCpu(a, b, s, 1, dense);
  // Independent definition of A⊗B by blocks: block (r, p) is A[r,p]·B.
  for (let r = 0; r < 3; r++) {
    for (let p = 0; p < 2; p++) {
      for (let c = 0; c < 2; c++) {
        for (let q = 0; q < 5; q++) {
          assert.equal(dense[(r * 2 + c) * 10 + p * 5 + q], a[r * 2 + p] * b[c * 5 + q]);
        }
      }
    }
  }
  const viaTrick = new Float64Array(3 * 6);
  kronForwardCpu(a, b, s, x, 3, 1, viaTrick);
  const viaDense = new Float64Array(3 * 6);
  const swapped = new Float64Array(3 * 6);
  const bkronA = new Float64Array(6 * 10); // B⊗A: [mb·ma, nb·na]
  for (let c = 0; c < 2; c++) {
    for (let q = 0; q < 5; q++) {
      for (let r = 0; r < 3; r++) {
        for (let p = 0; p < 2; p++) {
          bkronA[(c * 3 + r) * 10 + q * 2 + p] = b[c * 5 + q] * a[r * 2 + p];
        }
      }
    }
  }
  for (let t = 0; t < 3; t++) {
    for (let o = 0; o < 6; o++) {
      for (let i = 0; i < 10; i++) {
        viaDense[t * 6 + o] += dense[o * 10 + i] * x[t * 10 + i];
        swapped[t * 6 + o] += bkronA[o * 10 + i] * x[t * 10 + i];
      }
    }
  }
  assert.ok(relativeError(viaTrick, viaDense) < 1e-14);
  assert.ok(relativeError(viaTrick, swapped) > 0.1, "B⊗A must differ from A⊗B");
});

Deno.test("moka: ΔW = 0 at init, merge equals forward, gradients match finite differences", () => {
  for (
    const variant of [CONFIG, { ...CONFIG, gate: "frozen" }, {
      kind: "moka",
      components: [[2, 2], [4, 4]],
      identityA: true,
      zeroInit: "B",
    }]
  ) {
    const m = MokaAdapter.create(variant, D_IN, D_OUT, 5);
    const w = Float64Array.from(randomF32(D_OUT * D_IN, 9));
    assert.deepEqual(m.math.merged(m.paramsF64(), w), w, "ΔW = 0 at init");
    randomizeParams(m, 3);
    const x = Float64Array.from(randomF32(4 * D_IN, 4));
    const merged = m.math.merged(m.paramsF64(), w);
    const y = m.math.forward(m.paramsF64(), w, x, 4);
    const ref = new Float64Array(4 * D_OUT);
    for (let t = 0; t < 4; t++) {
      for (let o = 0; o < D_OUT; o++) {
        for (let i = 0; i < D_IN; i++) ref[t * D_OUT + o] += merged[o * D_IN + i] * x[t * D_IN + i];
      }
    }
    assert.ok(relativeError(y, ref) < 1e-13);
    const fd = finiteDifferenceError(m, 3, 11);
    assert.ok(fd.worst < 1e-7, `${JSON.stringify(variant)}: ${fd.name} off by ${fd.worst}`);
  }
});

Deno.test("moka: GPU forward/backward equal the float64 reference (fused and matmul kernels)", async () => {
  const rt = await testRuntime();
  for (
    const kernels of [
      { kernels: "fused" },
      { kernels: "fused", directForwardMacs: 0 },
      { kernels: "matmul" },
    ] as const
  ) {
    for (
      const [variant, dIn, dOut, tokens] of [
        [CONFIG, D_IN, D_OUT, 5],
        [{ kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 }, 64, 48, 37],
        [{ kind: "moka", components: [[4, 4], [8, 8]], identityA: true, zeroInit: "B" }, 32, 64, 9],
        [{ kind: "moka", components: [[8, 8], [16, 16]], gate: "frozen" }, 128, 128, 64],
      ] as const
    ) {
      const m = MokaAdapter.create(variant, dIn, dOut, 1);
      randomizeParams(m, 7);
      const errors = await gpuVsCpu(rt, m, tokens, 21, {}, kernels);
      for (const [name, e] of Object.entries(errors)) {
        assert.ok(
          e < TOLERANCE.f32,
          `${JSON.stringify(kernels)} ${JSON.stringify(variant)} ${name}: ${e}`,
        );
      }
    }
  }
});

Deno.test("moka: the forward as an epilogue of the base product equals the float64 reference (f32, NF4; vec4 and scalar; residual)", async () => {
  const rt = await testRuntime();
  // 12 → 8: odd widths, scalar input (NF4 only: the f32 kernels take 8-column rows); 64 → 48:
  // B rows of 8 and 32 read as vec4s (NF4 through the four-word kernel); MoKA_s 32 → 64; 40 → 24
  // with B rows of 5 (scalar terms beside a vec4 input). Tokens off the 4-token tile.
  const cases = [
    [CONFIG, D_IN, D_OUT],
    [{ kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 }, 64, 48],
    [{ kind: "moka", components: [[4, 4], [8, 8]], identityA: true, zeroInit: "B" }, 32, 64],
    [{ kind: "moka", components: [[8, 8], [3, 4]] }, 40, 24],
  ] as const;
  // NF4 for every shape (one token: the decode tile; 7 tokens into a residual: the 4×4 tile),
  // f32 (the same kernels' dense path) for one.
  const runs = [
    ...cases.flatMap((c) => [
      { c, base: "nf4" as const, tokens: 1, residual: false },
      { c, base: "nf4" as const, tokens: 7, residual: true },
    ]),
    { c: cases[1], base: "f32" as const, tokens: 7, residual: false },
  ];
  for (const { c: [variant, dIn, dOut], base, tokens, residual } of runs) {
    const m = MokaAdapter.create(variant, dIn, dOut, 1);
    randomizeParams(m, 9);
    const layerOptions = { kernels: "fused", directForwardMacs: Infinity } as const;
    const errors = await gpuVsCpu(rt, m, tokens, 23, {}, layerOptions, {
      base,
      epilogue: true,
      residual,
    });
    const what = `${base} ${JSON.stringify(variant)} ${tokens} tokens residual=${residual}`;
    assert.ok(errors.y < TOLERANCE.f32, `${what} y: ${errors.y}`);
  }
});

Deno.test("moka: token chunks under a small scratch budget give the same results (both kernels)", async () => {
  const rt = await testRuntime();
  for (
    const kernels of [
      { kernels: "fused" },
      { kernels: "fused", directForwardMacs: 0 },
      { kernels: "matmul" },
    ] as const
  ) {
    // scratchBytes 1 forces the smallest chunk (the rows that keep x/y windows at 256-byte
    // offsets: 4 tokens for 64 → 48, 2 for 32 → 64), so the last chunk is partial and odd; 24 KiB
    // at 128 → 128 gives 2 chunks. Gradients of ≤ 64×64 accumulate in two slots per chunk; the
    // 128×128 B of the last case accumulates in place. (MoKA_s has no per-token intermediates, so
    // it never chunks.)
    for (
      const [variant, dIn, dOut, tokens, scratchBytes] of [
        [{ kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 }, 64, 48, 37, 1],
        [{ kind: "moka", components: [[4, 4], [8, 8]], gate: "frozen" }, 32, 64, 9, 1],
        [{ kind: "moka", components: [[8, 8], [16, 16]] }, 128, 128, 64, 24 * 1024],
        [{ kind: "moka", components: [[2, 2], [16, 16]] }, 256, 256, 8, 4 * 1024],
      ] as const
    ) {
      const m = MokaAdapter.create(variant, dIn, dOut, 1);
      randomizeParams(m, 8);
      const errors = await gpuVsCpu(rt, m, tokens, 22, {}, { scratchBytes, ...kernels });
      for (const [name, e] of Object.entries(errors)) {
        assert.ok(
          e < TOLERANCE.f32,
          `${JSON.stringify(kernels)} ${JSON.stringify(variant)} chunked ${name}: ${e}`,
        );
      }
    }
  }
});

Deno.test("moka: config errors name the field; shapes must divide the layer", () => {
  assert.throws(() => MokaConfigSchema.parse({ kind: "moka", components: [] }), /components/);
  assert.throws(
    () => MokaConfigSchema.parse({ kind: "moka", components: [[2, 3]], identityA: true }),
    /square identity/,
  );
  assert.throws(() => MokaAdapter.create(CONFIG, 10, 8, 1), /component 0: A 2×3 does not divide/);
  const p = proposeMokaShapes(4096, 4096, 4 * 20000, 4);
  assert.equal(p.length, 4);
  assert.ok(p.every((s) => s.params <= 20000 && s.a[0] * s.b[0] === 4096));
  assert.equal(new Set(p.map((s) => s.a.join("x"))).size, 4, "distinct shapes");
  assert.throws(() => proposeMokaShapes(64, 64, 10, 2), /raise the budget/);
});
