/**
 * The report server for a serverless Deno host: the default Deno KV database of the deployment
 * as the store, `MOKA_PUBLISH_TOKEN` (when set) as the publish token, and the app as the default
 * export's fetch handler, no port bound here:
 *
 *   deno serve --allow-env --unstable-kv reports/deploy.ts
 *
 * (run locally, add `--allow-read --allow-write` for the database file)
 *
 * Reports reach it through `publishRun` (or `POST /api/runs`).
 *
 * @module
 */
import { createReportApp } from "./server.ts";
import { openKvStore } from "./store/kv.ts";

const app = createReportApp({
  store: await openKvStore(),
  publishToken: Deno.env.get("MOKA_PUBLISH_TOKEN"),
});

export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;
