/**
 * Static HTML for the grid and for each run: tables and inline SVG plots, no JavaScript. The same
 * pages are written by `deno task reproduce` and served by `deno task serve`.
 */
import { COMMONSENSE_ORDER } from "../tasks/commonsense/data.ts";
import { meanSd, wilsonInterval } from "../evals/stats.ts";
import { configRows, type MetricSpec, noiseVerdicts, type SeedStat } from "../grid/aggregate.ts";
import type { RunReport, SelfCheckReport } from "../grid/schema.ts";
import { writeFileAtomic } from "../grid/claim.ts";
import { escapeXml as esc, renderLinePlot } from "./svg.ts";

const STYLE =
  `body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:bold;padding:.25rem 0}
.note{color:#555;font-size:.9rem}svg{max-width:100%;height:auto}.ci{color:#666;font-size:.85em}
.banner{background:#fff8e1;border:1px solid #e0c46c;padding:.25rem 1rem;margin:1rem 0}
.samples code{white-space:pre-wrap}.verdicts li{margin:.2rem 0}`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>${STYLE}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
}

const pct = (x: number | undefined) => (x === undefined ? "—" : (100 * x).toFixed(1));

/** The published anchors of the paper (arXiv 2508.03527), with their provenance, shown beside ours. */
export const PUBLISHED = {
  provenance: "Commonsense rows: DoRA's README (confirmed); the MoKA headline: secondary sources " +
    "on arXiv 2508.03527 (targets to compare against, not facts).",
  commonsense: [
    ["LLaMA2-7B", "LoRA", [69.8, 79.9, 79.5, 83.6, 82.6, 79.8, 64.7, 81.0, 77.6]],
    ["LLaMA2-7B", "DoRA", [71.8, 83.7, 76.0, 89.1, 82.6, 83.7, 68.2, 82.4, 79.7]],
    ["LLaMA3-8B", "LoRA", [70.8, 85.2, 79.9, 91.7, 84.3, 84.2, 71.2, 79.0, 80.8]],
    ["LLaMA3-8B", "DoRA", [74.6, 89.3, 79.9, 95.5, 85.6, 90.5, 80.4, 85.8, 85.2]],
  ] as [string, string, number[]][],
  headline: [
    ["LLaMA2-7B", "5.2M", "62.2M", "+6.7", "+3.13"],
    ["LLaMA3-8B", "3.9M", "56.6M", "+1.67", "+1.71"],
  ],
};

const CS_COLUMNS: readonly string[] = COMMONSENSE_ORDER;

function publishedHtml(): string {
  const head = `<tr><th>model</th><th>method</th>${
    ["BoolQ", "PIQA", "SIQA", "HellaS", "WinoG", "ARC-e", "ARC-c", "OBQA", "Avg"].map((h) =>
      `<th>${h}</th>`
    ).join("")
  }</tr>`;
  const rows = PUBLISHED.commonsense.map(([m, method, v]) =>
    `<tr><td>${m}</td><td>${method}</td>${
      v.map((x) => `<td class="n">${x.toFixed(1)}</td>`).join("")
    }</tr>`
  ).join("");
  const headline = PUBLISHED.headline.map((r) =>
    `<tr>${r.map((x) => `<td>${esc(x)}</td>`).join("")}</tr>`
  ).join("");
  return `<h2>Published figures</h2><p class="note">${esc(PUBLISHED.provenance)}</p>
<table><caption>Commonsense accuracy (%), r = 32</caption><thead>${head}</thead><tbody>${rows}</tbody></table>
<table><caption>MoKA headline</caption><thead><tr><th>model</th><th>MoKA trainable</th><th>QLoRA trainable</th>
<th>MMLU 5-shot vs QLoRA</th><th>vs QDoRA</th></tr></thead><tbody>${headline}</tbody></table>`;
}

const num = (x: number, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : "—");
const ci = (c: [number, number] | undefined) =>
  c ? `<span class="ci">[${pct(c[0])}, ${pct(c[1])}]</span>` : "";

