/**
 * The report server (Hono), read-only over the folder `deno task reproduce` writes:
 *   /                 grid overview (HTML: tables, SVG plots, published figures)
 *   /runs/:id         one run (HTML)
 *   /api/runs         run reports (JSON; ?family=commonsense|mmlu&adapter=NAME)
 *   /api/runs/:id     one report (JSON)
 *   /api/selfcheck    the kernel self-check (JSON)
 *   /health
 * Run ids are validated against the report id pattern before any file is touched, so no request
 * can read outside `<reports>/runs/`; unknown ids are 404 (JSON under /api, HTML otherwise).
 */
import { Hono } from "../deps/hono.ts";
import { z } from "../deps/zod.ts";
import { renderGridPage, renderRunPage } from "./html.ts";
import { FAMILIES } from "../grid/config.ts";
import { collectReports } from "../grid/summary.ts";
import {
  parseRunReport,
  parseSelfCheckReport,
  type RunReport,
  type SelfCheckReport,
} from "../grid/schema.ts";
import { escapeXml } from "./svg.ts";

/**
 * The report server as a fetch handler (a Hono app): `Deno.serve(app.fetch)`, or a serverless
 * host's fetch entry; `request` answers a path in-process (tests).
 */
export interface ReportApp {
  /** Answer one HTTP request. */
  fetch(request: Request): Response | Promise<Response>;
  /** Answer a request for a path or URL without a network. */
  request(input: string | Request | URL, init?: RequestInit): Response | Promise<Response>;
}

/** Options of {@link createReportApp}. */
export interface ReportAppOptions {
  /** Folder holding the reports (default `reports/out`). */
  reportsDir: string;
}

const RUN_ID = /^[a-z0-9_]+-(commonsense|mmlu|instruction)-s-?\d+$/;

const RunsQuery = z.object({
  family: z.enum(FAMILIES).optional(),
  adapter: z.string().regex(/^[a-z0-9_]+$/).optional(),
}).strict();

async function loadSelfCheck(dir: string): Promise<SelfCheckReport | null> {
  const file = `${dir}/selfcheck.json`;
  try {
    return parseSelfCheckReport(await Deno.readTextFile(file), file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function loadRun(dir: string, id: string): Promise<RunReport | null> {
  if (!RUN_ID.test(id)) return null; // never build a path from an unchecked id
  const file = `${dir}/runs/${id}/report.json`;
  try {
    return parseRunReport(await Deno.readTextFile(file), file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

function notFoundPage(what: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>not found</title></head>` +
    `<body><h1>Not found</h1><p>${escapeXml(what)}</p><p><a href="/">grid</a></p></body></html>`;
}

/** Build the Hono app serving `options.reportsDir`. */
export function createReportApp(options: ReportAppOptions): ReportApp {
  const dir = options.reportsDir;
  const app = new Hono();
  app.get("/health", (c) => c.json({ ok: true }));
  app.get("/api/selfcheck", async (c) => {
    const report = await loadSelfCheck(dir);
    return report ? c.json(report) : c.json({ error: "no self-check report yet" }, 404);
  });
  app.get("/api/runs", async (c) => {
    const q = RunsQuery.safeParse(c.req.query());
    if (!q.success) {
      const i = q.error.issues[0];
      return c.json({ error: `query ${i.path.join(".") || "(parameters)"}: ${i.message}` }, 400);
    }
    const runs = (await collectReports(dir)).filter((r) =>
      (!q.data.family || r.family === q.data.family) &&
      (!q.data.adapter || r.adapter === q.data.adapter)
    );
    return c.json({ runs });
  });
  app.get("/api/runs/:id", async (c) => {
    const report = await loadRun(dir, c.req.param("id"));
    return report
      ? c.json(report)
      : c.json({ error: `no run ${JSON.stringify(c.req.param("id"))}` }, 404);
  });
  app.get("/runs/:id", async (c) => {
    const report = await loadRun(dir, c.req.param("id"));
    return report
      ? c.html(renderRunPage(report, { gridHref: "/" }))
      : c.html(notFoundPage(`no run ${c.req.param("id")}`), 404);
  });
  app.get(
    "/",
    async (c) =>
      c.html(renderGridPage(await collectReports(dir), {
        runHref: (id) => `/runs/${id}`,
        selfcheck: await loadSelfCheck(dir),
      })),
  );
  app.notFound((c) =>
    c.req.path.startsWith("/api/")
      ? c.json({ error: "not found" }, 404)
      : c.html(notFoundPage(c.req.path), 404)
  );
  app.onError((err, c) => c.json({ error: err.message }, 500));
  return app;
}
