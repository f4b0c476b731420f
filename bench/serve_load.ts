/**
 * Load check of the report server, on loopback only and bounded in time:
 *   deno task serve-load [--seconds 10] [--connections 50] [--ingest]
 * Writes 14 full-size reports (31,900-step loss curves) to a temporary reports folder, starts
 * `tools/serve.ts --port 0` as a subprocess (so its memory is its own), drives `/api/runs` from
 * `--connections` concurrent fetch loops for `--seconds`, probes `/health` every 100 ms meanwhile,
 * checks that `/` renders, and prints JSON: req/s, p50/p99 latency, the server's peak RSS
 * (VmHWM), /health latencies, and whether each target is met.
 * `--ingest` also runs 8 concurrent publishers × 50 reports into a KV and a folder store through
 * the app's POST /api/runs, each trying to overwrite a report with another config hash, then
 * reopens each store and checks that every report is present exactly once.
 */
import { type CommandSpec, intOption, runCli } from "../tools/cli.ts";
import { runReport } from "../testing/run_report.ts";
import { createReportApp } from "../reports/server.ts";
import { openFolderStore } from "../reports/store/folder.ts";
import { openKvStore } from "../reports/store/kv.ts";
import type { ReportStore } from "../reports/store/store.ts";
import { PublishConflictError, publishRun } from "../reports/publish.ts";

const TARGETS = { reqPerSecond: 500, p99Ms: 200, rssMb: 300, healthMs: 100 };

const ADAPTERS = ["base", "lora", "dora", "krona", "lokr", "moka", "moka_s"];

function quantile(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
}

async function writeReports(dir: string): Promise<void> {
  for (let i = 0; i < 14; i++) {
    const adapter = ADAPTERS[i % 7];
    const id = `${adapter}-${i < 7 ? "commonsense" : "mmlu"}-s1`;
    const r = runReport(id, { steps: adapter === "base" ? 0 : 31_900 });
    await Deno.mkdir(`${dir}/runs/${id}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/runs/${id}/report.json`, JSON.stringify(r, null, 2));
  }
}

/** Start the server subprocess; resolve its pid and URL once it listens. */
async function startServer(dir: string) {
  const root = new URL("../", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      `${root}tools/serve.ts`,
      "--port",
      "0",
      "--reports",
      dir,
    ],
    // Deno.serve announces the address on stderr.
    stdout: "inherit",
    stderr: "piped",
    env: { MOKA_PUBLISH_TOKEN: "" },
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
    const m = /http:\/\/127\.0\.0\.1:(\d+)/.exec(seen);
    if (m) {
      // Keep draining stderr (to ours) so the server never blocks on a full pipe.
      (async () => {
        for (let r = await reader.read(); !r.done; r = await reader.read()) {
          Deno.stderr.writeSync(new TextEncoder().encode(r.value));
        }
      })();
      return { child, url: `http://127.0.0.1:${m[1]}` };
    }
  }
  child.kill();
  throw new Error(`server did not start: ${seen}`);
}

async function memoryMb(pid: number): Promise<{ rssMb: number; hwmMb: number }> {
  // Deno asks for --allow-all to read /proc directly; `cat` needs only --allow-run.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const status = new TextDecoder().decode(out.stdout);
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
}

