/**
 * The reports folder as a {@link ReportStore}: `runs/<id>/report.json` as `deno task reproduce`
 * writes it. An in-memory index keyed by folder name is refreshed at most once per `refreshMs`
 * by re-stating the files; only files whose (mtime, size, inode) changed are read and validated
 * again. Only regular files below the folder are read: symlinks (run folder or file), FIFOs and
 * other non-regular files are refused from `lstat` before anything is opened, so no request can
 * block on a pipe or follow a link out of the folder; oversize files are refused before reading.
 * Such entries are listed as invalid with a reason that names no absolute path and no content.
 */
import { parseSelfCheckReport, type RunReport, type SelfCheckReport } from "../../grid/schema.ts";
import {
  compareReports,
  downsampleCurve,
  type InvalidEntry,
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

/** Options of {@link openFolderStore}. */
export interface FolderStoreOptions {
  /** Least time between two re-stats of the folder (ms; default 1000, 0: on every listing). */
  refreshMs?: number;
  /** Largest report file read (bytes; default 64 MiB). */
  maxReportBytes?: number;
}

type Indexed =
  | { stamp: string; summary: RunSummary; curve: [number, number][] }
  | { stamp: string; reason: string };

/** A read refused with a reason safe to show. */
class Refused extends Error {}

function stampOf(info: Deno.FileInfo): string {
  return `${info.mtime?.getTime()}:${info.size}:${info.ino}`;
}

/** What `lstat` says about `path`, as a regular file to read, absent, or refused. */
async function inspectFile(
  path: string,
  name: string,
  max: number,
): Promise<Deno.FileInfo | null> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Refused(`${name} cannot be inspected`);
  }
  if (info.isSymlink) throw new Refused(`${name} is a symlink`);
  if (!info.isFile) throw new Refused(`${name} is not a regular file`);
  if (info.size > max) throw new Refused(`${name} is larger than ${max} bytes`);
  return info;
}

/**
 * Read a file `inspectFile` accepted: the opened file must still be the regular file with that
 * inode (no swap for a link between the two calls), and reading stops past `max` bytes.
 */
async function readChecked(
  path: string,
  name: string,
  info: Deno.FileInfo,
  max: number,
): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    throw new Refused(`${name} cannot be opened`);
  }
  try {
    const now = await file.stat();
    if (!now.isFile || now.ino !== info.ino) throw new Refused(`${name} changed while opening`);
    const parts: Uint8Array[] = [];
    let total = 0;
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      total += n;
      if (total > max) throw new Refused(`${name} is larger than ${max} bytes`);
      parts.push(buf.slice(0, n));
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  } finally {
    file.close();
  }
}

/** Parse a report's bytes, refusing with the field and never with the text. */
function parseRun(bytes: Uint8Array, folder: string): RunReport {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    // The parser's message quotes the text: say only what is wrong.
    throw new Refused("report.json is not valid JSON");
  }
  const r = validateReport(json);
  if ("status" in r) throw new Refused(`report.json: ${r.reason}`);
  if (r.id !== folder) throw new Refused(`report id ${r.id} differs from its folder`);
  return r;
}

/** A short, printable form of a folder name for an invalid entry. */
function entryName(name: string): string {
  const clean = name.replace(/[^\x20-\x7e]/g, "?");
  return `runs/${clean.length > 80 ? clean.slice(0, 79) + "…" : clean}`;
}

/** The folder store; see the module comment. */
export class FolderStore implements ReportStore {
  readonly #dir: string;
  readonly #refreshMs: number;
  readonly #max: number;
  #index = new Map<string, Indexed>();
  #listing: Listing = { runs: [], invalid: [] };
  #selfcheck: { stamp: string; report: SelfCheckReport | null; reason?: string } | null = null;
  #checkedAt = -Infinity;
  #dirtyAt = -Infinity;
  #refreshing: Promise<void> | null = null;
  // The last few full reports read, by folder and stamp (the run page and the API ask again).
  #recent = new Map<string, RunReport>();

  /** A store over the reports folder `dir` (see {@link openFolderStore}). */
  constructor(dir: string, options: FolderStoreOptions = {}) {
    this.#dir = dir;
    this.#refreshMs = options.refreshMs ?? 1000;
    this.#max = options.maxReportBytes ?? MAX_REPORT_BYTES;
  }

