/**
 * The grid as a Kubernetes Indexed Job, played on one machine: two `reproduce --shard auto`
 * processes (JOB_COMPLETION_INDEX 0 and 1, MOKA_SHARDS 2) publish to one report server on
 * loopback; one of them is killed in the middle of its training run and started again (what the
 * Job's per-index retry does). The server must end with exactly the grid's runs, each as a single
 * process computes it (metrics, config hash, adapter checksum), and the killed run published once.
 */
import assert from "node:assert/strict";
import { createReportApp } from "../reports/server.ts";
import { openFolderStore } from "../reports/store/mod.ts";
import { parseRunReport, type RunReport } from "../grid/schema.ts";

// Base-only and LoRA on the MMLU family: one run per shard. Enough steps, with a checkpoint
// every two, that the kill lands inside training and the restart resumes from a checkpoint.
const GRID = {
  profile: "cluster",
  adapters: { base: null, lora: { kind: "lora", r: 2, alpha: 4 } },
  targets: ["q", "v"],
  seeds: [1],
  mmlu: {
    fallbackTasks: ["openbookqa"],
    trainLimit: 4,
    maxLen: 320,
    subjects: ["marketing"],
    mmluLimit: 2,
    shots: 0,
  },
  train: { steps: 10, lr: 0.005, batchSize: 2, checkpointEvery: 2 },
};
const TOKEN = "cluster-test-token";
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-sys",
  "--allow-net=127.0.0.1",
];

function reproduce(args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, new URL("./reproduce.ts", import.meta.url).pathname, ...args],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Read a process's stdout until `until` matches a line (then return), or to its end. */
async function readLines(
  child: Deno.ChildProcess,
  lines: string[],
  until?: RegExp,
): Promise<boolean> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      rest += value;
      const parts = rest.split("\n");
      rest = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        if (until?.test(line)) return true;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function finish(child: Deno.ChildProcess, lines: string[]): Promise<number> {
  const [, stderr, status] = await Promise.all([
    readLines(child, lines),
    new Response(child.stderr).text(),
    child.status,
  ]);
  if (status.code !== 0) lines.push(`stderr: ${stderr}`);
  return status.code;
}

/** What must agree between a published run and the single-process run. */
function essence(r: RunReport) {
  return {
    id: r.id,
    configHash: r.configHash,
    metrics: r.metrics,
    adapterChecksum: r.adapterChecksum,
    trainableParams: r.trainableParams,
  };
}

