/**
 * The library as a user imports it: the checkout served over HTTP on loopback, `mod.ts` imported
 * by URL from a folder without deno.json, with a fresh DENO_DIR and only `--allow-import` (npm
 * packages come from the registry through the full `npm:` specifiers in `deps/`).
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

const CONTENT_TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "application/javascript; charset=utf-8",
  ".json": "application/json",
};

/** Serve the checkout's source files read-only on 127.0.0.1 (a random port). */
function serveCheckout(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    const ext = path.slice(path.lastIndexOf("."));
    if (path.includes("..") || !(ext in CONTENT_TYPES)) return new Response("no", { status: 404 });
    try {
      const body = await Deno.readFile(`${root}${path.slice(1)}`);
      return new Response(body, { headers: { "content-type": CONTENT_TYPES[ext] } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
}

const PROGRAM = (base: string) => `
import { countTrainableParams, createAdapter, GpuRuntime, LLAMA3_8B, matmul } from "${base}/mod.ts";
import { quantizeNf4 } from "${base}/kernels/quant/mod.ts";

const rt = await GpuRuntime.create();
const a = rt.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
const w = rt.upload(new Float32Array([1, 0, 0, 0, 1, 0]), [2, 3]);
const y = await matmul(rt, a, w, { m: 2, n: 2, k: 3, transB: true });
const moka = createAdapter({ kind: "moka", components: [[8, 8], [4, 4]] }, 64, 32, 1);
const x = rt.upload(new Float32Array(4 * 64).fill(0.5), [4, 64]);
const out = rt.upload(new Float32Array(4 * 32).fill(1), [4, 32]);
const layer = await moka.toGpu(rt);
const batch = rt.batch();
await layer.forward(batch, x, out, 4);
await batch.submit();
const count = countTrainableParams(LLAMA3_8B, ["q", "v"], { kind: "moka", components: [[8, 8], [4, 4]] });
console.log(JSON.stringify({
  matmul: Array.from(await rt.read(y)),
  adapterOut: (await rt.read(out))[0],
  params: moka.trainableParams(),
  llama3: count.total,
  nf4Blocks: quantizeNf4(new Float32Array(128), 1, 128).absmax.length,
}));
`;

Deno.test({
  name: "import by URL: mod.ts from a served checkout, a fresh DENO_DIR, no deno.json",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = serveCheckout();
    const host = `127.0.0.1:${server.addr.port}`;
    const work = await Deno.makeTempDir({ prefix: "moka-consumer-" });
    try {
      await Deno.writeTextFile(`${work}/main.ts`, PROGRAM(`http://${host}`));
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", `--allow-import=${host}`, "--no-lock", "main.ts"],
        cwd: work,
        env: { DENO_DIR: `${work}/deno_dir`, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `the consumer failed:\n${stderr}`);
      const got = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
      assert.deepEqual(got.matmul, [1, 2, 4, 5]);
      assert.equal(got.adapterOut, 1, "ΔW = 0 at initialisation: the output is left as it was");
      assert.ok(got.params > 0 && got.llama3 > got.params);
      assert.equal(got.nf4Blocks, 2);
    } finally {
      await server.shutdown();
      await Deno.remove(work, { recursive: true });
    }
  },
});