  /**
   * Refresh unless a refresh started within `refreshMs` and after the last write: `#checkedAt` is
   * when the last finished refresh started, so one in flight before a write is not enough.
   */
  async #fresh(): Promise<void> {
    const need = Math.max(performance.now() - this.#refreshMs, this.#dirtyAt);
    while (this.#checkedAt < need) {
      // One refresh at a time; concurrent callers share it.
      this.#refreshing ??= (async () => {
        const started = performance.now();
        try {
          await this.#refresh();
        } finally {
          this.#checkedAt = Math.max(this.#checkedAt, started);
          this.#refreshing = null;
        }
      })();
      await this.#refreshing;
    }
  }

  async #refresh(): Promise<void> {
    const index = new Map<string, Indexed>();
    const invalid: InvalidEntry[] = [];
    const runs = `${this.#dir}/runs`;
    let names: string[] = [];
    try {
      const info = await Deno.lstat(runs);
      if (info.isSymlink || !info.isDirectory) {
        invalid.push({ entry: "runs", reason: "not a directory (symlinks are refused)" });
      } else {
        for await (const e of Deno.readDir(runs)) {
          if (!e.name.startsWith(".")) names.push(e.name);
        }
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        console.error(`report store: ${runs}: ${(e as Error).message}`);
        invalid.push({ entry: "runs", reason: "cannot be read" });
      }
      names = [];
    }
    for (const name of names.sort()) {
      const entry = await this.#entry(name);
      if (entry) index.set(name, entry);
    }
    await this.#refreshSelfcheck(invalid);
    let changed = index.size !== this.#index.size;
    for (const [name, e] of index) {
      if (this.#index.get(name)?.stamp !== e.stamp) changed = true;
    }
    this.#index = index;
    const sc = this.#selfcheck?.reason
      ? [{ entry: "selfcheck.json", reason: this.#selfcheck.reason }]
      : [];
    const allInvalid = [
      ...invalid,
      ...sc,
      ...[...index].flatMap(([name, e]) =>
        "reason" in e ? [{ entry: entryName(name), reason: e.reason }] : []
      ),
    ];
    // Keep the same listing object while nothing changed (callers cache by identity).
    if (changed || JSON.stringify(allInvalid) !== JSON.stringify(this.#listing.invalid)) {
      this.#listing = Object.freeze({
        runs: Object.freeze([...index.values()].flatMap((e) => "summary" in e ? [e.summary] : [])),
        invalid: Object.freeze(allInvalid),
      });
    }
  }

  /** The index entry of one run folder (null: not a run yet, e.g. no report written). */
  async #entry(name: string): Promise<Indexed | null> {
    const dir = `${this.#dir}/runs/${name}`;
    try {
      const info = await Deno.lstat(dir);
      if (info.isSymlink) throw new Refused("run folder is a symlink");
      if (!info.isDirectory) throw new Refused("not a directory");
      if (!isRunId(name)) throw new Refused("folder name is not a run id");
      const file = await inspectFile(`${dir}/report.json`, "report.json", this.#max);
      if (!file) return null; // an unfinished run
      const stamp = stampOf(file);
      const known = this.#index.get(name);
      if (known?.stamp === stamp) return known;
      try {
        const report = parseRun(
          await readChecked(`${dir}/report.json`, "report.json", file, this.#max),
          name,
        );
        return { stamp, summary: summarize(report), curve: downsampleCurve(report.lossCurve) };
      } catch (e) {
        if (e instanceof Refused) return { stamp, reason: e.message };
        throw e;
      }
    } catch (e) {
      if (e instanceof Refused) return { stamp: `refused:${e.message}`, reason: e.message };
      if (e instanceof Deno.errors.NotFound) return null; // removed while listing
      console.error(`report store: ${dir}: ${(e as Error).message}`);
      return { stamp: "error", reason: "cannot be read" };
    }
  }

  async #refreshSelfcheck(invalid: InvalidEntry[]): Promise<void> {
    const path = `${this.#dir}/selfcheck.json`;
    try {
      const info = await inspectFile(path, "selfcheck.json", this.#max);
      if (!info) {
        this.#selfcheck = null;
        return;
      }
      const stamp = stampOf(info);
      if (this.#selfcheck?.stamp === stamp) return;
      const bytes = await readChecked(path, "selfcheck.json", info, this.#max);
      try {
        const report = parseSelfCheckReport(new TextDecoder().decode(bytes), "selfcheck.json");
        this.#selfcheck = { stamp, report };
      } catch (e) {
        const m = (e as Error).message;
        this.#selfcheck = {
          stamp,
          report: null,
          reason: m.includes("not valid JSON")
            ? "not valid JSON"
            : m.replace(/^selfcheck\.json: /, ""),
        };
      }
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      this.#selfcheck = null;
      invalid.push({ entry: "selfcheck.json", reason: e.message });
    }
  }

  #trimRecent() {
    while (this.#recent.size > 8) this.#recent.delete(this.#recent.keys().next().value!);
  }

  /**
   * `inspectFile` of `runs/<id>/<file>` after checking that `runs` and the run folder are real
   * directories: lstat does not follow the last component only, so the folders are checked too.
   */
  async #runFile(id: string, file: string, max: number): Promise<Deno.FileInfo | null> {
    for (const dir of [`${this.#dir}/runs`, `${this.#dir}/runs/${id}`]) {
      try {
        const info = await Deno.lstat(dir);
        if (info.isSymlink || !info.isDirectory) throw new Refused("run folder is a symlink");
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw e;
      }
    }
    return await inspectFile(`${this.#dir}/runs/${id}/${file}`, file, max);
  }

  /** Summaries of the valid runs and the refused entries. */
  async list(): Promise<Listing> {
    await this.#fresh();
    return this.#listing;
  }

  /** A full report, read again (and validated) only when its file changed. */
  async get(id: string): Promise<RunReport | null> {
    if (!isRunId(id)) return null;
    await this.#fresh();
    const e = this.#index.get(id);
    if (!e || !("summary" in e)) return null;
    const key = `${id}\u0000${e.stamp}`;
    const hit = this.#recent.get(key);
    if (hit) return hit;
    const path = `${this.#dir}/runs/${id}/report.json`;
    try {
      const info = await this.#runFile(id, "report.json", this.#max);
      if (!info) return null;
      const report = parseRun(await readChecked(path, "report.json", info, this.#max), id);
      this.#recent.set(`${id}\u0000${stampOf(info)}`, report);
      this.#trimRecent();
      return report;
    } catch (e) {
      if (e instanceof Refused) {
        this.#dirtyAt = performance.now(); // changed since the last refresh: list it on the next one
        return null;
      }
      throw e;
    }
  }

  /** The down-sampled loss curve of a valid run. */
  async curve(id: string): Promise<[number, number][] | null> {
    if (!isRunId(id)) return null;
    await this.#fresh();
    const e = this.#index.get(id);
    return e && "curve" in e ? e.curve : null;
  }

  /** `selfcheck.json`, when present and valid. */
  async selfcheck(): Promise<SelfCheckReport | null> {
    await this.#fresh();
    return this.#selfcheck?.report ?? null;
  }

  /** A real directory (not a symlink) at `path`, created when missing. */
  async #realDir(path: string): Promise<boolean> {
    try {
      await Deno.mkdir(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    const info = await Deno.lstat(path);
    return info.isDirectory && !info.isSymlink;
  }

  /**
   * Write `bytes` to `runs/<id>/<file>` unless it exists: a unique temporary file hard-linked to
   * the final name, so the file appears complete or not at all and of two writers exactly one
   * wins. Returns false when the file already existed.
   */
  async #createOnce(id: string, file: string, bytes: Uint8Array): Promise<boolean> {
    await Deno.mkdir(this.#dir, { recursive: true });
    if (!await this.#realDir(`${this.#dir}/runs`)) throw new Refused("runs is not a directory");
    const dir = `${this.#dir}/runs/${id}`;
    if (!await this.#realDir(dir)) throw new Refused(`run folder ${id} is not a directory`);
    const tmp = `${dir}/.${file}.${crypto.randomUUID()}.tmp`;
    const f = await Deno.open(tmp, { write: true, createNew: true });
    try {
      for (let at = 0; at < bytes.length;) at += await f.write(bytes.subarray(at));
      await f.syncData();
    } finally {
      f.close();
    }
    try {
      await Deno.link(tmp, `${dir}/${file}`);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) return false;
      throw e;
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
  }

  /** Add a report as `runs/<id>/report.json`; never overwrites. */
  async put(input: unknown): Promise<PutResult> {
    const report = validateReport(input);
    if ("status" in report) return report;
    const bytes = new TextEncoder().encode(JSON.stringify(report) + "\n");
    if (bytes.length > this.#max) {
      return {
        status: "invalid",
        id: report.id,
        reason: `report is larger than ${this.#max} bytes`,
      };
    }
    try {
      if (await this.#createOnce(report.id, "report.json", bytes)) {
        this.#dirtyAt = performance.now();
        return { status: "created", id: report.id };
      }
      const path = `${this.#dir}/runs/${report.id}/report.json`;
      const info = await this.#runFile(report.id, "report.json", this.#max);
      if (!info) throw new Refused("report.json vanished");
      return compareReports(
        parseRun(await readChecked(path, "report.json", info, this.#max), report.id),
        report,
      );
    } catch (e) {
      if (e instanceof Refused) {
        return {
          status: "conflict",
          id: report.id,
          reason: `run ${report.id} exists but is not a valid report (${e.message})`,
        };
      }
      throw e;
    }
  }

  /** Add `runs/<id>/adapters.safetensors` (checked against the report's checksum). */
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
    if (await this.#createOnce(id, "adapters.safetensors", bytes)) return { status: "created", id };
    const existing = await this.adapter(id);
    return existing && await sha256Hex(existing) === report.adapterChecksum
      ? { status: "unchanged", id }
      : { status: "conflict", id, reason: `run ${id} has another adapter file` };
  }

  /** `runs/<id>/adapters.safetensors`, when it is a regular file. */
  async adapter(id: string): Promise<Uint8Array | null> {
    if (!isRunId(id)) return null;
    const path = `${this.#dir}/runs/${id}/adapters.safetensors`;
    try {
      const info = await this.#runFile(id, "adapters.safetensors", MAX_ADAPTER_BYTES);
      return info ? await readChecked(path, "adapters.safetensors", info, MAX_ADAPTER_BYTES) : null;
    } catch (e) {
      if (e instanceof Refused || e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }

  /** Nothing to release (files are opened per read). */
  close(): void {}
}

/** Open the reports folder `dir` as a store (it need not exist yet). */
export function openFolderStore(dir: string, options: FolderStoreOptions = {}): FolderStore {
  return new FolderStore(dir, options);
}