/** "mean ± sd (n)" of a seed statistic, as % or as a loss. */
function seedCell(s: SeedStat | null, percent: boolean): string {
  if (!s) return `<td class="n">—</td>`;
  const f = (x: number) => (percent ? pct(x) : num(x));
  return `<td class="n">${f(s.mean)}${s.n > 1 ? ` ± ${f(s.sd)}` : ""}${
    s.n > 1 ? ` <span class="ci">(${s.n} seeds)</span>` : ""
  }</td>`;
}

/** The banner: what the profile is, on which model and device, and how many runs and seeds. */
function banner(reports: RunReport[]): string {
  const profiles = [...new Set(reports.map((r) => r.profile))].join(", ");
  const models = [...new Set(reports.map((r) => `${r.model} (${r.base} base)`))].join(", ");
  const device = [...new Set(reports.map((r) => r.device))].join(", ");
  const descriptions = [...new Set(reports.map((r) => r.profileDescription).filter(Boolean))];
  return `<div class="banner"><p><strong>Profile ${esc(profiles)}</strong> · model ${
    esc(models)
  } · ${esc(device)} · ${reports.length} runs</p>${
    descriptions.map((d) => `<p>${esc(d!)}</p>`).join("")
  }</div>`;
}

/** Stable style index per adapter name (the same look in every plot). */
function styleIndex(reports: RunReport[]): (adapter: string) => number {
  const names = [...new Set(reports.map((r) => r.adapter))];
  return (a) => names.indexOf(a);
}

const METRICS: MetricSpec[] = [
  { key: "heldOut", label: "Held-out loss", lowerIsBetter: true },
  { key: "choice", label: "Multiple-choice accuracy", lowerIsBetter: false },
  { key: "generation", label: "Generation accuracy", lowerIsBetter: false },
  { key: "mmlu", label: "MMLU accuracy", lowerIsBetter: false },
];

/** Per family: configurations over seeds, the noise verdicts, and per-task details. */
function familySection(
  family: RunReport["family"],
  reports: RunReport[],
  runHref: (id: string) => string,
): string {
  const rs = reports.filter((r) => r.family === family);
  if (!rs.length) return "";
  const rows = configRows(rs);
  const isCs = family === "commonsense";
  const q = rows[0].questions;
  const head = isCs
    ? `<th>held-out loss</th><th>multiple choice (%)</th><th>generation (%)</th><th>unparseable (%)</th>`
    : `<th>held-out loss</th><th>MMLU (%)</th>`;
  const body = rows.map((r) =>
    `<tr><td>${esc(r.adapter)}</td><td class="n">${r.params.toLocaleString("en-US")}${
      r.paperParams ? ` <span class="ci">(paper ${(r.paperParams / 1e6).toFixed(1)}M)</span>` : ""
    }</td><td>${
      r.runs.map((id) => `<a href="${esc(runHref(id))}">${esc(id.replace(/^.*-s/, "s"))}</a>`).join(
        " ",
      )
    }</td>` +
    seedCell(r.heldOut, false) +
    (isCs
      ? seedCell(r.choice, true) + seedCell(r.generation, true) + seedCell(r.unparseable, true)
      : seedCell(r.mmlu, true)) +
    `</tr>`
  ).join("");
  const verdicts = METRICS.filter((m) => rows.some((r) => r[m.key] !== null))
    .flatMap((m) => noiseVerdicts(rows, m));
  // Sampling noise of one accuracy at p = ½, the widest case: what seeds cannot average away.
  const halfWidth = (n: number) => {
    const [lo, hi] = wilsonInterval(Math.round(n / 2), n);
    return `±${(50 * (hi - lo)).toFixed(0)} points`;
  };
  const sizes = isCs
    ? `Each seed's accuracies rest on ${q.choice} multiple-choice and ${q.generation} generated ` +
      `answers (95 % interval of one accuracy: up to ${halfWidth(q.choice)} and ` +
      `${halfWidth(q.generation)}); the verdicts below weigh seed noise only.`
    : `Each seed's MMLU accuracy rests on ${q.mmlu} questions (chance 25 %; 95 % interval up to ` +
      `${halfWidth(q.mmlu)}); the verdicts below weigh seed noise only.`;
  const details = isCs ? commonsenseTaskTable(rs) : mmluTable(rs);
  return `<section id="${family}"><h2>${isCs ? "Commonsense" : "MMLU (instruction tuning)"}</h2>
<table class="summary"><caption>Over seeds: mean ± sd</caption><thead><tr><th>adapter</th><th>trainable</th><th>runs</th>${head}</tr></thead><tbody>${body}</tbody></table>
<p class="note">${esc(sizes)}</p><ul class="verdicts">${
    verdicts.map((v) => `<li>${esc(v)}</li>`).join("")
  }</ul>${details}</section>`;
}

