/**
 * The chunked cross-entropy kernels against the whole-row float64 reference, with row chunks and
 * vocabulary blocks that divide neither the rows nor the vocabulary, masked rows, and NaN-poisoned
 * outputs.
 */
import assert from "node:assert/strict";
import { crossEntropy } from "./cpu/cross_entropy.ts";
import { randomF32, relativeError, testRuntime } from "../testing/mod.ts";
import { ceFinish, ceGrad, ceStats } from "./cross_entropy.ts";

Deno.test("cross-entropy: row chunks × vocabulary blocks equal the unchunked float64 reference", async () => {
  const rt = await testRuntime();
  const [rows, vocab] = [21, 11];
  const logits = randomF32(rows * vocab, 9).map((x) => 6 * x);
  const targets = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 0 ? -1 : (i * 3) % vocab));
  const count = targets.filter((t) => t >= 0).length;
  const ref = crossEntropy(Float64Array.from(logits), targets, vocab);
  const gTargets = rt.upload(new Uint32Array(targets.buffer), [rows], "u32");
  for (const [chunkRows, blockWidth] of [[rows, vocab], [8, 4], [5, 3], [1, 11]]) {
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
        await ceStats(rt, b, { chunk, targets: gTargets, m, s, tl }, i === 0);
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
    const what = `${chunkRows} rows × ${blockWidth} entries`;
    targets.forEach((t, r) => {
      if (t < 0) assert.equal(rowLoss[r], 0, `${what}: masked row ${r} has no loss`);
    });
    const mean = rowLoss.reduce((x, y) => x + y, 0) / count;
    assert.ok(Math.abs(mean - ref.loss) < 1e-5 * ref.loss, `${what}: loss ${mean} vs ${ref.loss}`);
    const err = relativeError(dlogits, ref.dlogits);
    assert.ok(err < 1e-5, `${what}: dlogits relative error ${err}`);
    loss.release();
  }
  // Negative control: a gradient scaled by the wrong count is caught by the same comparison.
  const wrong = ref.dlogits.map((v) => v * (count / (count + 1)));
  assert.ok(relativeError(Float32Array.from(wrong), ref.dlogits) > 1e-3);
});
