import assert from "node:assert/strict";
import { configRows, noiseVerdicts } from "../grid/aggregate.ts";
import { renderGridPage, renderRunPage } from "./html.ts";
import { type RunReport, RunReportSchema } from "../grid/schema.ts";

/** A commonsense run report with held-out loss, multiple choice and generation metrics. */
function report(
  adapter: string,
  seed: number,
  params: number,
  heldOut: number,
  acc: number,
  curve = 3,
): RunReport {
  const n = 24;
  const correct = Math.round(acc * n);
  return RunReportSchema.parse({
    kind: "run",
    id: `${adapter}-commonsense-s${seed}`,
    profile: "synthetic",
    profileDescription: "A synthetic grid for the page's tests.",
    adapter,
    adapterConfig: params ? { kind: "lora", r: 2, alpha: 4 } : null,
    family: "commonsense",
    seed,
    configHash: "c".repeat(64),
    config: {},
    git: "abc",
    deno: "2.9.6",
    device: "test device",
    model: "stories260K.bin",
    base: "nf4",
    trainableParams: params,
    metrics: {
      heldOut: { loss: heldOut, tokens: 100, examples: 8 },
      commonsense: {
        tasks: {
          boolq: {
            accuracy: 0,
            correct: 0,
            total: 2,
            unparseable: 2,
            ci: [0, 0.658],
            chance: 0.5,
            majority: 0.5,
          },
        },
        average: 0,
        choice: {
          boolq: {
            acc: correct / n,
            accNorm: correct / n,
            correct,
            correctNorm: correct,
            total: n,
            chance: 0.5,
            ci: [0.3, 0.7],
          },
        },
        choiceAverage: correct / n,
        chanceAverage: 0.5,
      },
    },
    samples: [{ task: "boolq", response: "Once upon a <time>", extracted: "", gold: "true" }],
    lossCurve: params
      ? Array.from({ length: curve }, (_, i) => [i + 1, 3 - Math.log1p(i) / 10 + (i === 7 ? 2 : 0)])
      : [],
    timings: { trainSeconds: 1, evalSeconds: 1, trainTokensPerSecond: params ? 10 : null },
    adapterChecksum: params ? "d".repeat(64) : null,
    date: "2026-11-29T00:00:00.000Z",
  });
}

Deno.test("grid page: 16 adapters get 16 distinct styles, the base and chance are reference lines, a 31,900-step curve renders", () => {
  const reports = [report("base", 1, 0, 4.5, 0.25)];
  for (let i = 0; i < 16; i++) {
    reports.push(report(`a${i}`, 1, 1000 * (i + 1), 3 + i / 10, 0.4, i === 0 ? 31900 : 3));
  }
  const page = renderGridPage(reports, { runHref: (id) => `runs/${id}/index.html` });
  const accuracy = /<figure id="accuracy-plot">([\s\S]*?)<\/figure>/.exec(page)![1];
  const styles = [...accuracy.matchAll(/<g class="series" data-series="\d+" data-style="([^"]+)"/g)]
    .map((m) => m[1]);
  assert.equal(styles.length, 16);
  assert.equal(new Set(styles).size, 16, "every adapter has its own colour × marker × dash");
  assert.match(accuracy, /data-reference="base model"/);
  assert.match(accuracy, /data-reference="chance"/);
  const held = /<figure id="heldout-plot">([\s\S]*?)<\/figure>/.exec(page)![1];
  assert.match(held, /data-reference="base model"/);
  // The same adapter keeps its style from plot to plot.
  const heldStyles = [...held.matchAll(/<g class="series" data-series="\d+" data-style="([^"]+)"/g)]
    .map((m) => m[1]);
  assert.deepEqual(heldStyles, styles);
  // The 31,900-step curve is down-sampled for display but drawn.
  const loss = /<figure id="loss-plot">([\s\S]*?)<\/figure>/.exec(page)![1];
  const vertices = (loss.match(/[ML]-?[\d.]+ -?[\d.]+/g) ?? []).length;
  assert.ok(vertices > 500 && vertices < 20 * 1000, `${vertices} vertices`);
  // What the page says: the banner, the sample sizes, the verdicts.
  assert.match(page, /A synthetic grid for the page&#39;s tests\./);
  assert.match(page, /rest on 24 multiple-choice and 2 generated answers/);
  assert.match(page, /Held-out loss: .*improves on the base model/);
});

Deno.test("seed-noise verdicts: a clear gap is beyond noise, overlapping seeds are within it", () => {
  const reports = [
    report("base", 1, 0, 4.5, 0.25),
    ...[1, 2, 3].map((s) => report("good", s, 100, 3.0 + s / 20, 0.5)),
    ...[1, 2, 3].map((s) => report("same", s, 100, 3.02 + s / 20, 0.5)),
    ...[1, 2, 3].map((s) => report("weak", s, 100, 4.4 + s / 5, 0.5)),
  ];
  const rows = configRows(reports);
  const lines = noiseVerdicts(rows, {
    key: "heldOut",
    label: "Held-out loss",
    lowerIsBetter: true,
  });
  assert.match(lines[0], /good, same \(2 of 3 adapters\) improves on the base model \(4\.500\)/);
  assert.match(lines[1], /best good .* vs next same .*: the difference is within seed noise/);
  const apart = configRows([
    ...[1, 2, 3].map((s) => report("x", s, 100, 3.0 + s / 100, 0.5)),
    ...[1, 2, 3].map((s) => report("y", s, 100, 3.5 + s / 100, 0.5)),
  ]);
  const v = noiseVerdicts(apart, { key: "heldOut", label: "Held-out loss", lowerIsBetter: true });
  assert.match(v[0], /the difference exceeds seed noise/);
});

Deno.test("run page: held-out loss, intervals, and sample generations with the extracted and gold answers", () => {
  const page = renderRunPage(report("a0", 1, 1000, 3.2, 0.5), { gridHref: "../../index.html" });
  assert.match(page, /Held-out loss: <strong>3\.200<\/strong>/);
  assert.match(page, /\[30\.0, 70\.0\]/);
  assert.match(
    page,
    /<td><code>Once upon a &#60;time&#62;<\/code><\/td><td><em>none<\/em><\/td><td>true<\/td>/,
  );
  assert.match(page, /A synthetic grid for the page&#39;s tests\./);
});
