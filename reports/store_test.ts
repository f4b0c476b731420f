import assert from "node:assert/strict";
import { runReport } from "../testing/run_report.ts";
import {
  CURVE_POINTS,
  downsampleCurve,
  openFolderStore,
  openKvStore,
  type ReportStore,
} from "./store/mod.ts";
import { sha256Hex } from "./store/store.ts";

/** A back end under test: a fresh empty store, a way to reopen it, and cleanup. */
interface Backend {
  open(): Promise<ReportStore>;
  cleanup(): Promise<void>;
}

const backends: [string, () => Promise<Backend>][] = [
  ["folder", async () => {
    const dir = await Deno.makeTempDir();
    return {
      open: () => Promise.resolve(openFolderStore(dir, { refreshMs: 0 })),
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  }],
  ["kv", async () => {
    const dir = await Deno.makeTempDir();
    return {
      open: () => openKvStore(`${dir}/reports.kv`),
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  }],
];

/** The contract every store keeps, run against each back end. */
for (const [name, make] of backends) {
  Deno.test(`report store (${name}): put, list, get, curve; idempotent; conflicts refused`, async () => {
    const b = await make();
    const store = await b.open();
    try {
      assert.deepEqual((await store.list()).runs, []);
      const big = runReport("moka-commonsense-s1", { steps: 31_900 });
      assert.deepEqual(await store.put(big), { status: "created", id: big.id });
      assert.deepEqual(await store.put(structuredClone(big)), {
        status: "unchanged",
        id: big.id,
      });
      const listing = await store.list();
      assert.equal(listing.runs.length, 1);
      const row = listing.runs[0];
      assert.equal(row.steps, 31_900);
      assert.equal(row.finalLoss, big.lossCurve.at(-1)![1]);
      assert.ok(!("lossCurve" in row) && !("samples" in row), "summary rows carry no curve");
      assert.deepEqual(await store.get(big.id), big);
      const curve = (await store.curve(big.id))!;
      assert.ok(curve.length <= CURVE_POINTS && curve.length > CURVE_POINTS / 2);
      assert.deepEqual(curve[0], big.lossCurve[0]);
      assert.equal(curve.at(-1)![0], 31_900, "the curve ends at the last step");
      // Another config hash, or the same hash with other content: refused, nothing overwritten.
      const otherHash = await store.put({ ...big, configHash: "f".repeat(64) });
      assert.equal(otherHash.status, "conflict");
      assert.match((otherHash as { reason: string }).reason, /moka-commonsense-s1/);
      assert.equal((await store.put({ ...big, seed: 1, git: "def" })).status, "conflict");
      assert.deepEqual(await store.get(big.id), big);
      // Validation names the field; negative controls: unknown and malformed ids.
      const bad = await store.put({ ...big, id: "lora-commonsense-s2", configHash: "xyz" });
      assert.equal(bad.status, "invalid");
      assert.match((bad as { reason: string }).reason, /field "configHash"/);
      assert.equal((await store.put({ nope: 1 })).status, "invalid");
      assert.equal(await store.get("lora-commonsense-s2"), null);
      assert.equal(await store.get("../etc"), null);
      assert.equal(await store.get("a".repeat(5000) + "-mmlu-s1"), null);
      assert.equal(await store.curve("nope-mmlu-s1"), null);
      assert.equal((await store.list()).runs.length, 1);
    } finally {
      store.close();
      await b.cleanup();
    }
  });

  Deno.test(`report store (${name}): concurrent conflicting puts of one id: exactly one wins`, async () => {
    const b = await make();
    const store = await b.open();
    try {
      const variants = Array.from(
        { length: 8 },
        (_, i) => runReport("lora-mmlu-s3", { configHash: i.toString(16).repeat(64), steps: 50 }),
      );
      const results = await Promise.all(variants.map((v) => store.put(v)));
      const won = results.filter((r) => r.status === "created");
      assert.equal(won.length, 1, JSON.stringify(results));
      assert.equal(results.filter((r) => r.status === "conflict").length, 7);
      const stored = (await store.get("lora-mmlu-s3"))!;
      assert.equal(stored.configHash, variants[results.indexOf(won[0])].configHash);
      // Identical concurrent puts: one created, the rest unchanged.
      const same = runReport("lora-mmlu-s4", { steps: 50 });
      const twice = await Promise.all(Array.from({ length: 6 }, () => store.put(same)));
      assert.deepEqual(twice.map((r) => r.status).sort(), [
        "created",
        ...Array(5).fill("unchanged"),
      ]);
    } finally {
      store.close();
      await b.cleanup();
    }
  });

  Deno.test(`report store (${name}): concurrent publishers, then a reopen: each report once`, async () => {
    const b = await make();
    let store = await b.open();
    try {
      const publishers = 8;
      const each = 6;
      const id = (p: number, i: number) => `p${p}-commonsense-s${i}`;
      const results = await Promise.all(Array.from({ length: publishers }, async (_, p) => {
        const out = [];
        for (let i = 0; i < each; i++) {
          out.push(await store.put(runReport(id(p, i), { steps: 200 })));
          // Everyone also re-publishes a neighbour's report and tries to overwrite it.
          const n = id((p + 1) % publishers, i);
          out.push(await store.put(runReport(n, { steps: 200 })));
          out.push(await store.put(runReport(n, { steps: 200, configHash: "e".repeat(64) })));
        }
        return out;
      }));
      const flat = results.flat();
      assert.equal(flat.filter((r) => r.status === "created").length, publishers * each);
      assert.equal(flat.filter((r) => r.status === "conflict").length, publishers * each);
      store.close();
      store = await b.open();
      const ids = (await store.list()).runs.map((r) => r.id);
      assert.equal(ids.length, publishers * each);
      assert.equal(new Set(ids).size, ids.length);
      for (const r of (await store.list()).runs) assert.equal(r.configHash, "a".repeat(64));
    } finally {
      store.close();
      await b.cleanup();
    }
  });

  Deno.test(`report store (${name}): adapter files checked against the report's checksum`, async () => {
    const b = await make();
    const store = await b.open();
    try {
      const bytes = new Uint8Array(150_000).map((_, i) => (i * 7) & 255);
      const r = runReport("moka-mmlu-s1", { adapterChecksum: await sha256Hex(bytes) });
      assert.equal((await store.putAdapter(r.id, bytes)).status, "invalid", "no run yet");
      await store.put(r);
      const wrong = await store.putAdapter(r.id, bytes.subarray(1));
      assert.equal(wrong.status, "invalid");
      assert.match((wrong as { reason: string }).reason, /SHA-256/);
      assert.equal(await store.adapter(r.id), null);
      assert.equal((await store.putAdapter(r.id, bytes)).status, "created");
      assert.equal((await store.putAdapter(r.id, bytes)).status, "unchanged");
      assert.deepEqual(await store.adapter(r.id), bytes);
      await store.put(runReport("base-mmlu-s1"));
      assert.match(
        ((await store.putAdapter("base-mmlu-s1", bytes)) as { reason: string }).reason,
        /no adapter/,
      );
    } finally {
      store.close();
      await b.cleanup();
    }
  });
}

Deno.test("downsampleCurve: short curves unchanged; long ones ≤ max, aligned across seeds", () => {
  const short: [number, number][] = [[1, 3], [2, 2]];
  assert.deepEqual(downsampleCurve(short), short);
  const a = runReport("x-mmlu-s1", { steps: 31_900 }).lossCurve;
  const b = a.map(([s, l]) => [s, l * 2] as [number, number]);
  const da = downsampleCurve(a);
  const db = downsampleCurve(b);
  assert.ok(da.length <= 1000);
  assert.deepEqual(da.map((p) => p[0]), db.map((p) => p[0]), "same steps for same lengths");
  // Bucket means: every value lies within the curve's range.
  const lo = a.reduce((m, p) => Math.min(m, p[1]), Infinity);
  const hi = a.reduce((m, p) => Math.max(m, p[1]), -Infinity);
  assert.ok(da.every(([, y]) => y >= lo && y <= hi));
});
