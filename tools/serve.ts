/**
 * `deno task serve [--port N] [--hostname ADDR] [--reports DIR | --kv PATH]`: serve the reports
 * folder (or a Deno KV database) over HTTP, on 127.0.0.1 unless `--hostname` says otherwise. `PORT` in the environment is honoured when `--port` is not given;
 * `MOKA_PUBLISH_TOKEN` enables publishing (POST /api/runs with that bearer token).
 */
import { createReportApp } from "../reports/server.ts";
import { openFolderStore } from "../reports/store/folder.ts";
import { openKvStore } from "../reports/store/kv.ts";
import type { ReportStore } from "../reports/store/store.ts";
import { type CommandSpec, intOption, runCli, UsageError } from "./cli.ts";

/** The command-line interface of `deno task serve`. */
export const SPEC: CommandSpec = {
  name: "deno task serve",
  summary:
    "Serve the reports folder (grid overview, run pages, JSON API), on 127.0.0.1 by default.",
  options: {
    port: {
      type: "string",
      value: "N",
      description: "TCP port, 0 for any free one (default: $PORT, else 8000).",
    },
    hostname: {
      type: "string",
      value: "ADDR",
      default: "127.0.0.1",
      description: "Address to listen on; 0.0.0.0 for every interface (in a container).",
    },
    reports: {
      type: "string",
      value: "DIR",
      default: "reports/out",
      description: "Folder that deno task reproduce writes.",
    },
    kv: {
      type: "string",
      value: "PATH",
      description: "Serve a Deno KV database at PATH instead of the reports folder.",
    },
  },
  notes: "Environment: PORT is used when --port is not given; MOKA_PUBLISH_TOKEN, when set, " +
    "lets clients with that bearer token publish reports (POST /api/runs); without it the " +
    "server is read-only.",
  examples: [
    "deno task serve",
    "deno task serve --port 8080 --reports /tmp/smoke",
    "MOKA_PUBLISH_TOKEN=secret deno task serve --kv /tmp/reports.kv",
    "deno task serve --kv /data/reports.kv --hostname 0.0.0.0 --port 8000",
  ],
};

/** The port: --port, else $PORT, else 8000; a UsageError names where a bad one came from. */
function port(option: unknown): number {
  if (option !== undefined) return intOption("port", option, 0, 65535)!;
  const env = Deno.env.get("PORT");
  if (env === undefined) return 8000;
  try {
    return intOption("port", env, 0, 65535)!;
  } catch {
    throw new UsageError(`PORT=${env} (environment): expected an integer in [0, 65535]`);
  }
}

if (import.meta.main) {
  await runCli(SPEC, async ({ values }) => {
    const p = port(values.port);
    const store: ReportStore = values.kv !== undefined
      ? await openKvStore(values.kv as string)
      : openFolderStore(values.reports as string);
    const app = createReportApp({ store, publishToken: Deno.env.get("MOKA_PUBLISH_TOKEN") });
    const hostname = values.hostname as string;
    if (!hostname.trim()) throw new UsageError("--hostname: expected an address, e.g. 0.0.0.0");
    const server = Deno.serve({ port: p, hostname }, app.fetch);
    // runCli exits when this returns: serve until the server stops.
    await server.finished;
  });
}