/** Per task: n, chance, majority, and each adapter's multiple-choice accuracy over seeds. */
function commonsenseTaskTable(rs: RunReport[]): string {
  const tasks = CS_COLUMNS.filter((t) => rs.some((r) => r.metrics.commonsense?.tasks[t]));
  const adapters = [...new Set(rs.map((r) => r.adapter))];
  const first = rs[0].metrics.commonsense!;
  const row = (t: string) => {
    const ch = first.choice?.[t];
    const gen = first.tasks[t];
    const cells = adapters.map((a) => {
      const runs = rs.filter((r) => r.adapter === a);
      const acc = runs.map((r) => r.metrics.commonsense?.choice?.[t]?.acc).filter((x) =>
        x !== undefined
      ) as number[];
      if (!acc.length) return `<td class="n">—</td>`;
      const only = runs.length === 1 ? runs[0].metrics.commonsense?.choice?.[t]?.ci : undefined;
      const { mean, sd, n } = meanSd(acc);
      return `<td class="n">${pct(mean)}${n > 1 ? ` ± ${pct(sd)}` : ""} ${ci(only)}</td>`;
    }).join("");
    return `<tr><td>${esc(t)}</td><td class="n">${ch?.total ?? "—"}</td><td class="n">${
      pct(ch?.chance)
    }</td><td class="n">${pct(gen?.majority)}</td>${cells}</tr>`;
  };
  return `<table class="tasks"><caption>Multiple-choice accuracy (%) per task, mean ± sd over seeds ([95 % Wilson interval] for single runs)</caption><thead><tr><th>task</th><th>n</th><th>chance</th><th>majority</th>${
    adapters.map((a) => `<th>${esc(a)}</th>`).join("")
  }</tr></thead><tbody>${tasks.map(row).join("")}</tbody></table>`;
}

/** MMLU per run: categories, all, its interval and the majority baseline. */
function mmluTable(rs: RunReport[]): string {
  const body = rs.map((r) =>
    `<tr><td>${esc(r.id)}</td>${
      ["STEM", "humanities", "social sciences", "other"].map((k) =>
        `<td class="n">${pct(r.metrics.mmlu?.categories[k])}</td>`
      ).join("")
    }<td class="n">${pct(r.metrics.mmlu?.average)} ${ci(r.metrics.mmlu?.ci)}</td><td class="n">${
      r.metrics.mmlu?.total ?? "—"
    }</td><td class="n">${pct(r.metrics.mmlu?.majority)}</td></tr>`
  ).join("");
  return `<table class="tasks"><caption>MMLU accuracy (%) per run (chance 25 %)</caption><thead><tr><th>run</th><th>STEM</th><th>humanities</th><th>social sciences</th><th>other</th><th>all [95 %]</th><th>n</th><th>majority</th></tr></thead><tbody>${body}</tbody></table>`;
}

