/**
 * The chunked cross-entropy kernels against the whole-row float64 reference, with row chunks and
 * vocabulary blocks that divide neither the rows nor the vocabulary, masked rows, and NaN-poisoned
 * outputs, in both kernel families (the GPU family forced on whatever adapter runs the tests).
 */
import assert from "node:assert/strict";
import { crossEntropy } from "./cpu/cross_entropy.ts";
import { randomF32, relativeError, testRuntime } from "../testing/mod.ts";
import { ceFinish, ceGrad, ceStats, ceStatsKernel } from "./cross_entropy.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";

type StatsKernel = ReturnType<typeof ceStatsKernel>;

/** Loss per row and dlogits of the chunked kernels, every output NaN-poisoned first. */
async function chunked(
  rt: GpuRuntime,
  logits: Float32Array,
  targets: Int32Array,
  vocab: number,
  [chunkRows, blockWidth]: readonly [number, number],
  count: number,
  stats?: StatsKernel,
): Promise<{ rowLoss: Float32Array; dlogits: Float32Array }> {
  const rows = targets.length;
  const gTargets = rt.upload(new Uint32Array(targets.buffer), [rows], "u32");
  const loss = rt.empty([rows]);
  rt.fill(loss, NaN);
  const dlogits = new Float32Array(rows * vocab).fill(NaN);
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const n = Math.min(chunkRows, rows - r0);
    const [m, s, tl] = [rt.empty([n]), rt.empty([n]), rt.empty([n])];
    for (const t of [m, s, tl]) rt.fill(t, NaN);
    const blocks: { v0: number; width: number; t: ReturnType<typeof rt.upload> }[] = [];
    for (let v0 = 0; v0 < vocab; v0 += blockWidth) {
      const width = Math.min(blockWidth, vocab - v0);
      const part = new Float32Array(n * width);
      for (let r = 0; r < n; r++) {
        for (let j = 0; j < width; j++) part[r * width + j] = logits[(r0 + r) * vocab + v0 + j];
      }
      blocks.push({ v0, width, t: rt.upload(part, [n, width]) });
    }
    const b = rt.batch();
    for (const [i, { v0, width, t }] of blocks.entries()) {
      const chunk = { logits: t, rows: n, width, v0, r0 };
      await ceStats(rt, b, { chunk, targets: gTargets, m, s, tl }, i === 0, stats);
    }
    await ceFinish(rt, b, { rows: n, r0, targets: gTargets, m, s, tl, loss });
    for (const { v0, width, t } of blocks) {
      await ceGrad(rt, b, {
        chunk: { logits: t, rows: n, width, v0, r0 },
        targets: gTargets,
        lse: m,
        count,
      });
    }
    await b.submit();
    for (const { v0, width, t } of blocks) {
      const g = await rt.read(t) as Float32Array;
      for (let r = 0; r < n; r++) {
        for (let j = 0; j < width; j++) dlogits[(r0 + r) * vocab + v0 + j] = g[r * width + j];
      }
      t.release();
    }
    for (const t of [m, s, tl]) t.release();
  }
  const rowLoss = await rt.read(loss) as Float32Array;
  loss.release();
  gTargets.release();
  return { rowLoss, dlogits };
}

/** Random logits (±6) and targets with every fifth row masked. */
function problem(rows: number, vocab: number) {
  const logits = randomF32(rows * vocab, 9 + vocab).map((x) => 6 * x);
  const targets = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 0 ? -1 : (i * 3) % vocab));
  const count = targets.filter((t) => t >= 0).length;
  return { logits, targets, count, ref: crossEntropy(Float64Array.from(logits), targets, vocab) };
}

/** Mean loss and dlogits relative errors against float64. */
function errors(
  p: ReturnType<typeof problem>,
  r: { rowLoss: Float32Array; dlogits: Float32Array },
) {
  const mean = r.rowLoss.reduce((x, y) => x + y, 0) / p.count;
  return {
    loss: Math.abs(mean - p.ref.loss) / p.ref.loss,
    dlogits: relativeError(r.dlogits, p.ref.dlogits),
  };
}

for (const target of ["cpu-adapter", "gpu"] as const) {
  Deno.test(`cross-entropy (${target} kernels): row chunks × vocabulary blocks equal the unchunked float64 reference`, async () => {
    const rt = await testRuntime({ target });
    const cases = [
      [21, 11, [[21, 11], [8, 4], [5, 3], [1, 11]]],
      // Blocks wider than a workgroup, and one narrower, for the GPU row reduction.
      [7, 1000, [[7, 1000], [3, 300], [7, 257]]],
    ] as const;
    for (const [rows, vocab, shapes] of cases) {
      const p = problem(rows, vocab);
      for (const shape of shapes) {
        const what = `${rows}×${vocab}, ${shape[0]} rows × ${shape[1]} entries`;
        const r = await chunked(rt, p.logits, p.targets, vocab, shape, p.count);
        p.targets.forEach((t, i) => {
          if (t < 0) assert.equal(r.rowLoss[i], 0, `${what}: masked row ${i} has no loss`);
        });
        const e = errors(p, r);
        assert.ok(e.loss < 1e-5, `${what}: loss relative error ${e.loss}`);
        assert.ok(e.dlogits < 1e-5, `${what}: dlogits relative error ${e.dlogits}`);
      }
    }
    // Negative control: a gradient scaled by the wrong count is caught by the same comparison.
    const p = problem(21, 11);
    const wrong = p.ref.dlogits.map((v) => v * (p.count / (p.count + 1)));
    assert.ok(relativeError(Float32Array.from(wrong), p.ref.dlogits) > 1e-3);
  });
}

Deno.test("cross-entropy (gpu kernels): negative control — a tree step that drops the partner's sum fails", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const good = ceStatsKernel(rt.variants);
  assert.equal(good.perRow, "workgroup");
  const from = "ws[tid + h] * exp(m2 - nm)";
  const code = good.code.replace(from, "0.0 * exp(m2 - nm)");
  assert.notEqual(code, good.code, `mutation "${from}" not found`);
  const p = problem(7, 1000);
  const shape = [7, 300] as const;
  const ok = errors(p, await chunked(rt, p.logits, p.targets, 1000, shape, p.count, good));
  assert.ok(ok.loss < 1e-5 && ok.dlogits < 1e-5, `unmutated: ${JSON.stringify(ok)}`);
  const bad = { ...good, code, label: "ce-stats-mutated" };
  const e = errors(p, await chunked(rt, p.logits, p.targets, 1000, shape, p.count, bad));
  assert.ok(e.loss > 1e-3, `mutated tree passed: loss relative error ${e.loss}`);
});