Deno.test("cluster: shards from JOB_COMPLETION_INDEX publish to one server; a killed pod resumes and publishes once", async () => {
  const root = await Deno.makeTempDir();
  const config = `${root}/grid.json`;
  await Deno.writeTextFile(config, JSON.stringify(GRID));
  const store = openFolderStore(`${root}/server`);
  const app = createReportApp({ store, publishToken: TOKEN });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  const pod = (index: number) =>
    reproduce(
      ["--config", config, "--shard", "auto", "--publish", url, "--publish-adapters", "--out"]
        .concat(`${root}/out-${index}`),
      { JOB_COMPLETION_INDEX: String(index), MOKA_SHARDS: "2", MOKA_PUBLISH_TOKEN: TOKEN },
    );
  try {
    const logs: string[][] = [[], [], []];
    // Shard 1 holds the LoRA run: killed once it has checkpointed (step ≥ 3 of 10).
    const first = pod(1);
    const killed = await readLines(first, logs[1], /lora-mmlu-s1: step [3-8]\/10/);
    assert.ok(killed, `shard 1 ended before the kill:\n${logs[1].join("\n")}`);
    first.kill("SIGKILL");
    await first.status;
    await first.stderr.cancel();
    await first.stdout.cancel().catch(() => {});
    await Deno.stat(`${root}/out-1/runs/lora-mmlu-s1/ckpt.safetensors`); // what the retry resumes
    assert.equal((await store.list()).runs.length, 0, "nothing published before a run finishes");
    // The retried pod and shard 0 side by side.
    const [code0, code1] = await Promise.all([
      finish(pod(0), logs[0]),
      finish(pod(1), logs[2]),
    ]);
    assert.equal(code0, 0, logs[0].join("\n"));
    assert.equal(code1, 0, logs[2].join("\n"));
    assert.match(logs[2].join("\n"), /lora-mmlu-s1: resumed from its checkpoint at step [2-8]\b/);

    // The same grid in one process, without sharding or publishing.
    const single: string[] = [];
    assert.equal(
      await finish(reproduce(["--config", config, "--out", `${root}/single`], {}), single),
      0,
      single.join("\n"),
    );
    const listing = await store.list();
    assert.deepEqual(listing.invalid, []);
    assert.deepEqual(listing.runs.map((r) => r.id), ["base-mmlu-s1", "lora-mmlu-s1"]);
    for (const id of ["base-mmlu-s1", "lora-mmlu-s1"]) {
      const file = `${root}/single/runs/${id}/report.json`;
      const expected = parseRunReport(await Deno.readTextFile(file), file);
      const published = await store.get(id);
      assert.ok(published);
      assert.deepEqual(essence(published), essence(expected), id);
    }
    // The adapter file went up with its report, and equals the single process's.
    const adapters = await store.adapter("lora-mmlu-s1");
    assert.ok(adapters);
    assert.deepEqual(
      adapters,
      await Deno.readFile(`${root}/single/runs/lora-mmlu-s1/adapters.safetensors`),
    );
    // Published once: the killed process never got to it, the retry created it.
    const all = logs.flat();
    assert.equal(all.filter((l) => /published lora-mmlu-s1 \(created\)/.test(l)).length, 1);
    assert.equal(all.filter((l) => /published base-mmlu-s1 \(created\)/.test(l)).length, 1);
    assert.equal(all.filter((l) => /published lora-mmlu-s1/.test(l)).length, 1);
  } finally {
    await server.shutdown();
    store.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cluster: --shard auto names a missing or inconsistent JOB_COMPLETION_INDEX / MOKA_SHARDS", async () => {
  for (
    const [env, pattern] of [
      [{ MOKA_SHARDS: "2" }, /JOB_COMPLETION_INDEX is not set/],
      [{ JOB_COMPLETION_INDEX: "0" }, /MOKA_SHARDS is not set/],
      [
        { JOB_COMPLETION_INDEX: "2", MOKA_SHARDS: "2" },
        /JOB_COMPLETION_INDEX=2 with MOKA_SHARDS=2/,
      ],
      [{ JOB_COMPLETION_INDEX: "x", MOKA_SHARDS: "2" }, /JOB_COMPLETION_INDEX=x: expected/],
    ] as const
  ) {
    const out = await Deno.makeTempDir();
    const child = reproduce(["--shard", "auto", "--only-selfcheck", "--out", out], env);
    const [stdout, stderr, status] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.status,
    ]);
    assert.equal(status.code, 2, stdout + stderr);
    assert.match(stderr, pattern);
    // Refused before the self-check: nothing written.
    assert.deepEqual([...Deno.readDirSync(out)], []);
    await Deno.remove(out, { recursive: true });
  }
  // --publish without a token, and a token without --publish's URL scheme.
  for (
    const [args, env, pattern] of [
      [["--publish", "http://127.0.0.1:1"], {}, /MOKA_PUBLISH_TOKEN/],
      [["--publish", "ftp://x"], { MOKA_PUBLISH_TOKEN: "t" }, /http:\/\/ or https:\/\//],
      [["--publish-adapters"], {}, /--publish-adapters needs --publish/],
    ] as const
  ) {
    const child = reproduce([...args, "--only-selfcheck", "--out", await Deno.makeTempDir()], env);
    const [stderr, status] = await Promise.all([
      new Response(child.stderr).text(),
      child.status,
      child.stdout.cancel(),
    ]);
    assert.equal(status.code, 2, stderr);
    assert.match(stderr, pattern);
  }
});