/** A metric against trainable parameters: one point per adapter (mean, sd bars), base as a line. */
function metricPlot(
  reports: RunReport[],
  family: RunReport["family"],
  key: MetricSpec["key"],
  title: string,
  yLabel: string,
  percent: boolean,
  extraRefs: { label: string; y: number }[] = [],
): string {
  const rows = configRows(reports.filter((r) => r.family === family)).filter((r) => r[key]);
  if (!rows.some((r) => r.params > 0)) return "";
  const style = styleIndex(reports);
  const scale = percent ? 100 : 1;
  const base = rows.find((r) => r.params === 0);
  return renderLinePlot({
    title,
    xLabel: "trainable parameters (log scale)",
    yLabel,
    xLog: true,
    series: rows.filter((r) => r.params > 0).map((r) => ({
      name: r.adapter,
      style: style(r.adapter),
      points: [[r.params, scale * r[key]!.mean]] as [number, number][],
      yErr: [scale * r[key]!.sd],
    })),
    references: mergeReferences([
      ...(base ? [{ label: "base model", y: scale * base[key]!.mean }] : []),
      ...extraRefs.map((x) => ({ ...x, y: scale * x.y })),
    ]),
    padX: 0.08,
  });
}

/** Reference lines at the same height become one ("base model = chance"), labels unclobbered. */
function mergeReferences(refs: { label: string; y: number }[]): { label: string; y: number }[] {
  const out: { label: string; y: number }[] = [];
  for (const r of refs) {
    const same = out.find((o) => Math.abs(o.y - r.y) < 1e-9 * Math.max(1, Math.abs(r.y)));
    if (same) same.label = `${same.label} = ${r.label}`;
    else out.push({ ...r });
  }
  return out;
}

