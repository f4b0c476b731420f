import assert from "node:assert/strict";
import { createReportApp } from "./server.ts";
import { parseSelfCheckReport } from "./schema.ts";

const report = {
  kind: "selfcheck",
  date: "2026-11-29T00:00:00.000Z",
  adapter: "llvmpipe <test>",
  backend: "auto",
  deno: "2.9.6",
  seconds: 1.5,
  results: [{
    kernel: "naive-wg8x8",
    spec: { m: 3, n: 4, k: 5 },
    relativeError: 1e-7,
    tolerance: 1e-5,
    ok: true,
  }],
};

Deno.test("report schema: round trip, and a bad field is named with the file", () => {
  assert.deepEqual(parseSelfCheckReport(JSON.stringify(report), "x.json"), report);
  const bad = { ...report, results: [{ ...report.results[0], ok: "yes" }] };
  assert.throws(
    () => parseSelfCheckReport(JSON.stringify(bad), "x.json"),
    /x\.json: field "results\.0\.ok"/,
  );
  assert.throws(() => parseSelfCheckReport("{", "y.json"), /y\.json: not valid JSON/);
});

Deno.test("report server: overview, API, health, 404, escaping", async () => {
  const dir = await Deno.makeTempDir();
  const empty = createReportApp({ reportsDir: dir });
  assert.match(await (await empty.request("/")).text(), /No reports yet/);
  assert.equal((await empty.request("/api/selfcheck")).status, 404);
  await Deno.writeTextFile(`${dir}/selfcheck.json`, JSON.stringify(report));
  const app = createReportApp({ reportsDir: dir });
  const page = await (await app.request("/")).text();
  assert.match(page, /<td>naive-wg8x8<\/td>/);
  assert.match(page, /llvmpipe &#60;test&#62;/); // adapter text is escaped
  assert.deepEqual(await (await app.request("/api/selfcheck")).json(), report);
  assert.deepEqual(await (await app.request("/health")).json(), { ok: true });
  assert.equal((await app.request("/nope")).status, 404);
  await Deno.remove(dir, { recursive: true });
});
