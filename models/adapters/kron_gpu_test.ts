/**
 * The GPU kernel family of the Kronecker layer (`target: "gpu"`, forced on whatever adapter runs
 * the tests) against the float64 reference: shape-fitted product tiles, factor gradients split
 * over partial-sum slots (with and without a rest of single tokens), token chunks, both routes.
 * gpuVsCpu poisons y, dx and every gradient with NaN first, so anything left unwritten fails.
 */
import assert from "node:assert/strict";
import { testRuntime, TOLERANCE } from "../../kernels/testing/mod.ts";
import { sharedGpu } from "../../kernels/runtime/device.ts";
import { GpuRuntime } from "../../kernels/runtime/runtime.ts";
import type { Adapter } from "./adapter.ts";
import { createAdapter } from "./registry.ts";
import { gpuVsCpu, randomizeParams } from "./testing.ts";

type Case = {
  config: unknown;
  dIn: number;
  dOut: number;
  tokens: number;
  options?: Record<string, unknown>;
};

// Tokens 1, 7, 129 (129 = 3·43: 8 slots as 8 slices of 16 plus a rest of 1 token); odd widths
// (35 → 9: B rows of 5 and 7); MoKA_s; KronA and LoKr (one component); chunks (scratchBytes 1:
// 4-token chunks at 64 → 48, the last one partial, the slots accumulating over chunks); the
// fused route under the GPU thresholds.
const CASES: Case[] = [
  {
    config: { kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 },
    dIn: 64,
    dOut: 48,
    tokens: 129,
  },
  {
    config: { kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 },
    dIn: 64,
    dOut: 48,
    tokens: 7,
  },
  { config: { kind: "moka", components: [[3, 5], [9, 7]] }, dIn: 35, dOut: 9, tokens: 129 },
  {
    config: { kind: "moka", components: [[4, 4], [8, 8]], identityA: true, zeroInit: "B" },
    dIn: 32,
    dOut: 64,
    tokens: 1,
  },
  { config: { kind: "krona", a: [5, 3], zeroInit: "B" }, dIn: 12, dOut: 10, tokens: 7 },
  { config: { kind: "lokr", r: 8, alpha: 4 }, dIn: 12, dOut: 10, tokens: 129 },
  {
    config: { kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 },
    dIn: 64,
    dOut: 48,
    tokens: 37,
    options: { scratchBytes: 1 },
  },
  {
    config: { kind: "moka", components: [[4, 8], [16, 2], [8, 8]], scale: 2 },
    dIn: 64,
    dOut: 48,
    tokens: 7,
    options: { kernels: "fused" },
  },
];

function build(c: Case): Adapter<{ kind: string }> {
  const adapter = createAdapter(c.config, c.dIn, c.dOut, 1, new Float32Array(c.dIn * c.dOut));
  randomizeParams(adapter, 7);
  return adapter;
}

function describe(c: Case): string {
  return `${JSON.stringify(c.config)} ${c.dIn}→${c.dOut} ${c.tokens} tokens ${
    JSON.stringify(c.options ?? {})
  }`;
}

Deno.test("kron gpu variants: forward, dx and every gradient equal float64 (tokens 1/7/129, odd widths, chunks, both routes)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  assert.equal(rt.variants.target, "gpu");
  for (const c of CASES) {
    const errors = await gpuVsCpu(rt, build(c), c.tokens, 33, {}, {
      kernels: "matmul",
      ...c.options,
    });
    for (const [name, e] of Object.entries(errors)) {
      assert.ok(e < TOLERANCE.f32, `${describe(c)} ${name}: ${e}`);
    }
  }
});

// Deliberately wrong GPU kernels: one multiply-add of the workgroup-memory matmul reads the wrong
// column; the gated slot sum skips slot 0. Each runs on its own runtime (own pipeline cache).
const MUTATIONS = [
  {
    what: "workgroup-memory matmul",
    marker: "var<workgroup> tileA",
    from: "acc0_0 = fma(a0, b0, acc0_0)",
    to: "acc0_0 = fma(a0, b1, acc0_0)",
  },
  {
    what: "gated slot sum",
    marker: "exp(gate[p.comp] - mx)",
    from: "for (var k = 0u; k < p.slots",
    to: "for (var k = 1u; k < p.slots",
  },
];

