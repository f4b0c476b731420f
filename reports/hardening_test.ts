import assert from "node:assert/strict";
import { runReport } from "../testing/run_report.ts";
import { createReportApp, SECURITY_HEADERS } from "./server.ts";
import { openFolderStore, openKvStore, type ReportStore } from "./store/mod.ts";

async function writeRun(dir: string, folder: string, text: string) {
  await Deno.mkdir(`${dir}/runs/${folder}`, { recursive: true });
  await Deno.writeTextFile(`${dir}/runs/${folder}/report.json`, text);
}

/** A reports folder with two good runs and one of each kind of bad entry. */
async function badDir(): Promise<{ dir: string; outside: string }> {
  const dir = await Deno.makeTempDir();
  const outside = await Deno.makeTempDir();
  for (const id of ["lora-commonsense-s1", "base-commonsense-s1"]) {
    await writeRun(dir, id, JSON.stringify(runReport(id)));
  }
  await writeRun(dir, "json-commonsense-s1", "root:x:0:0:root:/root:/bin/bash {");
  await writeRun(
    dir,
    "schema-commonsense-s1",
    JSON.stringify({ ...runReport("schema-commonsense-s1"), configHash: "root:x" }),
  );
  await writeRun(dir, "other-commonsense-s1", JSON.stringify(runReport("lora-commonsense-s1")));
  await Deno.mkdir(`${dir}/runs/link-commonsense-s1`, { recursive: true });
  await Deno.symlink("/etc/passwd", `${dir}/runs/link-commonsense-s1/report.json`);
  // A run folder that is a symlink to a valid run outside the reports folder.
  await writeRun(outside, "away-commonsense-s1", JSON.stringify(runReport("away-commonsense-s1")));
  await Deno.symlink(`${outside}/runs/away-commonsense-s1`, `${dir}/runs/away-commonsense-s1`);
  await Deno.mkdir(`${dir}/runs/fifo-commonsense-s1`, { recursive: true });
  const mk = await new Deno.Command("mkfifo", {
    args: [`${dir}/runs/fifo-commonsense-s1/report.json`],
  }).output();
  assert.ok(mk.success, "mkfifo");
  await writeRun(
    dir,
    "big-commonsense-s1",
    JSON.stringify(runReport("big-commonsense-s1", { steps: 20_000 })),
  );
  await writeRun(dir, "Not A Run", JSON.stringify(runReport("lora-mmlu-s1")));
  return { dir, outside };
}

