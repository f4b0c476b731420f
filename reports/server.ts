/**
 * The report server (Hono) over a {@link ReportStore}:
 *   /                        grid overview (HTML: tables, SVG plots, invalid entries)
 *   /runs/:id                one run (HTML)
 *   /api/runs                GET: run summaries and invalid entries (JSON;
 *                            ?family=commonsense|mmlu&adapter=NAME); POST: publish a report
 *   /api/runs/:id            one full report (JSON)
 *   /api/runs/:id/adapters   GET: the adapter file; PUT: publish it
 *   /api/selfcheck           the kernel self-check (JSON)
 *   /health
 * Publishing needs a bearer token from the options; without one the server is read-only and
 * POST/PUT are 405 like any method a path does not serve (with an `Allow` header). Run ids are
 * checked against the report id pattern and a length limit before a store sees them. Every
 * response carries security headers; HEAD answers as GET would, without the body; errors
 * answer a generic message and log the detail to stderr.
 * Deno.serve has no header-read or idle timeout to set; handlers run under a request timeout
 * (504), and a deployment that needs connection timeouts puts a proxy in front.
 * A request target (path and query) longer than `maxUrlBytes` (8 KiB) answers 414 with the same
 * headers, before routing. Deno.serve itself answers a request line of 64 KiB or more with a bare
 * 400 before the app sees it (its HTTP parser's limit); what reaches the app is held to ours.
 */
import { Hono, HTTPException, timeout } from "../deps/hono.ts";
import { z } from "../deps/zod.ts";
import { renderGridPage, renderRunPage } from "./html.ts";
import { FAMILIES } from "../grid/config.ts";
import type { RunReport } from "../grid/schema.ts";
import { escapeXml } from "./svg.ts";
import {
  isRunId,
  type Listing,
  MAX_ADAPTER_BYTES,
  type PutResult,
  type ReportStore,
} from "./store/store.ts";
import { openFolderStore } from "./store/folder.ts";

/**
 * The report server as a fetch handler (a Hono app): `Deno.serve(app.fetch)`, or a serverless
 * host's fetch entry; `request` answers a path in-process (tests).
 */
export interface ReportApp {
  /** Answer one HTTP request. */
  fetch(request: Request): Promise<Response>;
  /** Answer a request for a path or URL without a network. */
  request(input: string | Request | URL, init?: RequestInit): Promise<Response>;
}

/** Options of {@link createReportApp}: a store, or a reports folder to open as one. */
export interface ReportAppOptions {
  /** Where the reports live. */
  store?: ReportStore;
  /** A reports folder served through a folder store (when `store` is not given). */
  reportsDir?: string;
  /** Bearer token that POST/PUT must carry; absent or empty: the server is read-only. */
  publishToken?: string;
  /** Largest report body accepted (bytes; default 32 MiB). */
  maxBodyBytes?: number;
  /** Longest a handler may take before a 504 (ms; default 30 000). */
  requestTimeoutMs?: number;
  /** Longest request target (path and query) answered; longer ones get 414 (default 8 KiB). */
  maxUrlBytes?: number;
}

/** Headers on every response: no scripts, no framing, no sniffing, no referrer. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  // The pages are inline styles and inline SVG, with no scripts and no external resources.
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; " +
    "form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

const RunsQuery = z.object({
  family: z.enum(FAMILIES).optional(),
  adapter: z.string().max(100).regex(/^[a-z0-9_]+$/).optional(),
}).strict();

function notFoundPage(what: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>not found</title></head>` +
    `<body><h1>Not found</h1><p>${escapeXml(what)}</p><p><a href="/">grid</a></p></body></html>`;
}

/** A path or id cut short for a message (never echo kilobytes back). */
const short = (s: string) => (s.length > 80 ? `${s.slice(0, 80)}…` : s);

/** Equal strings in time independent of where they differ (digests make the lengths equal). */
async function sameSecret(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [x, y] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(a)),
    crypto.subtle.digest("SHA-256", enc.encode(b)),
  ]);
  const u = new Uint8Array(x);
  const v = new Uint8Array(y);
  let diff = 0;
  for (let i = 0; i < u.length; i++) diff |= u[i] ^ v[i];
  return diff === 0;
}

/** The request body, refused past `max` bytes (from content-length, then while reading). */
async function readBody(req: Request, max: number): Promise<Uint8Array | "too large"> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > max) return "too large";
  if (!req.body) return new Uint8Array();
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel();
      return "too large";
    }
    parts.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The path and query of an absolute URL (what the request line carried). */
