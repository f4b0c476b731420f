/**
 * Headless Chromium renders the grid page served by a real server: the DOM has the tables and the
 * plot, and the screenshot has ink and coloured plot lines. Chromium comes from Debian (`.ci/run`
 * installs it); without it this test fails with the fix, it does not skip.
 */
import assert from "node:assert/strict";
import { createReportApp } from "./server.ts";

async function chromiumPath(): Promise<string> {
  for (const p of ["chromium", "chromium-browser", "google-chrome"]) {
    try {
      const out = await new Deno.Command("which", { args: [p], stdout: "piped", stderr: "null" })
        .output();
      if (out.success) return new TextDecoder().decode(out.stdout).trim();
    } catch { /* `which` missing */ }
  }
  throw new Error("no Chromium found: apt-get install -y chromium (.ci/run does this)");
}

async function chromium(args: string[]): Promise<string> {
  const out = await new Deno.Command(await chromiumPath(), {
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`chromium failed: ${new TextDecoder().decode(out.stderr).slice(-500)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** RGB(A) pixels of a non-interlaced 8-bit PNG (what Chromium writes). */
async function decodePng(
  bytes: Uint8Array,
): Promise<{ width: number; height: number; channels: number; data: Uint8Array }> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(view.getUint32(0), 0x89504e47, "PNG signature");
  let at = 8;
  let width = 0, height = 0, channels = 0;
  const idat: Uint8Array[] = [];
  while (at < bytes.length) {
    const len = view.getUint32(at);
    const type = new TextDecoder().decode(bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + len);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      assert.equal(body[8], 8, "8-bit");
      assert.equal(body[12], 0, "not interlaced");
      channels = ({ 2: 3, 6: 4 } as Record<number, number>)[body[9]];
      assert.ok(channels, `colour type ${body[9]}`);
    } else if (type === "IDAT") idat.push(body);
    at += 12 + len;
  }
  const joined = new Uint8Array(idat.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of idat) joined.set(c, (o += c.length) - c.length);
  const raw = new Uint8Array(
    await new Response(new Blob([joined]).stream().pipeThrough(new DecompressionStream("deflate")))
      .arrayBuffer(),
  );
  const stride = width * channels;
  const data = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? data[y * stride + x - channels] : 0;
      const b = y > 0 ? data[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? data[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c;
      const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      data[y * stride + x] = (src[x] + pred) & 0xff;
    }
  }
  return { width, height, channels, data };
}

Deno.test("browser: headless Chromium renders the grid page's tables and plot", async () => {
  const dir = await Deno.makeTempDir();
  const report = (id: string, adapter: string, params: number, acc: number) => ({
    kind: "run",
    id,
    profile: "test",
    adapter,
    adapterConfig: { kind: "lora", r: 2, alpha: 4 },
    family: "commonsense",
    seed: 1,
    configHash: "c".repeat(64),
    config: {},
    git: "x",
    deno: "2.9.6",
    device: "llvmpipe",
    model: "m",
    base: "nf4",
    trainableParams: params,
    metrics: {
      commonsense: {
        tasks: { boolq: { accuracy: acc, correct: 1, total: 2, unparseable: 0 } },
        average: acc,
      },
    },
    lossCurve: [[1, 3], [2, 2.2], [3, 1.5]],
    timings: { trainSeconds: 1, evalSeconds: 1, trainTokensPerSecond: 10 },
    adapterChecksum: "d".repeat(64),
    date: "2026-11-29T00:00:00.000Z",
  });
  for (
    const r of [
      report("lora-commonsense-s1", "lora", 2000, 0.5),
      report("moka-commonsense-s1", "moka", 900, 0.75),
      report("moka-commonsense-s2", "moka", 900, 0.7),
    ]
  ) {
    await Deno.mkdir(`${dir}/runs/${r.id}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/runs/${r.id}/report.json`, JSON.stringify(r));
  }
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    createReportApp({ reportsDir: dir }).fetch,
  );
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/`;
  try {
    const dom = await chromium(["--dump-dom", url]);
    assert.match(dom, /<section id="commonsense">/);
    assert.equal((dom.match(/<a href="\/runs\/[a-z_]+-commonsense-s\d">/g) ?? []).length, 3);
    assert.match(dom, /<figure id="accuracy-plot"><svg/);
    const png = `${dir}/shot.png`;
    await chromium([`--screenshot=${png}`, "--window-size=1200,1400", url]);
    const img = await decodePng(await Deno.readFile(png));
    assert.equal(img.width, 1200);
    let ink = 0;
    let colour = 0;
    for (let i = 0; i < img.width * img.height; i++) {
      const [r, g, b] = img.data.subarray(i * img.channels, i * img.channels + 3);
      if (r + g + b < 600) ink++;
      if (Math.max(r, g, b) - Math.min(r, g, b) > 80) colour++; // plot lines (Okabe–Ito colours)
    }
    assert.ok(ink > 0.005 * img.width * img.height, `page has text and lines (${ink} dark pixels)`);
    assert.ok(colour > 200, `plot lines are drawn in colour (${colour} coloured pixels)`);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
