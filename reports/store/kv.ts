/**
 * Deno KV as a {@link ReportStore}. Keys:
 *   ["runs", id]                       → { summary, token, bytes } (the listing row; the commit)
 *   ["curve", id]                      → down-sampled loss curve
 *   ["chunk", "report", id, token, i]  → ≤ 60 000 bytes of the report's JSON
 *   ["adapters", id]                   → { token, bytes }
 *   ["chunk", "adapter", id, token, i] → ≤ 60 000 bytes of the adapter file
 *   ["meta", "version"]                → changes with every commit (listing cache key)
 * KV values are at most 64 KiB and an atomic operation is bounded in size, so a report is written
 * as chunks under a fresh token first (several operations), then committed by one atomic
 * operation that sets ["runs", id] only if it is absent (`check` with a null versionstamp): of
 * two concurrent puts of one id exactly one commits, the other removes its chunks and compares.
 * Chunks of a put that died before its commit are unreferenced and never read.
 * The self-check report is not published to KV: `selfcheck()` reads ["selfcheck"] when a
 * deployment sets it, else null.
 */
import { type RunReport, type SelfCheckReport, SelfCheckReportSchema } from "../../grid/schema.ts";
import {
  compareReports,
  downsampleCurve,
  isRunId,
  type Listing,
  MAX_ADAPTER_BYTES,
  MAX_REPORT_BYTES,
  type PutResult,
  type ReportStore,
  type RunSummary,
  sha256Hex,
  summarize,
  validateReport,
} from "./store.ts";

const CHUNK_BYTES = 60_000;
// Chunks per atomic operation: well inside KV's per-operation size limit.
const CHUNKS_PER_OP = 8;

interface RunRecord {
  summary: RunSummary;
  token: string;
  bytes: number;
}

interface AdapterRecord {
  token: string;
  bytes: number;
}

/** The Deno KV store; see the module comment. */
export class KvStore implements ReportStore {
  readonly #kv: Deno.Kv;
  readonly #ownsKv: boolean;
  #listing: { stamp: string | null; listing: Listing } | null = null;
  #listing_: Promise<Listing> | null = null;
  #recent = new Map<string, RunReport>();

  /** A store over an open database; `ownsKv`: {@link KvStore.close} closes it. */
  constructor(kv: Deno.Kv, ownsKv = false) {
    this.#kv = kv;
    this.#ownsKv = ownsKv;
  }

