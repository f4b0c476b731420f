/**
 * The contract every adapter keeps: ΔW = 0 at init, merge(W)·x = forward(x), float64 gradients
 * equal central finite differences, and the GPU layer equals the float64 reference.
 */
import assert from "node:assert/strict";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../../kernels/testing/mod.ts";
import type { Adapter, F64Params } from "./adapter.ts";
import { DoraAdapter } from "./dora/layer.ts";
import { factorization } from "./lokr/config.ts";
import { type AdapterConfig, createAdapter, parseAdapterConfig } from "./registry.ts";
import { finiteDifferenceError, gpuVsCpu, randomizeParams } from "./testing.ts";

const D_IN = 12;
const D_OUT = 10;

const CONFIGS: unknown[] = [
  { kind: "moka", components: [[2, 3], [5, 2]], scale: 0.5 },
  { kind: "krona", a: [2, 4], scale: 1.5 },
  { kind: "krona", a: [5, 3], zeroInit: "B" },
  { kind: "lokr", r: 8, alpha: 4 }, // full w1, w2 (r ≥ max/2)
  { kind: "lokr", r: 1, alpha: 2, decomposeBoth: true }, // low-rank w2 and w1
  { kind: "lora", r: 3, alpha: 6 },
  { kind: "lora", r: 2, alpha: 2, init: "gaussian", dropout: 0.25 },
  { kind: "dora", r: 3, alpha: 6 },
  { kind: "dora", r: 2, alpha: 3, detachNorm: false },
  { kind: "lora", r: 3, alpha: 6, rslora: true },
  { kind: "dora", r: 3, alpha: 6, dropout: 0.2 }, // NVlabs/DoRA's form under dropout
  { kind: "dora", r: 2, alpha: 3, detachNorm: false, dropout: 0.2, rslora: true },
];

function build(config: unknown, dIn = D_IN, dOut = D_OUT, seed = 1): Adapter<AdapterConfig> {
  return createAdapter(config, dIn, dOut, seed, randomF32(dIn * dOut, 99));
}

function denseForward(w: Float64Array, x: Float64Array, tokens: number, dIn: number, dOut: number) {
  const y = new Float64Array(tokens * dOut);
  for (let t = 0; t < tokens; t++) {
    for (let o = 0; o < dOut; o++) {
      for (let i = 0; i < dIn; i++) y[t * dOut + o] += w[o * dIn + i] * x[t * dIn + i];
    }
  }
  return y;
}

Deno.test("adapters: ΔW = 0 at init and merge(W)·x = forward(x)", () => {
  for (const config of CONFIGS) {
    const a = build(config);
    const w = Float64Array.from(randomF32(D_IN * D_OUT, 99));
    const merged0 = a.math.merged(a.paramsF64(), w);
    // Exact except DoRA, whose magnitude ‖W‖ is stored in f32.
    assert.ok(relativeError(merged0, w) < 1e-7, `${JSON.stringify(config)}: ΔW ≠ 0 at init`);
    randomizeParams(a, 4);
    const x = Float64Array.from(randomF32(5 * D_IN, 6));
    const merged = a.math.merged(a.paramsF64(), w);
    assert.ok(relativeError(merged, w) > 1e-3, "random params must change W");
    const err = relativeError(
      a.math.forward(a.paramsF64(), w, x, 5),
      denseForward(merged, x, 5, D_IN, D_OUT),
    );
    assert.ok(err < 1e-12, `${JSON.stringify(config)}: merge vs forward ${err}`);
    // The f32 entry point agrees.
    const m32 = a.merge(Float32Array.from(w));
    assert.ok(relativeError(m32, merged) < 1e-6);
  }
});

Deno.test("adapters: float64 gradients equal central finite differences", () => {
  for (const config of CONFIGS) {
    const a = build(config);
    randomizeParams(a, 8);
    const pass = { train: true, dropoutSeed: 1234 };
    const surrogate = a instanceof DoraAdapter && a.config.detachNorm
      ? (p: F64Params, w: Float64Array) => a.detachedSurrogate(p, w)
      : undefined;
    const fd = finiteDifferenceError(a, 3, 17, pass, { surrogate });
    assert.ok(fd.worst < 1e-7, `${JSON.stringify(config)}: ∂/∂${fd.name} off by ${fd.worst}`);
  }
});

Deno.test("adapters: a wrong gradient fails the finite-difference check", () => {
  const a = build(CONFIGS[5]);
  randomizeParams(a, 8);
  const math = a.math;
  const broken = Object.create(a) as typeof a;
  Object.defineProperty(broken, "math", {
    get: () => ({
      ...math,
      backward: (...args: Parameters<typeof math.backward>) => {
        const g = math.backward(...args);
        g.grads.A[0] += 1e-3;
        return g;
      },
    }),
  });
  assert.ok(finiteDifferenceError(broken, 3, 17).worst > 1e-6);
  // And detaching DoRA's norm is a real difference: the true function's gradient differs.
  const d = build({ kind: "dora", r: 2, alpha: 3 });
  randomizeParams(d, 8);
  assert.ok(finiteDifferenceError(d, 3, 17).worst > 1e-3);
});