Deno.test("kron gpu variants: each mutated GPU kernel fails the comparison (negative controls)", async () => {
  const c = CASES[0]; // 129 tokens: slotted gradients
  for (const m of MUTATIONS) {
    const rt = new GpuRuntime(await sharedGpu(), { kernels: { target: "gpu" } });
    const get = rt.pipelines.get.bind(rt.pipelines);
    let mutated = 0;
    rt.pipelines.get = (code, label, ...rest) => {
      if (code.includes(m.marker)) {
        const wrong = code.replace(m.from, m.to);
        if (wrong !== code) mutated++;
        code = wrong;
      }
      return get(code, label, ...rest);
    };
    const errors = await gpuVsCpu(rt, build(c), c.tokens, 33, {}, { kernels: "matmul" });
    assert.ok(mutated > 0, `the GPU layer never compiled the ${m.what}`);
    const worst = Math.max(...Object.values(errors));
    assert.ok(worst > 100 * TOLERANCE.f32, `mutated ${m.what} passed: ${JSON.stringify(errors)}`);
  }
});

// The tiled route (intermediates in workgroup memory, every component per dispatch) on the same
// cases, and at 1 token per slot (scratchBytes 1 bounds the partials: fewer slots).
Deno.test("kron gpu variants: tiled kernels equal float64 (tokens 1/7/129, odd widths, MoKA_s, KronA, LoKr, slots)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  for (const c of CASES) {
    const errors = await gpuVsCpu(rt, build(c), c.tokens, 33, {}, {
      ...c.options,
      kernels: "tiled",
    });
    for (const [name, e] of Object.entries(errors)) {
      assert.ok(e < TOLERANCE.f32, `tiled ${describe(c)} ${name}: ${e}`);
    }
  }
  // Fixed summation orders: a second run gives the same errors to the last bit.
  const c = CASES[0];
  const again = async () => await gpuVsCpu(rt, build(c), c.tokens, 33, {}, { kernels: "tiled" });
  assert.deepEqual(await again(), await again());
});

// Deliberately wrong tiled kernels, two per product kernel (its on-chip intermediate, then the
// product that consumes it; the first component only), the forward's Bᵀ halved and the slot sum
// skipping slot 0.
const TILED_MUTATIONS = [
  {
    what: "tiled y/dx intermediate",
    marker: "var<workgroup> wsh",
    from: "] = s0_0;",
    to: "] = 0.5 * s0_0;",
  },
  {
    what: "tiled y/dx product",
    marker: "var<workgroup> wsh",
    from: "let n0 = ",
    to: "let n0 = 0.5 * ",
  },
  {
    what: "tiled gradient intermediate",
    marker: "var<workgroup> ssh",
    from: "j0 + 0u] = s0_0;",
    to: "j0 + 0u] = 0.5 * s0_0;",
  },
  {
    what: "tiled gradient product",
    marker: "var<workgroup> ssh",
    from: "fma(w0, x0, ",
    to: "fma(w0, 0.5 * x0, ",
  },
  {
    what: "tiled Bᵀ",
    marker: "bt[e] = prm[",
    from: "bt[e] = prm[",
    to: "bt[e] = 0.5 * prm[",
  },
  {
    what: "tiled slot sum",
    marker: "sum += part[",
    from: "var k = 0u; k < p.slots",
    to: "var k = 1u; k < p.slots",
  },
];

Deno.test("kron gpu variants: each mutated tiled kernel fails the comparison (negative controls)", async () => {
  const c = CASES[4]; // KronA, 7 tokens in 7 slots: small shaders, quick to compile
  for (const m of TILED_MUTATIONS) {
    const rt = new GpuRuntime(await sharedGpu(), { kernels: { target: "gpu" } });
    const get = rt.pipelines.get.bind(rt.pipelines);
    let mutated = 0;
    rt.pipelines.get = (code, label, ...rest) => {
      if (code.includes(m.marker)) {
        const wrong = code.replace(m.from, m.to);
        if (wrong !== code) mutated++;
        code = wrong;
      }
      return get(code, label, ...rest);
    };
    const errors = await gpuVsCpu(rt, build(c), c.tokens, 33, {}, { kernels: "tiled" });
    assert.ok(mutated > 0, `the tiled layer never compiled the ${m.what}`);
    const worst = Math.max(...Object.values(errors));
    assert.ok(worst > 100 * TOLERANCE.f32, `mutated ${m.what} passed: ${JSON.stringify(errors)}`);
  }
});