  async #writeChunks(kind: string, id: string, token: string, bytes: Uint8Array): Promise<void> {
    const n = Math.ceil(bytes.length / CHUNK_BYTES);
    for (let i = 0; i < n; i += CHUNKS_PER_OP) {
      const op = this.#kv.atomic();
      for (let j = i; j < Math.min(n, i + CHUNKS_PER_OP); j++) {
        op.set(["chunk", kind, id, token, j], bytes.slice(j * CHUNK_BYTES, (j + 1) * CHUNK_BYTES));
      }
      const res = await op.commit();
      if (!res.ok) throw new Error(`kv: writing chunks of ${id} failed`);
    }
  }

  async #readChunks(kind: string, id: string, token: string, bytes: number): Promise<Uint8Array> {
    const out = new Uint8Array(bytes);
    let at = 0;
    for await (const e of this.#kv.list<Uint8Array>({ prefix: ["chunk", kind, id, token] })) {
      if (at + e.value.length > bytes) throw new Error(`kv: chunks of ${id} exceed their size`);
      out.set(e.value, at);
      at += e.value.length;
    }
    if (at !== bytes) throw new Error(`kv: chunks of ${id} are incomplete`);
    return out;
  }

  async #deleteChunks(kind: string, id: string, token: string): Promise<void> {
    const keys: Deno.KvKey[] = [];
    for await (const e of this.#kv.list({ prefix: ["chunk", kind, id, token] })) keys.push(e.key);
    for (let i = 0; i < keys.length; i += 100) {
      const op = this.#kv.atomic();
      for (const k of keys.slice(i, i + 100)) op.delete(k);
      await op.commit();
    }
  }

  /** Summaries of every committed run (KV holds only validated reports: no invalid entries). */
  list(): Promise<Listing> {
    // Concurrent callers share one read; the rows are re-read only when the version changed.
    this.#listing_ ??= this.#list().finally(() => this.#listing_ = null);
    return this.#listing_;
  }

  async #list(): Promise<Listing> {
    const version = await this.#kv.get(["meta", "version"]);
    if (this.#listing && this.#listing.stamp === version.versionstamp) return this.#listing.listing;
    const runs: RunSummary[] = [];
    for await (const e of this.#kv.list<RunRecord>({ prefix: ["runs"] })) {
      runs.push(e.value.summary);
    }
    runs.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const listing = Object.freeze({ runs: Object.freeze(runs), invalid: Object.freeze([]) });
    this.#listing = { stamp: version.versionstamp, listing };
    return listing;
  }

  /** A full report, from its chunks. */
  async get(id: string): Promise<RunReport | null> {
    if (!isRunId(id)) return null;
    const rec = await this.#kv.get<RunRecord>(["runs", id]);
    if (!rec.value) return null;
    const key = `${id}\u0000${rec.value.token}`;
    const hit = this.#recent.get(key);
    if (hit) return hit;
    const bytes = await this.#readChunks("report", id, rec.value.token, rec.value.bytes);
    const report = JSON.parse(new TextDecoder().decode(bytes)) as RunReport;
    this.#recent.set(key, report);
    while (this.#recent.size > 8) this.#recent.delete(this.#recent.keys().next().value!);
    return report;
  }

  /** The down-sampled loss curve. */
  async curve(id: string): Promise<[number, number][] | null> {
    if (!isRunId(id)) return null;
    return (await this.#kv.get<[number, number][]>(["curve", id])).value;
  }

  /** ["selfcheck"] when set and valid. */
  async selfcheck(): Promise<SelfCheckReport | null> {
    const v = (await this.#kv.get(["selfcheck"])).value;
    const parsed = SelfCheckReportSchema.safeParse(v);
    return v && parsed.success ? parsed.data : null;
  }

  /** Add a report: chunks first, then one atomic commit that only an absent id passes. */
  async put(input: unknown): Promise<PutResult> {
    const report = validateReport(input);
    if ("status" in report) return report;
    const id = report.id;
    const existing = await this.#existing(report);
    if (existing) return existing;
    const bytes = new TextEncoder().encode(JSON.stringify(report));
    if (bytes.length > MAX_REPORT_BYTES) {
      return { status: "invalid", id, reason: `report is larger than ${MAX_REPORT_BYTES} bytes` };
    }
    const token = crypto.randomUUID();
    await this.#writeChunks("report", id, token, bytes);
    let ok = false;
    try {
      const res = await this.#kv.atomic()
        .check({ key: ["runs", id], versionstamp: null })
        .set(["runs", id], { summary: summarize(report), token, bytes: bytes.length })
        .set(["curve", id], downsampleCurve(report.lossCurve))
        .set(["meta", "version"], token)
        .commit();
      ok = res.ok;
    } catch (e) {
      await this.#deleteChunks("report", id, token);
      // KV refuses values over 64 KiB: the listing row of this report is too large.
      if (e instanceof TypeError && /too large/i.test(e.message)) {
        return { status: "invalid", id, reason: "report summary exceeds 64 KiB" };
      }
      throw e;
    }
    if (ok) return { status: "created", id };
    await this.#deleteChunks("report", id, token);
    return await this.#existing(report) ??
      { status: "conflict", id, reason: `run ${id} is being written` };
  }

  async #existing(report: RunReport): Promise<PutResult | null> {
    const stored = await this.get(report.id);
    return stored ? compareReports(stored, report) : null;
  }

  /** Add a run's adapter file (chunked, committed like a report). */
  async putAdapter(id: string, bytes: Uint8Array): Promise<PutResult> {
    const report = await this.get(id);
    if (!report) return { status: "invalid", id, reason: `no run ${id}` };
    if (!report.adapterChecksum) {
      return { status: "invalid", id, reason: `run ${id} has no adapter (base model)` };
    }
    if (bytes.length > MAX_ADAPTER_BYTES) {
      return { status: "invalid", id, reason: `adapter is larger than ${MAX_ADAPTER_BYTES} bytes` };
    }
    if (await sha256Hex(bytes) !== report.adapterChecksum) {
      return { status: "invalid", id, reason: "adapter SHA-256 differs from adapterChecksum" };
    }
    // The checksum pins the content: a stored adapter of this run has these bytes.
    if ((await this.#kv.get(["adapters", id])).value) return { status: "unchanged", id };
    const token = crypto.randomUUID();
    await this.#writeChunks("adapter", id, token, bytes);
    const res = await this.#kv.atomic()
      .check({ key: ["adapters", id], versionstamp: null })
      .set(["adapters", id], { token, bytes: bytes.length } satisfies AdapterRecord)
      .commit();
    if (res.ok) return { status: "created", id };
    await this.#deleteChunks("adapter", id, token);
    return { status: "unchanged", id };
  }

  /** A run's adapter file, from its chunks. */
  async adapter(id: string): Promise<Uint8Array | null> {
    if (!isRunId(id)) return null;
    const rec = await this.#kv.get<AdapterRecord>(["adapters", id]);
    return rec.value
      ? await this.#readChunks("adapter", id, rec.value.token, rec.value.bytes)
      : null;
  }

  /** Close the database when this store opened it. */
  close(): void {
    if (this.#ownsKv) this.#kv.close();
  }
}

/**
 * A KV store over `path` (`Deno.openKv(path)`; no path: the host's default database, as on a
 * serverless Deno host), or over an open `Deno.Kv`, which the caller then closes.
 */
export async function openKvStore(path?: string | Deno.Kv): Promise<KvStore> {
  if (typeof path === "object") return new KvStore(path);
  return new KvStore(await Deno.openKv(path), true);
}