Deno.test("report server: bad entries are listed invalid with a reason; the rest is served; no leaks, no hang", async () => {
  const { dir, outside } = await badDir();
  const store = openFolderStore(dir, { maxReportBytes: 100_000 });
  const app = createReportApp({ store });
  try {
    const res = await app.request("/api/runs");
    assert.equal(res.status, 200);
    const text = await res.text();
    const body = JSON.parse(text) as {
      runs: { id: string }[];
      invalid: { entry: string; reason: string }[];
    };
    assert.deepEqual(body.runs.map((r) => r.id), ["base-commonsense-s1", "lora-commonsense-s1"]);
    const reasons = Object.fromEntries(body.invalid.map((e) => [e.entry, e.reason]));
    assert.deepEqual(reasons, {
      "runs/Not A Run": "folder name is not a run id",
      "runs/away-commonsense-s1": "run folder is a symlink",
      "runs/big-commonsense-s1": "report.json is larger than 100000 bytes",
      "runs/fifo-commonsense-s1": "report.json is not a regular file",
      "runs/json-commonsense-s1": "report.json is not valid JSON",
      "runs/link-commonsense-s1": "report.json is a symlink",
      "runs/other-commonsense-s1": "report id lora-commonsense-s1 differs from its folder",
      "runs/schema-commonsense-s1": reasons["runs/schema-commonsense-s1"],
    });
    assert.match(reasons["runs/schema-commonsense-s1"], /^report\.json: field "configHash"/);
    // Each page and route answers, none leaks a path or file contents, none hangs on the FIFO.
    for (
      const path of [
        "/",
        "/api/runs/fifo-commonsense-s1",
        "/runs/fifo-commonsense-s1",
        "/api/runs/link-commonsense-s1",
        "/api/runs/away-commonsense-s1",
        "/runs/away-commonsense-s1",
        "/api/runs/other-commonsense-s1",
        "/api/runs/json-commonsense-s1",
      ]
    ) {
      const r = await app.request(path);
      const page = await r.text();
      assert.equal(r.status, path === "/" ? 200 : 404, path);
      for (const leak of [dir, outside, "root:", "/bin/bash"]) {
        assert.ok(!page.includes(leak), `${path} leaks ${leak}`);
      }
    }
    for (const leak of [dir, outside, "root:", "/bin/bash"]) assert.ok(!text.includes(leak));
    const home = await (await app.request("/")).text();
    assert.match(home, /Invalid entries/);
    assert.match(home, /runs\/fifo-commonsense-s1<\/code><\/td><td>report\.json is not a regular/);
    assert.match(home, /href="\/runs\/lora-commonsense-s1"/);
    // Negative control: the good runs are served in full.
    assert.equal((await app.request("/api/runs/lora-commonsense-s1")).status, 200);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("report server: the folder index re-reads only changed files and notices new runs", async () => {
  const dir = await Deno.makeTempDir();
  const store = openFolderStore(dir, { refreshMs: 0 });
  const app = createReportApp({ store });
  try {
    await writeRun(dir, "lora-mmlu-s1", JSON.stringify(runReport("lora-mmlu-s1")));
    const first = await store.list();
    assert.equal(first, await store.list(), "unchanged files: the same listing object");
    await writeRun(dir, "lora-mmlu-s2", JSON.stringify(runReport("lora-mmlu-s2")));
    const second = await store.list();
    assert.notEqual(first, second);
    assert.equal(second.runs.length, 2);
    await writeRun(dir, "lora-mmlu-s2", "{");
    assert.equal((await store.list()).invalid[0].reason, "report.json is not valid JSON");
    assert.equal((await app.request("/api/runs/lora-mmlu-s2")).status, 404);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report store: a run folder swapped for a symlink after indexing is not followed", async () => {
  const dir = await Deno.makeTempDir();
  const outside = await Deno.makeTempDir();
  try {
    for (const id of ["lora-mmlu-s1", "lora-mmlu-s2"]) {
      await writeRun(dir, id, JSON.stringify(runReport(id)));
    }
    const store = openFolderStore(dir, { refreshMs: 60_000 });
    assert.equal((await store.list()).runs.length, 2);
    await Deno.rename(`${dir}/runs/lora-mmlu-s1`, `${outside}/lora-mmlu-s1`);
    await Deno.symlink(`${outside}/lora-mmlu-s1`, `${dir}/runs/lora-mmlu-s1`);
    assert.equal(await store.get("lora-mmlu-s1"), null);
    assert.equal((await store.get("lora-mmlu-s2"))?.id, "lora-mmlu-s2"); // negative control
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

function serve(app: { fetch(r: Request): Promise<Response> }) {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  return { server, url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}` };
}

Deno.test("report server: security headers, HEAD as GET without a body, 405 with Allow, long ids", async () => {
  const dir = await Deno.makeTempDir();
  await writeRun(dir, "lora-mmlu-s1", JSON.stringify(runReport("lora-mmlu-s1")));
  const { server, url } = serve(createReportApp({ reportsDir: dir }));
  try {
    for (const path of ["/", "/api/runs", "/health", "/nope", "/api/runs/lora-mmlu-s1"]) {
      const get = await fetch(url + path);
      const bytes = (await get.arrayBuffer()).byteLength;
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) assert.equal(get.headers.get(k), v);
      const head = await fetch(url + path, { method: "HEAD" });
      assert.equal(head.status, get.status, path);
      assert.equal(head.headers.get("content-type"), get.headers.get("content-type"));
      assert.equal(Number(head.headers.get("content-length")), bytes, `HEAD ${path} length`);
      assert.ok(bytes > 0);
      assert.equal((await head.arrayBuffer()).byteLength, 0);
      for (const k of Object.keys(SECURITY_HEADERS)) assert.ok(head.headers.get(k), k);
    }
    assert.doesNotMatch(SECURITY_HEADERS["content-security-policy"], /script-src/);
    for (
      const [method, path, allow] of [
        ["POST", "/api/runs", "GET, HEAD"], // read-only server: no token
        ["DELETE", "/api/runs/lora-mmlu-s1", "GET, HEAD"],
        ["PUT", "/", "GET, HEAD"],
        ["POST", "/health", "GET, HEAD"],
        ["PUT", "/api/runs/lora-mmlu-s1/adapters", "GET, HEAD"],
      ]
    ) {
      const r = await fetch(url + path, { method, body: method === "DELETE" ? undefined : "{}" });
      assert.equal(r.status, 405, `${method} ${path}`);
      assert.equal(r.headers.get("allow"), allow);
      assert.equal(r.headers.get("x-frame-options"), "DENY");
      await r.body?.cancel();
    }
    const options = await fetch(url + "/api/runs", { method: "OPTIONS" });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get("allow"), "GET, HEAD");
    // Negative control: an unknown path is 404 whatever the method.
    assert.equal(
      await fetch(url + "/elsewhere", { method: "DELETE" }).then((r) => {
        r.body?.cancel();
        return r.status;
      }),
      404,
    );
    for (const path of ["/api/runs/", "/runs/"]) {
      const long = await fetch(url + path + "a".repeat(5000) + "-mmlu-s1");
      assert.equal(long.status, 404);
      const text = await long.text();
      assert.ok(text.length < 1000, "the id is not echoed in full");
      assert.doesNotMatch(text, /too long/i);
    }
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report server: errors answer a generic message; slow handlers time out with 504", async () => {
  const failing = {
    list: () => Promise.reject(new Error("/very/secret/path/report.json: root:x:0:0")),
  } as unknown as ReportStore;
  const errors: string[] = [];
  const original = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    const res = await createReportApp({ store: failing }).request("/api/runs");
    assert.equal(res.status, 500);
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), { error: "internal error" });
    assert.match(errors.join("\n"), /very\/secret/, "the detail is logged");
  } finally {
    console.error = original;
  }
  const slow = { list: () => new Promise(() => {}) } as unknown as ReportStore;
  const res = await createReportApp({ store: slow, requestTimeoutMs: 50 }).request("/api/runs");
  assert.equal(res.status, 504);
  await res.body?.cancel();
});

for (const backend of ["folder", "kv"] as const) {
  Deno.test(`report server (${backend}): POST /api/runs needs the token, limits the body, validates, refuses conflicts`, async () => {
    const dir = await Deno.makeTempDir();
    const store = backend === "folder"
      ? openFolderStore(dir)
      : await openKvStore(`${dir}/reports.kv`);
    const app = createReportApp({ store, publishToken: "s3cret", maxBodyBytes: 200_000 });
    const post = (body: string, auth?: string) =>
      app.request("/api/runs", {
        method: "POST",
        body,
        headers: auth ? { authorization: auth } : {},
      });
    const r = runReport("moka-mmlu-s1", { steps: 100 });
    const json = JSON.stringify(r);
    try {
      assert.equal((await post(json)).status, 401);
      const wrong = await post(json, "Bearer s3creT");
      assert.equal(wrong.status, 401);
      assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer/);
      assert.equal((await post(json, "Basic s3cret")).status, 401);
      assert.equal((await store.list()).runs.length, 0, "nothing stored without the token");
      const big = JSON.stringify(runReport("moka-mmlu-s2", { steps: 20_000 }));
      assert.equal((await post(big, "Bearer s3cret")).status, 413);
      // A body past the limit without a content-length is cut off while reading.
      const stream = new Blob([big]).stream();
      const chunked = await app.request("/api/runs", {
        method: "POST",
        body: stream,
        headers: { authorization: "Bearer s3cret" },
      });
      assert.equal(chunked.status, 413);
      const notJson = await post("{", "Bearer s3cret");
      assert.equal(notJson.status, 400);
      const badField = await post(JSON.stringify({ ...r, trainableParams: -1 }), "Bearer s3cret");
      assert.equal(badField.status, 400);
      assert.match((await badField.json()).error, /field "trainableParams"/);
      const created = await post(json, "Bearer s3cret");
      assert.equal(created.status, 201);
      assert.deepEqual(await created.json(), { status: "created", id: r.id });
      assert.equal((await post(json, "Bearer s3cret")).status, 200);
      const conflict = await post(
        JSON.stringify({ ...r, configHash: "9".repeat(64) }),
        "Bearer s3cret",
      );
      assert.equal(conflict.status, 409);
      assert.match((await conflict.json()).error, /moka-mmlu-s1/);
      assert.deepEqual(await (await app.request(`/api/runs/${r.id}`)).json(), r);
      const listed = await (await app.request("/api/runs")).json();
      assert.deepEqual(listed.runs.map((x: { id: string }) => x.id), [r.id]);
      // The adapter file: token, checksum, then idempotent.
      const bytes = new TextEncoder().encode("not really safetensors");
      const put = (b: Uint8Array, auth = "Bearer s3cret", id = r.id) =>
        app.request(`/api/runs/${id}/adapters`, {
          method: "PUT",
          body: b as Uint8Array<ArrayBuffer>,
          headers: { authorization: auth },
        });
      assert.equal((await put(bytes, "Bearer nope")).status, 401);
      assert.equal((await put(bytes)).status, 400, "checksum differs from the report's");
      assert.equal((await put(bytes, "Bearer s3cret", "nope-mmlu-s9")).status, 404);
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      const sum = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
      const withAdapter = runReport("moka-mmlu-s3", { adapterChecksum: sum });
      assert.equal((await post(JSON.stringify(withAdapter), "Bearer s3cret")).status, 201);
      assert.equal((await put(bytes, "Bearer s3cret", withAdapter.id)).status, 201);
      assert.equal((await put(bytes, "Bearer s3cret", withAdapter.id)).status, 200);
      const got = await app.request(`/api/runs/${withAdapter.id}/adapters`);
      assert.deepEqual(new Uint8Array(await got.arrayBuffer()), bytes);
      const allow = await app.request("/api/runs", { method: "DELETE" });
      assert.equal(allow.headers.get("allow"), "GET, HEAD, POST");
      await allow.body?.cancel();
    } finally {
      store.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("report server: 14 runs with 31,900-step curves render; the grid plots down-sampled curves", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (let i = 0; i < 14; i++) {
      const id = `${["lora", "moka", "dora", "krona", "lokr", "moka_s", "base"][i % 7]}-${
        i < 7 ? "commonsense" : "mmlu"
      }-s${1 + (i % 2)}`;
      const r = runReport(id, { steps: id.startsWith("base") ? 0 : 31_900 });
      await writeRun(dir, id, JSON.stringify(r));
    }
    const app = createReportApp({ reportsDir: dir });
    const home = await app.request("/");
    assert.equal(home.status, 200);
    const page = await home.text();
    assert.match(page, /<figure id="loss-plot"><svg/);
    // Each plotted path has at most ~1000 points (the stored curve), not 31,900.
    for (const d of page.matchAll(/<path d="(M[^"]*)" fill="none" stroke="#/g)) {
      assert.ok(d[1].split("L").length <= 1001, `a path of ${d[1].split("L").length} points`);
    }
    const run = await app.request("/runs/lora-commonsense-s1");
    assert.equal(run.status, 200);
    await run.body?.cancel();
    const rows = await (await app.request("/api/runs")).json();
    assert.equal(rows.runs.length, 14);
    assert.equal(rows.runs[0].steps === 0 || rows.runs[0].steps === 31_900, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report server: a request URL past 8 KiB answers 414 with the security headers, in-process and over loopback", async () => {
  const dir = await Deno.makeTempDir();
  await writeRun(dir, "lora-mmlu-s1", JSON.stringify(runReport("lora-mmlu-s1")));
  const app = createReportApp({ reportsDir: dir });
  const check = async (res: Response, status: number, what: string) => {
    assert.equal(res.status, status, what);
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) assert.equal(res.headers.get(k), v, k);
    const text = await res.text();
    assert.ok(text.length < 200, "the URL is not echoed");
  };
  // Positive control: just under the limit is served as usual.
  const fits = `/api/runs/lora-mmlu-s1?${"x".repeat(8192 - 30)}`;
  assert.ok(fits.length <= 8192);
  assert.equal((await app.request(fits)).status, 200, "served as usual");
  for (const path of ["/api/runs/" + "a".repeat(9000), "/?" + "q=1&".repeat(20_000)]) {
    await check(await app.request(path), 414, `in-process ${path.length}`);
    await check(await app.request(path, { method: "HEAD" }), 414, "HEAD");
  }
  const { server, url } = serve(app);
  try {
    // Past 8 KiB, below Deno's own limit: the app answers.
    await check(await fetch(`${url}/runs/${"a".repeat(50_000)}`), 414, "loopback 50 kB");
    // 64 KiB and beyond (fetch refuses to send such a URL, so a raw request line): Deno.serve
    // answers 400 itself before the app sees it, with no headers of ours (documented).
    const { port } = new URL(url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    const line = `GET /runs/${
      "a".repeat(100_000)
    } HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(line)).catch(() => 0);
    const head = new Uint8Array(4096);
    const n = await conn.read(head).catch(() => null);
    conn.close();
    assert.match(new TextDecoder().decode(head.subarray(0, n ?? 0)), /^HTTP\/1\.1 400 /);
    assert.equal((await fetch(`${url}/health`).then((r) => r.json())).ok, true);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