/** Training loss per adapter and family: the mean over seeds at each step. */
function lossPlot(reports: RunReport[]): string {
  const style = styleIndex(reports);
  const groups = new Map<string, RunReport[]>();
  for (const r of reports.filter((x) => x.lossCurve.length)) {
    const key = `${r.adapter} (${r.family})`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  if (!groups.size) return "";
  return renderLinePlot({
    title: "Training loss (mean over seeds)",
    xLabel: "step",
    yLabel: "loss",
    series: [...groups].map(([name, rs]) => {
      const byStep = new Map<number, number[]>();
      for (const r of rs) {
        for (const [step, loss] of r.lossCurve) {
          byStep.set(step, [...(byStep.get(step) ?? []), loss]);
        }
      }
      return {
        name,
        style: style(rs[0].adapter) + (rs[0].family === "mmlu" ? 8 : 0),
        points: [...byStep].sort((a, b) => a[0] - b[0]).map(([s, v]) =>
          [s, v.reduce((x, y) => x + y, 0) / v.length] as [number, number]
        ),
      };
    }),
  });
}

/**
 * The grid overview: a banner saying what the profile is, per family the configurations over
 * seeds with sample sizes and noise verdicts, per-task tables with baselines, plots against
 * trainable parameters with the base model as a reference line, loss curves, published figures.
 */
export function renderGridPage(
  reports: RunReport[],
  options: {
    runHref: (id: string) => string;
    selfcheck?: SelfCheckReport | null;
    /** Entries of the reports store that are not valid runs, with the reason. */
    invalid?: readonly { entry: string; reason: string }[];
  },
): string {
  const invalid = options.invalid?.length
    ? `<table class="invalid"><caption>Invalid entries (not shown above)</caption><thead><tr><th>entry</th><th>reason</th></tr></thead><tbody>${
      options.invalid.map((e) =>
        `<tr><td><code>${esc(e.entry)}</code></td><td>${esc(e.reason)}</td></tr>`
      )
        .join("")
    }</tbody></table>`
    : "";
  const sc = options.selfcheck
    ? `<p class="note">Kernel self-check: ${
      options.selfcheck.results.filter((r) => r.ok).length
    }/${options.selfcheck.results.length} ok on ${esc(options.selfcheck.adapter)}.</p>`
    : "";
  if (reports.length === 0) {
    return page(
      "moka reproduction grid",
      `<p>No runs yet. Run <code>deno task reproduce</code>.</p>${sc}${invalid}${publishedHtml()}`,
    );
  }
  const chance = reports.find((r) => r.metrics.commonsense?.chanceAverage !== undefined)?.metrics
    .commonsense?.chanceAverage;
  // Accuracy: multiple choice where runs have it (older reports only carry generation accuracy).
  const hasChoice = reports.some((r) => r.metrics.commonsense?.choiceAverage !== undefined);
  const plots: [string, string][] = [
    [
      "heldout-plot",
      metricPlot(
        reports,
        "commonsense",
        "heldOut",
        "Commonsense: held-out loss vs trainable parameters",
        "loss (nats / response token)",
        false,
      ),
    ],
    [
      "accuracy-plot",
      metricPlot(
        reports,
        "commonsense",
        hasChoice ? "choice" : "generation",
        `Commonsense: ${
          hasChoice ? "multiple-choice" : "generation"
        } accuracy vs trainable parameters`,
        "accuracy (%)",
        true,
        chance === undefined ? [] : [{ label: "chance", y: chance }],
      ),
    ],
    [
      "mmlu-heldout-plot",
      metricPlot(
        reports,
        "mmlu",
        "heldOut",
        "MMLU family: held-out loss vs trainable parameters",
        "loss (nats / response token)",
        false,
      ),
    ],
    [
      "mmlu-plot",
      metricPlot(
        reports,
        "mmlu",
        "mmlu",
        "MMLU accuracy vs trainable parameters",
        "accuracy (%)",
        true,
        [
          { label: "chance", y: 0.25 },
        ],
      ),
    ],
    ["loss-plot", lossPlot(reports)],
  ];
  return page(
    "moka reproduction grid",
    `${banner(reports)}${sc}${invalid}${familySection("commonsense", reports, options.runHref)}${
      familySection("mmlu", reports, options.runHref)
    }<section id="plots"><h2>Plots</h2>${
      plots.filter(([, svg]) => svg).map(([id, svg]) => `<figure id="${id}">${svg}</figure>`).join(
        "",
      )
    }</section>${publishedHtml()}`,
  );
}

/** One run: provenance, held-out loss, accuracies with n and intervals, sample generations. */
export function renderRunPage(r: RunReport, options: { gridHref: string }): string {
  const c = r.metrics.commonsense;
  const cs = c
    ? `<table><caption>Commonsense (%), [95 % Wilson interval]</caption><thead><tr><th>task</th><th>n (generated / choice)</th><th>chance</th><th>majority</th><th>multiple choice acc</th><th>acc_norm</th><th>generation</th><th>unparseable</th></tr></thead><tbody>${
      Object.entries(c.tasks).map(([t, s]) => {
        const ch = c.choice?.[t];
        return `<tr><td>${esc(t)}</td><td class="n">${s.total}${
          ch && ch.total !== s.total ? ` / ${ch.total}` : ""
        }</td><td class="n">${pct(ch?.chance ?? s.chance)}</td><td class="n">${
          pct(s.majority)
        }</td><td class="n">${ch ? `${pct(ch.acc)} ${ci(ch.ci)}` : "—"}</td><td class="n">${
          pct(ch?.accNorm)
        }</td><td class="n">${pct(s.accuracy)} ${
          ci(s.ci)
        }</td><td class="n">${s.unparseable}</td></tr>`;
      }).join("")
    }<tr><th>average</th><td></td><td class="n">${
      pct(c.chanceAverage)
    }</td><td></td><td class="n">${pct(c.choiceAverage)}</td><td></td><td class="n">${
      pct(c.average)
    }</td><td></td></tr></tbody></table>`
    : "";
  const m = r.metrics.mmlu;
  const mm = m
    ? `<table><caption>MMLU (%)</caption><thead><tr><th>subject</th><th>accuracy</th><th>correct</th><th>n</th></tr></thead><tbody>${
      Object.entries(m.subjects).map(([t, s]) =>
        `<tr><td>${esc(t)}</td><td class="n">${
          pct(s.accuracy)
        }</td><td class="n">${s.correct}</td><td class="n">${s.total}</td></tr>`
      ).join("")
    }<tr><th>all</th><td class="n">${pct(m.average)} ${ci(m.ci)}</td><td class="n">${
      m.correct ?? ""
    }</td><td class="n">${m.total ?? ""}</td></tr></tbody></table><p class="note">Chance 25 %${
      m.majority !== undefined ? `; always the most frequent letter: ${pct(m.majority)} %` : ""
    }.</p>`
    : "";
  const held = r.metrics.heldOut
    ? `<p>Held-out loss: <strong>${
      num(r.metrics.heldOut.loss)
    }</strong> nats per response token (${r.metrics.heldOut.tokens} tokens of ${r.metrics.heldOut.examples} records not trained on).</p>`
    : "";
  const samples = r.samples?.length
    ? `<table class="samples"><caption>Sample generations</caption><thead><tr><th>task</th><th>response</th><th>extracted</th><th>gold</th></tr></thead><tbody>${
      r.samples.map((s) =>
        `<tr><td>${esc(s.task)}</td><td><code>${esc(s.response.slice(0, 300))}${
          s.response.length > 300 ? "…" : ""
        }</code></td><td>${s.extracted ? esc(s.extracted) : "<em>none</em>"}</td><td>${
          esc(s.gold)
        }</td></tr>`
      ).join("")
    }</tbody></table>`
    : "";
  const loss = r.lossCurve.length
    ? `<figure id="loss-plot">${
      renderLinePlot({
        title: `Training loss of ${r.id}`,
        xLabel: "step",
        yLabel: "loss",
        series: [{ name: "loss", points: r.lossCurve }],
      })
    }</figure>`
    : `<p>No training (the base model).</p>`;
  const facts: [string, string][] = [
    ["adapter", r.adapter],
    ["adapter config", JSON.stringify(r.adapterConfig)],
    ["family", r.family],
    ["seed", String(r.seed)],
    [
      "trainable parameters",
      r.trainableParams.toLocaleString("en-US") +
      (r.paperTrainableParams ? ` (paper: ${(r.paperTrainableParams / 1e6).toFixed(1)}M)` : ""),
    ],
    ["model", r.model],
    ["base weights", r.base],
    ["device", r.device],
    ["git commit", r.git],
    ["Deno", r.deno],
    ["config hash", r.configHash],
    ["adapter checksum (SHA-256)", r.adapterChecksum ?? "—"],
    [
      "training",
      `${r.timings.trainSeconds.toFixed(1)} s, ${
        r.timings.trainTokensPerSecond?.toFixed(1) ?? "—"
      } tokens/s`,
    ],
    ["evaluation", `${r.timings.evalSeconds.toFixed(1)} s`],
    ["finished", r.date],
  ];
  return page(
    `run ${r.id}`,
    `<p><a href="${esc(options.gridHref)}">← grid</a></p>${
      r.profileDescription ? `<div class="banner"><p>${esc(r.profileDescription)}</p></div>` : ""
    }<table><tbody>${
      facts.map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(v)}</code></td></tr>`).join("")
    }</tbody></table>${held}${cs}${mm}${samples}${loss}<details><summary>config</summary><pre>${
      esc(JSON.stringify(r.config, null, 2))
    }</pre></details>`,
  );
}

/** Write `index.html` for the grid and `runs/<id>/index.html` for each run under `out`. */
export async function writeStaticPages(
  out: string,
  reports: RunReport[],
  selfcheck?: SelfCheckReport | null,
) {
  // Temp file + rename: processes sharing `out` may write the same pages.
  await writeFileAtomic(
    `${out}/index.html`,
    renderGridPage(reports, { runHref: (id) => `runs/${id}/index.html`, selfcheck }),
  );
  for (const r of reports) {
    await writeFileAtomic(
      `${out}/runs/${r.id}/index.html`,
      renderRunPage(r, { gridHref: "../../index.html" }),
    );
  }
}
