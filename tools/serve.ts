/**
 * `deno task serve [--port N] [--reports DIR]`: publish the reports folder over HTTP.
 * `PORT` in the environment is honoured when `--port` is not given.
 */
import { parseArgs } from "node:util";
import { createReportApp } from "../reports/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { port: { type: "string" }, reports: { type: "string", default: "reports/out" } },
});
const port = Number(values.port ?? Deno.env.get("PORT") ?? 8000);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be an integer in [0, 65535], got ${values.port}`);
  Deno.exit(2);
}
const app = createReportApp({ reportsDir: values.reports! });
Deno.serve({ port, hostname: "127.0.0.1" }, app.fetch);
