import assert from "node:assert/strict";
import { createReportApp } from "./server.ts";
import { parseRunReport, parseSelfCheckReport } from "../grid/schema.ts";
import { runReport } from "../testing/run_report.ts";

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
  assert.match(await (await empty.request("/")).text(), /No runs yet/);
  assert.equal((await empty.request("/api/selfcheck")).status, 404);
  await Deno.writeTextFile(`${dir}/selfcheck.json`, JSON.stringify(report));
  const app = createReportApp({ reportsDir: dir });
  const page = await (await app.request("/")).text();
  assert.match(page, /Kernel self-check: 1\/1 ok on llvmpipe &#60;test&#62;/); // escaped
  assert.deepEqual(await (await app.request("/api/selfcheck")).json(), report);
  assert.deepEqual(await (await app.request("/health")).json(), { ok: true });
  assert.equal((await app.request("/nope")).status, 404);
  await Deno.remove(dir, { recursive: true });
});

async function gridDir(): Promise<string> {
  const dir = await Deno.makeTempDir();
  for (
    const r of [
      runReport("base-commonsense-s1"),
      runReport("lora-commonsense-s1"),
      runReport("lora-instruction-s1"),
    ]
  ) {
    await Deno.mkdir(`${dir}/runs/${r.id}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/runs/${r.id}/report.json`, JSON.stringify(r));
  }
  await Deno.writeTextFile(`${dir}/secret.json`, "{}");
  return dir;
}

Deno.test("report server: grid page, run pages, runs API with validated queries, no traversal", async () => {
  const dir = await gridDir();
  const app = createReportApp({ reportsDir: dir });
  const home = await (await app.request("/")).text();
  assert.match(home, /<section id="commonsense">/);
  assert.match(home, /href="\/runs\/lora-commonsense-s1"/);
  assert.match(
    home,
    /<svg[^>]*aria-label="Commonsense: generation accuracy vs trainable parameters"/,
  );
  assert.match(home, /Published figures/);
  assert.match(home, /llvmpipe &#60;x&#62;/);
  const run = await app.request("/runs/lora-commonsense-s1");
  assert.equal(run.status, 200);
  assert.match(await run.text(), /Training loss of lora-commonsense-s1/);
  assert.equal(
    ((await (await app.request("/api/runs")).json()) as { runs: unknown[] }).runs.length,
    3,
  );
  const filtered = (await (await app.request("/api/runs?family=mmlu&adapter=lora")).json()) as {
    runs: { id: string }[];
  };
  // An older report of the family's former name is read as the MMLU family.
  assert.deepEqual(filtered.runs.map((r) => r.id), ["lora-instruction-s1"]);
  assert.equal((await app.request("/api/runs?family=bogus")).status, 400);
  assert.equal((await app.request("/api/runs?limit=3")).status, 400);
  assert.equal(
    (await (await app.request("/api/runs/lora-instruction-s1")).json() as { id: string }).id,
    "lora-instruction-s1",
  );
  for (
    const bad of [
      "/api/runs/..%2Fsecret",
      "/api/runs/..%2F..%2Fetc%2Fpasswd",
      "/runs/..%2Fsecret",
      "/runs/%2e%2e%2fsecret",
      "/api/runs/nope-commonsense-s9",
    ]
  ) {
    const res = await app.request(bad);
    assert.equal(res.status, 404, bad);
    await res.body?.cancel();
  }
  assert.match(await (await app.request("/runs/nope-commonsense-s1")).text(), /Not found/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report server: a real server on a loopback port answers concurrent requests", async () => {
  const dir = await gridDir();
  const app = createReportApp({ reportsDir: dir });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const { port } = server.addr as Deno.NetAddr;
  const paths = [
    "/",
    "/api/runs",
    "/runs/lora-commonsense-s1",
    "/api/runs/base-commonsense-s1",
    "/health",
  ];
  const responses = await Promise.all(
    Array.from(
      { length: 40 },
      (_, i) => fetch(`http://127.0.0.1:${port}${paths[i % paths.length]}`),
    ),
  );
  for (const r of responses) {
    assert.equal(r.status, 200);
    await r.text();
  }
  await server.shutdown();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("run report schema: round trip; bad ids, hashes and accuracies are refused by field", () => {
  const r = runReport("lora-commonsense-s1");
  assert.deepEqual(parseRunReport(JSON.stringify(r), "r.json"), r);
  assert.throws(
    () => parseRunReport(JSON.stringify({ ...r, id: "../x" }), "r.json"),
    /r\.json: field "id"/,
  );
  assert.throws(
    () => parseRunReport(JSON.stringify({ ...r, configHash: "xyz" }), "r.json"),
    /field "configHash"/,
  );
  const bad = structuredClone(r);
  bad.metrics.commonsense!.average = 1.5;
  assert.throws(
    () => parseRunReport(JSON.stringify(bad), "r.json"),
    /field "metrics\.commonsense\.average"/,
  );
});
