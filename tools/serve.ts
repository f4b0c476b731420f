/**
 * `deno task serve [--port N] [--reports DIR]`: publish the reports folder over HTTP.
 * `PORT` in the environment is honoured when `--port` is not given.
 */
import { createReportApp } from "../reports/server.ts";
import { type CommandSpec, intOption, runCli, UsageError } from "./cli.ts";

/** The command-line interface of `deno task serve`. */
export const SPEC: CommandSpec = {
  name: "deno task serve",
  summary: "Serve the reports folder (grid overview, run pages, JSON API) on 127.0.0.1.",
  options: {
    port: {
      type: "string",
      value: "N",
      description: "TCP port, 0 for any free one (default: $PORT, else 8000).",
    },
    reports: {
      type: "string",
      value: "DIR",
      default: "reports/out",
      description: "Folder that deno task reproduce writes.",
    },
  },
  notes: "Environment: PORT is used when --port is not given.",
  examples: ["deno task serve", "deno task serve --port 8080 --reports /tmp/smoke"],
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
    const app = createReportApp({ reportsDir: values.reports as string });
    const server = Deno.serve({ port: port(values.port), hostname: "127.0.0.1" }, app.fetch);
    // runCli exits when this returns: serve until the server stops.
    await server.finished;
  });
}