async function load(seconds: number, connections: number) {
  const dir = await Deno.makeTempDir({ prefix: "moka-serve-load-" });
  await writeReports(dir);
  const { child, url } = await startServer(dir);
  try {
    const home = await fetch(`${url}/`);
    const homeBytes = (await home.arrayBuffer()).byteLength;
    const homeStatus = home.status;
    const warm = await fetch(`${url}/api/runs`);
    const runs = ((await warm.json()) as { runs: unknown[] }).runs.length;
    const latencies: number[] = [];
    let errors = 0;
    const end = performance.now() + seconds * 1000;
    const worker = async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          const res = await fetch(`${url}/api/runs`);
          await res.arrayBuffer();
          if (res.status !== 200) errors++;
          else latencies.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    };
    const health: number[] = [];
    const probe = async () => {
      while (performance.now() < end) {
        const t = performance.now();
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
        await res.arrayBuffer();
        health.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const started = performance.now();
    await Promise.all([...Array.from({ length: connections }, worker), probe()]);
    const elapsed = (performance.now() - started) / 1000;
    const after = await fetch(`${url}/`);
    await after.arrayBuffer();
    const mem = await memoryMb(child.pid);
    latencies.sort((a, b) => a - b);
    health.sort((a, b) => a - b);
    const result = {
      runs,
      homeStatus,
      homeBytes,
      homeAfterLoad: after.status,
      connections,
      seconds: +elapsed.toFixed(2),
      requests: latencies.length,
      errors,
      reqPerSecond: +(latencies.length / elapsed).toFixed(0),
      p50Ms: +quantile(latencies, 0.5).toFixed(1),
      p99Ms: +quantile(latencies, 0.99).toFixed(1),
      serverRssMb: +mem.rssMb.toFixed(0),
      serverPeakRssMb: +mem.hwmMb.toFixed(0),
      healthProbes: health.length,
      healthP50Ms: +quantile(health, 0.5).toFixed(1),
      healthMaxMs: +(health.at(-1) ?? NaN).toFixed(1),
    };
    return {
      ...result,
      targets: TARGETS,
      met: {
        home: homeStatus === 200 && after.status === 200,
        reqPerSecond: result.reqPerSecond >= TARGETS.reqPerSecond,
        p99: result.p99Ms <= TARGETS.p99Ms,
        rss: result.serverPeakRssMb <= TARGETS.rssMb,
        health: result.healthMaxMs < TARGETS.healthMs,
        errors: errors === 0,
      },
    };
  } finally {
    child.kill();
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

/** 8 publishers × 50 reports into `open()`'s store over HTTP, then a reopen. */
async function ingest(name: string, open: () => Promise<ReportStore>) {
  const publishers = 8;
  const each = 50;
  let store = await open();
  const app = createReportApp({ store, publishToken: "load" });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  const t = performance.now();
  const counts = { created: 0, unchanged: 0, conflicts: 0 };
  try {
    await Promise.all(Array.from({ length: publishers }, async (_, p) => {
      for (let i = 0; i < each; i++) {
        const r = runReport(`p${p}-mmlu-s${i}`, { steps: 2000 });
        counts[(await publishRun(url, "load", r)).status === "created" ? "created" : "unchanged"]++;
        // Re-publishing is a no-op; another config hash under the same id is refused.
        counts[(await publishRun(url, "load", r)).status === "created" ? "created" : "unchanged"]++;
        try {
          await publishRun(url, "load", { ...r, configHash: "f".repeat(64) });
        } catch (e) {
          if (!(e instanceof PublishConflictError)) throw e;
          counts.conflicts++;
        }
      }
    }));
  } finally {
    await server.shutdown();
    store.close();
  }
  const seconds = (performance.now() - t) / 1000;
  store = await open();
  const ids = (await store.list()).runs.map((r) => r.id);
  const sample = await store.get("p3-mmlu-s7");
  store.close();
  const expected = publishers * each;
  return {
    store: name,
    ...counts,
    seconds: +seconds.toFixed(2),
    afterReopen: ids.length,
    unique: new Set(ids).size,
    ok: counts.created === expected && counts.unchanged === expected &&
      counts.conflicts === expected && ids.length === expected && new Set(ids).size === expected &&
      sample?.configHash === "a".repeat(64) && sample.lossCurve.length === 2000,
  };
}

/** The command-line interface of `deno task serve-load`. */
export const SPEC: CommandSpec = {
  name: "deno task serve-load",
  summary: "Load-check the report server on loopback with 14 full-size reports and print JSON " +
    "(req/s, p50/p99, the server's peak RSS, /health latency, targets met).",
  options: {
    seconds: {
      type: "string",
      value: "N",
      default: "10",
      description: "How long to drive /api/runs (1 to 15 s).",
    },
    connections: {
      type: "string",
      value: "N",
      default: "50",
      description: "Concurrent fetch loops (1 to 200).",
    },
    ingest: {
      type: "boolean",
      description: "Also publish 8 × 50 reports concurrently into a KV and a folder store, then " +
        "reopen each and check every report is there once.",
    },
  },
  examples: ["deno task serve-load", "deno task serve-load --seconds 5 --ingest"],
};

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    const seconds = intOption("seconds", values.seconds, 1, 15)!;
    const connections = intOption("connections", values.connections, 1, 200)!;
    const out: Record<string, unknown> = { load: await load(seconds, connections) };
    if (values.ingest) {
      const dir = await Deno.makeTempDir({ prefix: "moka-ingest-" });
      try {
        out.ingest = [
          await ingest("kv", () => openKvStore(`${dir}/reports.kv`)),
          await ingest("folder", () => Promise.resolve(openFolderStore(`${dir}/folder`))),
        ];
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    console.log(JSON.stringify(out, null, 2));
  });
}
