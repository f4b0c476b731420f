/**
 * The report server (Hono). Read-only: it serves what `deno task reproduce` wrote.
 *
 * Routes today: `/` (overview page), `/api/selfcheck` (JSON), `/health`. The run pages and the
 * grid API arrive with the reproduction grid.
 */
import { Hono } from "hono";
import { parseSelfCheckReport, type SelfCheckReport } from "./schema.ts";

/** Options of {@link createReportApp}. */
export interface ReportAppOptions {
  /** Folder holding the reports (default `reports/out`). */
  reportsDir: string;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function loadSelfCheck(dir: string): Promise<SelfCheckReport | null> {
  const file = `${dir}/selfcheck.json`;
  try {
    return parseSelfCheckReport(await Deno.readTextFile(file), file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

function overviewHtml(report: SelfCheckReport | null): string {
  const rows =
    report?.results.map((r) =>
      `<tr><td>${escapeHtml(r.kernel)}</td><td><code>${
        escapeHtml(JSON.stringify(r.spec))
      }</code></td>` +
      `<td>${r.relativeError?.toExponential(2) ?? "—"}</td><td>${r.ok ? "ok" : "FAIL"}</td></tr>`
    ).join("\n") ?? "";
  const body = report
    ? `<p>Adapter: ${escapeHtml(report.adapter)} · ${escapeHtml(report.date)}</p>
<table><thead><tr><th>kernel</th><th>problem</th><th>relative error</th><th></th></tr></thead>
<tbody>${rows}</tbody></table>`
    : `<p>No reports yet. Run <code>deno task reproduce</code>.</p>`;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>moka reports</title>
<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}</style>
</head><body><h1>moka reports</h1><h2>Kernel self-check</h2>${body}
<p>The reproduction grid (adapters × tasks × seeds) is not built yet.</p></body></html>`;
}

/** Build the Hono app serving `options.reportsDir`. */
export function createReportApp(options: ReportAppOptions): Hono {
  const app = new Hono();
  app.get("/health", (c) => c.json({ ok: true }));
  app.get("/api/selfcheck", async (c) => {
    const report = await loadSelfCheck(options.reportsDir);
    return report ? c.json(report) : c.json({ error: "no self-check report yet" }, 404);
  });
  app.get("/", async (c) => c.html(overviewHtml(await loadSelfCheck(options.reportsDir))));
  app.notFound((c) => c.json({ error: "not found" }, 404));
  app.onError((err, c) => c.json({ error: err.message }, 500));
  return app;
}
