import assert from "node:assert/strict";
import { runReport } from "../testing/run_report.ts";
import { PublishConflictError, publishRun } from "./publish.ts";
import { createReportApp } from "./server.ts";
import { openFolderStore } from "./store/mod.ts";

Deno.test("publishRun: created, then unchanged; a conflict throws naming the id; a wrong token throws", async () => {
  const dir = await Deno.makeTempDir();
  const app = createReportApp({ store: openFolderStore(dir), publishToken: "tok" });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  try {
    const r = runReport("moka-commonsense-s2", { steps: 500 });
    assert.deepEqual(await publishRun(url, "tok", r), {
      id: r.id,
      status: "created",
      attempts: 1,
    });
    assert.equal((await publishRun(`${url}/`, "tok", r)).status, "unchanged");
    await assert.rejects(
      () => publishRun(url, "tok", { ...r, configHash: "0".repeat(64) }),
      (e) =>
        e instanceof PublishConflictError && e.id === r.id && /moka-commonsense-s2/.test(e.message),
    );
    // 4xx other than 409: no retries.
    await assert.rejects(() => publishRun(url, "wrong", r, { baseDelayMs: 1 }), /HTTP 401/);
    assert.equal((await (await fetch(`${url}/api/runs/${r.id}`)).json()).id, r.id);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("publishRun: retries 5xx and network errors with backoff, then gives up", async () => {
  const dir = await Deno.makeTempDir();
  const app = createReportApp({ store: openFolderStore(dir), publishToken: "tok" });
  let calls = 0;
  // Two 503s, then the app.
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (req) => ++calls <= 2 ? new Response("busy", { status: 503 }) : app.fetch(req),
  );
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  try {
    const r = runReport("lora-mmlu-s1");
    const res = await publishRun(url, "tok", r, { baseDelayMs: 5 });
    assert.deepEqual(res, { id: r.id, status: "created", attempts: 3 });
    calls = -100; // always 503 now
    await assert.rejects(
      () => publishRun(url, "tok", r, { retries: 2, baseDelayMs: 1 }),
      /gave up after 3 tries \(HTTP 503/,
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
  // Nothing listens on the port any more: network errors, retried, then reported.
  let tries = 0;
  const counting: typeof fetch = (input, init) => {
    tries++;
    return fetch(input, init);
  };
  await assert.rejects(
    () =>
      publishRun(url, "tok", runReport("lora-mmlu-s2"), {
        retries: 2,
        baseDelayMs: 1,
        fetch: counting,
      }),
    /gave up after 3 tries/,
  );
  assert.equal(tries, 3);
});