function requestTarget(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  return start < 0 ? "/" : url.slice(start);
}

/** 414 for an over-long URL, before routing: the URL is neither parsed further nor echoed. */
async function tooLong(request: Request): Promise<Response> {
  await request.body?.cancel();
  const body = request.method === "HEAD" ? null : JSON.stringify({ error: "request URL too long" });
  return new Response(body, {
    status: 414,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}

/** Known paths and the methods each serves (beyond these: 405 with `Allow`). */
function allowed(publish: boolean): [string, string[]][] {
  return [
    ["/health", ["GET", "HEAD"]],
    ["/", ["GET", "HEAD"]],
    ["/runs/:id", ["GET", "HEAD"]],
    ["/api/runs", publish ? ["GET", "HEAD", "POST"] : ["GET", "HEAD"]],
    ["/api/runs/:id", ["GET", "HEAD"]],
    ["/api/runs/:id/adapters", publish ? ["GET", "HEAD", "PUT"] : ["GET", "HEAD"]],
    ["/api/selfcheck", ["GET", "HEAD"]],
  ];
}

const STATUS: Record<PutResult["status"], 200 | 201 | 400 | 409> = {
  created: 201,
  unchanged: 200,
  invalid: 400,
  conflict: 409,
};

/** Build the Hono app serving `options.store` (or a folder store over `options.reportsDir`). */
export function createReportApp(options: ReportAppOptions): ReportApp {
  const store = options.store ?? openFolderStore(options.reportsDir ?? "reports/out");
  const token = options.publishToken || undefined;
  const maxBody = options.maxBodyBytes ?? 32 * 1024 * 1024;
  const app = new Hono();

  // What is derived from a listing is computed once per listing (stores keep it while unchanged).
  const runsJson = new WeakMap<Listing, Map<string, string>>();
  const gridHtml = new WeakMap<Listing, { selfcheck: unknown; html: string }>();
  const reportJson = new WeakMap<RunReport, string>();

  app.use("*", timeout(options.requestTimeoutMs ?? 30_000));

  app.get("/health", (c) => c.json({ ok: true }));
  app.get("/api/selfcheck", async (c) => {
    const report = await store.selfcheck();
    return report ? c.json(report) : c.json({ error: "no self-check report yet" }, 404);
  });
  app.get("/api/runs", async (c) => {
    const q = RunsQuery.safeParse(c.req.query());
    if (!q.success) {
      const i = q.error.issues[0];
      return c.json({ error: `query ${i.path.join(".") || "(parameters)"}: ${i.message}` }, 400);
    }
    const listing = await store.list();
    let cache = runsJson.get(listing);
    if (!cache) runsJson.set(listing, cache = new Map());
    const key = `${q.data.family ?? ""}\u0000${q.data.adapter ?? ""}`;
    let body = cache.get(key);
    if (body === undefined) {
      const runs = listing.runs.filter((r) =>
        (!q.data.family || r.family === q.data.family) &&
        (!q.data.adapter || r.adapter === q.data.adapter)
      );
      body = JSON.stringify({ runs, invalid: listing.invalid });
      if (cache.size < 256) cache.set(key, body);
    }
    return c.body(body, 200, { "content-type": "application/json; charset=UTF-8" });
  });
  // Publishing routes exist only with a token (without one, POST/PUT fall through to 405).
  if (token !== undefined) {
    app.post("/api/runs", async (c) => {
      const body = await readBody(c.req.raw, maxBody);
      if (body === "too large") return c.json({ error: `body larger than ${maxBody} bytes` }, 413);
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(body));
      } catch {
        return c.json({ error: "body: not valid JSON" }, 400);
      }
      const result = await store.put(json);
      const message = "reason" in result ? { error: result.reason } : {};
      return c.json({ status: result.status, id: result.id, ...message }, STATUS[result.status]);
    });
    app.put("/api/runs/:id/adapters", async (c) => {
      const id = c.req.param("id");
      if (!isRunId(id)) return c.json({ error: `no run ${JSON.stringify(short(id))}` }, 404);
      const body = await readBody(c.req.raw, MAX_ADAPTER_BYTES);
      if (body === "too large") {
        return c.json({ error: `body larger than ${MAX_ADAPTER_BYTES} bytes` }, 413);
      }
      const result = await store.putAdapter(id, body);
      const message = "reason" in result ? { error: result.reason } : {};
      const status = result.status === "invalid" && result.reason.startsWith("no run")
        ? 404
        : STATUS[result.status];
      return c.json({ status: result.status, id, ...message }, status);
    });
  }
  app.get("/api/runs/:id", async (c) => {
    const id = c.req.param("id");
    const report = isRunId(id) ? await store.get(id) : null;
    if (!report) return c.json({ error: `no run ${JSON.stringify(short(id))}` }, 404);
    let body = reportJson.get(report);
    if (body === undefined) reportJson.set(report, body = JSON.stringify(report));
    return c.body(body, 200, { "content-type": "application/json; charset=UTF-8" });
  });
  app.get("/api/runs/:id/adapters", async (c) => {
    const id = c.req.param("id");
    const bytes = isRunId(id) ? await store.adapter(id) : null;
    if (!bytes) return c.json({ error: `no adapter file for ${JSON.stringify(short(id))}` }, 404);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": "application/octet-stream",
    });
  });
  app.get("/runs/:id", async (c) => {
    const id = c.req.param("id");
    const report = isRunId(id) ? await store.get(id) : null;
    return report
      ? c.html(renderRunPage(report, { gridHref: "/" }))
      : c.html(notFoundPage(`no run ${short(id)}`), 404);
  });
  app.get("/", async (c) => {
    const listing = await store.list();
    const selfcheck = await store.selfcheck();
    const hit = gridHtml.get(listing);
    if (hit && hit.selfcheck === selfcheck) return c.html(hit.html);
    // The grid page plots the stored down-sampled curves, never the full ones.
    const reports: RunReport[] = await Promise.all(listing.runs.map(async (s) => ({
      ...s,
      lossCurve: (await store.curve(s.id)) ?? [],
    })));
    const html = renderGridPage(reports, {
      runHref: (id) => `/runs/${id}`,
      selfcheck,
      invalid: listing.invalid,
    });
    gridHtml.set(listing, { selfcheck, html });
    return c.html(html);
  });

  // Known paths with a method they do not serve: 405 naming the ones they do.
  for (const [path, methods] of allowed(token !== undefined)) {
    app.all(path, (c) => {
      const allow = methods.join(", ");
      if (c.req.method === "OPTIONS") return c.body(null, 204, { allow });
      return c.json({ error: `method ${short(c.req.method)} not allowed` }, 405, { allow });
    });
  }
  app.notFound((c) =>
    c.req.path.startsWith("/api/")
      ? c.json({ error: "not found" }, 404)
      : c.html(notFoundPage(short(c.req.path)), 404)
  );
  app.onError((err, c) => {
    if (err instanceof HTTPException) return c.json({ error: err.message }, err.status);
    // The detail (paths, file errors) goes to the log, never to the client.
    console.error(`report server: ${c.req.method} ${short(c.req.path)}: ${err.stack ?? err}`);
    return c.json({ error: "internal error" }, 500);
  });

  const publishing = new Set(["POST", "PUT"]);
  async function dispatch(request: Request): Promise<Response> {
    if (publishing.has(request.method) && token !== undefined) {
      const path = new URL(request.url).pathname;
      const guarded = path === "/api/runs" || /^\/api\/runs\/[^/]+\/adapters$/.test(path);
      if (guarded) {
        const auth = request.headers.get("authorization") ?? "";
        const given = auth.startsWith("Bearer ") ? auth.slice(7) : "";
        if (!await sameSecret(given, token)) {
          await request.body?.cancel();
          return Response.json({ error: "missing or wrong bearer token" }, {
            status: 401,
            headers: { "www-authenticate": 'Bearer realm="moka reports"' },
          });
        }
      }
    }
    if (request.method !== "HEAD") return await app.fetch(request);
    // HEAD: the GET response's status and headers, its length, no body.
    const get = await app.fetch(
      new Request(request.url, { method: "GET", headers: request.headers }),
    );
    const length = (await get.arrayBuffer()).byteLength;
    const headers = new Headers(get.headers);
    headers.set("content-length", String(length));
    return new Response(null, { status: get.status, headers });
  }

  const maxUrl = options.maxUrlBytes ?? 8 * 1024;
  async function handle(request: Request): Promise<Response> {
    const res = requestTarget(request.url).length > maxUrl
      ? await tooLong(request)
      : await dispatch(request);
    const headers = new Headers(res.headers);
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) headers.set(k, v);
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }

  return {
    fetch: handle,
    request: (input, init) => {
      const req = input instanceof Request ? input : new Request(
        typeof input === "string" && input.startsWith("/") ? `http://localhost${input}` : input,
        init,
      );
      return handle(init && input instanceof Request ? new Request(req, init) : req);
    },
  };
}
