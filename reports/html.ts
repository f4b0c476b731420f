/**
 * Static HTML for the grid and for each run: tables and inline SVG plots, no JavaScript. The same
 * pages are written by `deno task reproduce` and served by `deno task serve`.
 */
import { COMMONSENSE_ORDER } from "../tasks/commonsense/data.ts";
import type { RunReport, SelfCheckReport } from "./schema.ts";
import { escapeXml as esc, renderLinePlot } from "./svg.ts";

const STYLE =
  `body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:bold;padding:.25rem 0}
.note{color:#555;font-size:.9rem}svg{max-width:100%;height:auto}`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>${STYLE}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
}

const pct = (x: number | undefined) => (x === undefined ? "—" : (100 * x).toFixed(1));

/** The published anchors of `../shared/PAPER.md`, with their provenance, shown beside ours. */
export const PUBLISHED = {
  provenance: "../shared/PAPER.md: DoRA README (confirmed) for the commonsense rows; secondary " +
    "sources on arXiv 2508.03527 for the MoKA headline (targets to compare against, not facts).",
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

/** The grid overview: our runs, accuracy vs trainable parameters, loss curves, published figures. */
export function renderGridPage(
  reports: RunReport[],
  options: { runHref: (id: string) => string; selfcheck?: SelfCheckReport | null },
): string {
  const sc = options.selfcheck
    ? `<p class="note">Kernel self-check: ${
      options.selfcheck.results.filter((r) => r.ok).length
    }/${options.selfcheck.results.length} ok on ${esc(options.selfcheck.adapter)}.</p>`
    : "";
  if (reports.length === 0) {
    return page(
      "moka reproduction grid",
      `<p>No runs yet. Run <code>deno task reproduce</code>.</p>${sc}${publishedHtml()}`,
    );
  }
  const cs = reports.filter((r) => r.family === "commonsense");
  // Columns for the tasks these runs evaluated, in the paper's order.
  const columns = CS_COLUMNS.filter((t) =>
    cs.some((r) => r.metrics.commonsense?.tasks[t] !== undefined)
  );
  const ins = reports.filter((r) => r.family === "instruction");
  const csRows = cs.map((r) =>
    `<tr><td><a href="${esc(options.runHref(r.id))}">${esc(r.id)}</a></td><td>${
      esc(r.adapter)
    }</td><td class="n">${r.seed}</td>` +
    `<td class="n">${r.trainableParams.toLocaleString("en-US")}</td>` +
    columns.map((t) => `<td class="n">${pct(r.metrics.commonsense?.tasks[t]?.accuracy)}</td>`)
      .join("") +
    `<td class="n">${pct(r.metrics.commonsense?.average)}</td></tr>`
  ).join("");
  const insRows = ins.map((r) =>
    `<tr><td><a href="${esc(options.runHref(r.id))}">${esc(r.id)}</a></td><td>${
      esc(r.adapter)
    }</td><td class="n">${r.seed}</td>` +
    `<td class="n">${r.trainableParams.toLocaleString("en-US")}</td>` +
    ["STEM", "humanities", "social sciences", "other"].map((k) =>
      `<td class="n">${pct(r.metrics.mmlu?.categories[k])}</td>`
    )
      .join("") +
    `<td class="n">${pct(r.metrics.mmlu?.average)}</td></tr>`
  ).join("");
  // Accuracy vs trainable parameters (the base model has 0 trainable and is left off the log axis).
  const byAdapter = new Map<string, [number, number][]>();
  for (const r of reports) {
    const score = r.metrics.commonsense?.average ?? r.metrics.mmlu?.average;
    if (score === undefined || r.trainableParams === 0) continue;
    const key = `${r.adapter} (${r.family})`;
    byAdapter.set(key, [...(byAdapter.get(key) ?? []), [r.trainableParams, 100 * score]]);
  }
  const scatter = renderLinePlot({
    title: "Accuracy vs trainable parameters",
    xLabel: "trainable parameters",
    yLabel: "accuracy (%)",
    xLog: true,
    series: [...byAdapter].map(([name, points]) => ({
      name,
      points: points.sort((a, b) => a[0] - b[0]),
    })),
  });
  const losses = renderLinePlot({
    title: "Training loss",
    xLabel: "step",
    yLabel: "loss",
    series: reports.filter((r) => r.lossCurve.length).map((r) => ({
      name: r.id,
      points: r.lossCurve,
    })),
  });
  const profiles = [...new Set(reports.map((r) => r.profile))].join(", ");
  const device = [...new Set(reports.map((r) => r.device))].join(", ");
  return page(
    "moka reproduction grid",
    `<p>${reports.length} runs · profile ${esc(profiles)} · ${esc(device)}</p>${sc}
<table id="commonsense"><caption>Commonsense accuracy (%)</caption><thead><tr><th>run</th><th>adapter</th><th>seed</th><th>trainable</th>${
      columns.map((t) => `<th>${esc(t)}</th>`).join("")
    }<th>avg</th></tr></thead><tbody>${csRows}</tbody></table>
<table id="mmlu"><caption>MMLU accuracy (%)</caption><thead><tr><th>run</th><th>adapter</th><th>seed</th><th>trainable</th>
<th>STEM</th><th>humanities</th><th>social sciences</th><th>other</th><th>all</th></tr></thead><tbody>${insRows}</tbody></table>
<figure id="accuracy-plot">${scatter}</figure><figure id="loss-plot">${losses}</figure>${publishedHtml()}`,
  );
}

/** One run: its config, metrics, loss curve and provenance. */
export function renderRunPage(r: RunReport, options: { gridHref: string }): string {
  const cs = r.metrics.commonsense
    ? `<table><caption>Commonsense</caption><thead><tr><th>task</th><th>accuracy (%)</th><th>correct</th><th>total</th><th>unparseable</th></tr></thead><tbody>${
      Object.entries(r.metrics.commonsense.tasks).map(([t, s]) =>
        `<tr><td>${esc(t)}</td><td class="n">${
          pct(s.accuracy)
        }</td><td class="n">${s.correct}</td><td class="n">${s.total}</td><td class="n">${s.unparseable}</td></tr>`
      ).join("")
    }<tr><th>average</th><td class="n">${
      pct(r.metrics.commonsense.average)
    }</td><td></td><td></td><td></td></tr></tbody></table>`
    : "";
  const mm = r.metrics.mmlu
    ? `<table><caption>MMLU</caption><thead><tr><th>subject</th><th>accuracy (%)</th><th>correct</th><th>total</th></tr></thead><tbody>${
      Object.entries(r.metrics.mmlu.subjects).map(([t, s]) =>
        `<tr><td>${esc(t)}</td><td class="n">${
          pct(s.accuracy)
        }</td><td class="n">${s.correct}</td><td class="n">${s.total}</td></tr>`
      ).join("")
    }<tr><th>all</th><td class="n">${
      pct(r.metrics.mmlu.average)
    }</td><td></td><td></td></tr></tbody></table>`
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
    `<p><a href="${esc(options.gridHref)}">← grid</a></p><table><tbody>${
      facts.map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(v)}</code></td></tr>`).join("")
    }</tbody></table>${cs}${mm}${loss}<details><summary>config</summary><pre>${
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
  await Deno.writeTextFile(
    `${out}/index.html`,
    renderGridPage(reports, { runHref: (id) => `runs/${id}/index.html`, selfcheck }),
  );
  for (const r of reports) {
    await Deno.writeTextFile(
      `${out}/runs/${r.id}/index.html`,
      renderRunPage(r, { gridHref: "../../index.html" }),
    );
  }
}