Deno.test("adapters: GPU forward/backward equal the float64 reference", async () => {
  const rt = await testRuntime();
  const cases: [unknown, number, number, number][] = [
    ...CONFIGS.map((c): [unknown, number, number, number] => [c, D_IN, D_OUT, 7]),
    [{ kind: "lokr", r: 4, alpha: 8, decomposeBoth: true }, 96, 80, 33],
    [{ kind: "lora", r: 8, alpha: 16, dropout: 0.1 }, 96, 64, 50],
    [{ kind: "dora", r: 8, alpha: 16 }, 64, 96, 40],
    [{ kind: "dora", r: 4, alpha: 4, detachNorm: false }, 48, 32, 12],
    [{ kind: "dora", r: 4, alpha: 8, dropout: 0.3, rslora: true }, 64, 48, 20],
    [{ kind: "dora", r: 3, alpha: 4, dropout: 0.3, detachNorm: false }, 48, 40, 9],
  ];
  for (const [config, dIn, dOut, tokens] of cases) {
    const a = build(config, dIn, dOut, 3);
    randomizeParams(a, 5);
    const errors = await gpuVsCpu(rt, a, tokens, 31, { train: true, dropoutSeed: 77 });
    for (const [name, e] of Object.entries(errors)) {
      assert.ok(e < TOLERANCE.f32, `${JSON.stringify(config)} ${dIn}→${dOut} ${name}: ${e}`);
    }
  }
});

Deno.test("dora: on NF4, int4 and bf16 bases forward, dx and every gradient equal float64 on the stored weights; no dOut×dIn buffer", async () => {
  const rt = await testRuntime();
  const [dIn, dOut, tokens] = [256, 384, 12];
  // LoRA of the same rank on the same base: what DoRA may hold beyond it is vectors and r-wide
  // factors, never a dOut × dIn matrix (393 kB here).
  const lora = build({ kind: "lora", r: 4, alpha: 8 }, dIn, dOut, 3);
  randomizeParams(lora, 6);
  const loraStats: { poolGrowth?: number } = {};
  await gpuVsCpu(rt, lora, tokens, 41, {}, {}, { base: "nf4", stats: loraStats });
  for (const base of ["nf4", "int4", "bf16"] as const) {
    for (const detachNorm of [true, false]) {
      const config = { kind: "dora", r: 4, alpha: 8, detachNorm };
      const a = build(config, dIn, dOut, 3);
      randomizeParams(a, 6);
      const stats: { poolGrowth?: number } = {};
      const errors = await gpuVsCpu(rt, a, tokens, 41, {}, {}, { base, stats });
      for (const [name, e] of Object.entries(errors)) {
        assert.ok(e < 2 * TOLERANCE.f32, `${base} detachNorm=${detachNorm} ${name}: ${e}`);
      }
      const extra = stats.poolGrowth! - loraStats.poolGrowth!;
      assert.ok(extra < (dIn * dOut * 4) / 4, `${base}: ${extra} bytes more than LoRA`);
    }
  }
});

Deno.test("lokr: factorization and layout follow PEFT", () => {
  assert.deepEqual(factorization(256), [16, 16]);
  assert.deepEqual(factorization(128), [8, 16]);
  assert.deepEqual(factorization(127), [1, 127]);
  assert.deepEqual(factorization(128, 4), [4, 32]);
  assert.deepEqual(factorization(4096), [64, 64]);
  assert.deepEqual(factorization(14336), [112, 128]);
  const a = build({ kind: "lokr", r: 8, alpha: 8 }, 4096, 4096);
  assert.deepEqual(a.specs().map((s) => `${s.name}:${s.shape}`), [
    "w1:64,64",
    "w2_a:64,8",
    "w2_b:8,64",
  ]);
});

Deno.test("adapters: bad configs name the field", () => {
  assert.throws(
    () => parseAdapterConfig({ kind: "lora", r: 0, alpha: 1 }),
    /^Error: adapter config: field r: /,
  );
  assert.throws(() => parseAdapterConfig({ kind: "lora", r: 2, alpha: 1, dropout: 1 }), /dropout/);
  assert.throws(() => parseAdapterConfig({ kind: "lora", r: 2, alpha: 1, rank: 3 }), /rank/);
  assert.throws(() => parseAdapterConfig({ kind: "ia3" }), /kind/);
  assert.throws(() => createAdapter({ kind: "dora", r: 2, alpha: 1 }, 4, 4, 1), /base weight/);
  assert.throws(() => build({ kind: "krona", a: [3, 5] }), /does not divide the 10×12 layer/);
});
