/**
 * Publish a run report to a report server (`POST /api/runs` with a bearer token), retrying
 * network errors and 5xx answers with bounded exponential backoff. 201 (created) and 200 (the
 * same report again) are success; 409 throws a {@link PublishConflictError} naming the id; any
 * other answer throws at once with the server's message.
 */
import type { RunReport } from "../grid/schema.ts";

/** The server holds another report under this id (another config hash or content). */
export class PublishConflictError extends Error {
  /** The run id. */
  readonly id: string;
  /** The error for run `id`, with the server's message. */
  constructor(id: string, message: string) {
    super(`publish ${id}: conflict: ${message}`);
    this.name = "PublishConflictError";
    this.id = id;
  }
}

/** Options of {@link publishRun}. */
export interface PublishOptions {
  /** Retries after the first try (default 4). */
  retries?: number;
  /** First backoff delay (ms; default 250), doubled per retry. */
  baseDelayMs?: number;
  /** Longest backoff delay (ms; default 5000). */
  maxDelayMs?: number;
  /** Per-try timeout (ms; default 60 000). */
  timeoutMs?: number;
  /** The fetch to use (default: global fetch). */
  fetch?: typeof fetch;
}

/** What the server did with a published report. */
export interface PublishResult {
  /** Run id. */
  id: string;
  /** `created` (201) or `unchanged` (200: the same report was there). */
  status: "created" | "unchanged";
  /** Tries it took. */
  attempts: number;
}

/** Publish `report` to the server at `url` (its root, e.g. `https://reports.example`). */
export async function publishRun(
  url: string | URL,
  token: string,
  report: RunReport,
  options: PublishOptions = {},
): Promise<PublishResult> {
  return await send(url, "api/runs", "POST", token, report.id, {
    body: JSON.stringify(report),
    type: "application/json",
  }, options);
}

/**
 * Upload a published run's adapter file (`PUT /api/runs/:id/adapters`); the server checks its
 * SHA-256 against the report's `adapterChecksum`. Same answers and retries as {@link publishRun}.
 */
export async function publishAdapters(
  url: string | URL,
  token: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  options: PublishOptions = {},
): Promise<PublishResult> {
  return await send(url, `api/runs/${encodeURIComponent(id)}/adapters`, "PUT", token, id, {
    body: bytes,
    type: "application/octet-stream",
  }, options);
}

async function send(
  url: string | URL,
  path: string,
  method: "POST" | "PUT",
  token: string,
  id: string,
  payload: { body: string | Uint8Array<ArrayBuffer>; type: string },
  options: PublishOptions,
): Promise<PublishResult> {
  const retries = options.retries ?? 4;
  const base = options.baseDelayMs ?? 250;
  const max = options.maxDelayMs ?? 5000;
  const doFetch = options.fetch ?? fetch;
  const endpoint = new URL(path, new URL(url).href.replace(/\/?$/, "/"));
  let last = "";
  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    if (attempt > 1) {
      // Full jitter, so publishers that failed together do not retry together.
      const cap = Math.min(max, base * 2 ** (attempt - 2));
      await new Promise((r) => setTimeout(r, cap / 2 + Math.random() * cap / 2));
    }
    let res: Response;
    try {
      res = await doFetch(endpoint, {
        method,
        headers: { "authorization": `Bearer ${token}`, "content-type": payload.type },
        body: payload.body,
        signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
      });
    } catch (e) {
      last = (e as Error).message;
      continue;
    }
    const text = await res.text();
    let message = text.slice(0, 300);
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? message;
    } catch {
      // not JSON: keep the text
    }
    if (res.status === 201 || res.status === 200) {
      return { id, status: res.status === 201 ? "created" : "unchanged", attempts: attempt };
    }
    if (res.status === 409) throw new PublishConflictError(id, message);
    if (res.status < 500) throw new Error(`publish ${id}: HTTP ${res.status}: ${message}`);
    last = `HTTP ${res.status}: ${message}`;
  }
  throw new Error(`publish ${id}: gave up after ${retries + 1} tries (${last})`);
}
