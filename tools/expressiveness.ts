/**
 * `deno task expressiveness`: fit target updates with every adapter at matched parameter budgets
 * on the GPU; write `expressiveness.json` (schema in reports/schema.ts), `expressiveness.md` (table)
 * and one SVG plot per target into `--out` (default reports/out/expressiveness).
 *
 * Options: --d N (layer size, default 64), --budgets a,b,c, --steps N, --lr X, --seed N,
 * --targets random,kron,stories260K-wq0 (i.i.d. Gaussian; a full-rank sum of 4 Kronecker
 * products; the embedded model's layer-0 wq, skipped with a message when the file is missing).
 */
import { parseArgs } from "node:util";
import { adaptersForBudget, fitTarget } from "../evals/expressiveness.ts";
import { kronRearrange, singularValues, truncationError } from "../evals/svd.ts";
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { kronMaterializeCpu } from "../models/adapters/kron_cpu.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { defaultModelPath } from "../models/paths.ts";
import { gaussianArray } from "../models/random.ts";
import {
  type ExpressivenessReport,
  ExpressivenessReportSchema,
  type ExpressivenessRow,
} from "../reports/schema.ts";
import { renderLinePlot } from "../reports/svg.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    d: { type: "string", default: "64" },
    budgets: { type: "string", default: "256,512,1024,2048" },
    steps: { type: "string", default: "300" },
    lr: { type: "string", default: "0.01" },
    seed: { type: "string", default: "1" },
    targets: { type: "string", default: "random,kron,stories260K-wq0" },
    out: { type: "string", default: "reports/out/expressiveness" },
  },
});

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}=${v} must be a positive integer`);
  return n;
}

const d = positiveInt("d", values.d);
const steps = positiveInt("steps", values.steps);
const seed = positiveInt("seed", values.seed);
const lr = Number(values.lr);
if (!(lr > 0)) throw new Error(`--lr=${values.lr} must be > 0`);
const budgets = values.budgets.split(",").map((b) => positiveInt("budgets", b));

// Targets T (d×d) with a random base W0; both scaled to unit-variance entries / √d.
const targets: { name: string; t: Float32Array; note: string }[] = [];
for (const name of values.targets.split(",")) {
  if (name === "random") {
    targets.push({
      name: `random-${d}`,
      t: gaussianArray(d * d, seed * 7 + 1, 1 / Math.sqrt(d)),
      note: "i.i.d. Gaussian, full rank",
    });
  } else if (name === "kron") {
    if (d % 8 !== 0) throw new Error(`--targets kron needs --d divisible by 8 (got ${d})`);
    // Full rank but Kronecker-structured: Σ of 4 products of random 8×8 and (d/8)×(d/8) factors.
    const t = new Float64Array(d * d);
    for (let k = 0; k < 4; k++) {
      kronMaterializeCpu(
        Float64Array.from(gaussianArray(64, seed * 97 + 2 * k)),
        Float64Array.from(gaussianArray((d / 8) ** 2, seed * 97 + 2 * k + 1)),
        { ma: 8, na: 8, mb: d / 8, nb: d / 8 },
        1 / d,
        t,
      );
    }
    targets.push({
      name: `kron4-${d}`,
      t: Float32Array.from(t),
      note: "Σ of 4 random (8×8)⊗(d/8×d/8) products, full rank",
    });
  } else if (name === "stories260K-wq0") {
    const path = defaultModelPath("stories260K.bin");
    let wq: Float32Array;
    try {
      const ckpt = await loadLlama2c(path);
      if (ckpt.config.dim !== d) {
        console.error(`skipping ${name}: the model's dim is ${ckpt.config.dim}, --d is ${d}`);
        continue;
      }
      wq = ckpt.layers[0].wq;
    } catch (e) {
      console.error(`skipping ${name}: ${(e as Error).message}`);
      continue;
    }
    targets.push({ name, t: wq, note: `layer-0 wq of ${path}` });
  } else {
    throw new Error(`--targets: unknown target "${name}" (random, kron, stories260K-wq0)`);
  }
}
const w0 = gaussianArray(d * d, seed * 7 + 2, 1 / Math.sqrt(d));

const rt = await GpuRuntime.create();
console.log(
  `expressiveness on ${rt.gpu.description}: d=${d}, budgets ${
    budgets.join("/")
  }, ${steps} Adam steps, lr ${lr}`,
);
const plan = targets.flatMap((tg) =>
  budgets.flatMap((budget) => adaptersForBudget(d, budget).map((a) => ({ tg, budget, a })))
);
const rows: ExpressivenessRow[] = [];
const started = performance.now();
for (const [i, { tg, budget, a }] of plan.entries()) {
  const r = await fitTarget(rt, a, w0, tg.t, d, { steps, lr, seed });
  rows.push({
    target: tg.name,
    budget,
    family: a.family,
    config: { ...a.config },
    params: a.params,
    relError: r.relError,
    curve: r.curve,
    seconds: r.seconds,
  });
  const elapsed = (performance.now() - started) / 1000;
  const eta = (elapsed / (i + 1)) * (plan.length - i - 1);
  console.log(
    `[${i + 1}/${plan.length}] ${tg.name} budget ${budget}: ${a.family} (${a.params} params) → ` +
      `rel. error ${r.relError.toFixed(4)} in ${r.seconds.toFixed(1)} s · ETA ${eta.toFixed(0)} s`,
  );
}

const lowRankFloor: Record<string, [number, number][]> = {};
for (const tg of targets) {
  const sv = singularValues(tg.t, d, d);
  lowRankFloor[tg.name] = Array.from(
    { length: Math.floor(Math.max(...budgets) / (2 * d)) },
    (_, i) => [2 * d * (i + 1), truncationError(sv, i + 1)],
  );
}
const report: ExpressivenessReport = ExpressivenessReportSchema.parse({
  kind: "expressiveness",
  date: new Date().toISOString(),
  adapter: rt.gpu.description,
  d,
  steps,
  lr,
  seed,
  lowRankFloor,
  rows,
});

await Deno.mkdir(values.out, { recursive: true });
await Deno.writeTextFile(
  `${values.out}/expressiveness.json`,
  JSON.stringify(report, null, 2) + "\n",
);
const md: string[] = [
  `# Expressiveness at matched budgets (d = ${d})`,
  "",
  `${steps} Adam steps (lr ${lr}, 5 % warm-up, cosine), seed ${seed}, on ${rt.gpu.description}. ` +
  "Relative error ‖ΔW − T‖_F/‖T‖_F; lower is better. The low-rank floor is the best rank-r " +
  "approximation (Eckart–Young), what LoRA can reach at that size.",
  "",
];
for (const tg of targets) {
  md.push(
    `## ${tg.name} (${tg.note})`,
    "",
    "| budget | family | params | rel. error | s |",
    "|---:|---|---:|---:|---:|",
  );
  for (const r of rows.filter((r) => r.target === tg.name)) {
    md.push(
      `| ${r.budget} | ${r.family} | ${r.params} | ${r.relError.toFixed(4)} | ${
        r.seconds.toFixed(1)
      } |`,
    );
  }
  md.push("", `![${tg.name}](${tg.name}.svg)`, "");
  const families = [...new Set(rows.filter((r) => r.target === tg.name).map((r) => r.family))];
  const series = families.map((f) => ({
    name: f,
    points: rows.filter((r) => r.target === tg.name && r.family === f).map((
      r,
    ): [number, number] => [r.params, r.relError])
      .sort((a, b) => a[0] - b[0]),
  }));
  series.push({ name: "low-rank floor (SVD)", points: lowRankFloor[tg.name] });
  if (d % 8 === 0) {
    const kron = singularValues(kronRearrange(tg.t, 8, 8, d / 8, d / 8), 64, (d / 8) ** 2);
    series.push({
      name: `Σ of K (8×8)⊗(${d / 8}×${d / 8}) floor`,
      points: Array.from({
        length: Math.min(kron.length, Math.floor(Math.max(...budgets) / (64 + (d / 8) ** 2))),
      }, (_, k) => [(k + 1) * (64 + (d / 8) ** 2), truncationError(kron, k + 1)]),
    });
  }
  await Deno.writeTextFile(
    `${values.out}/${tg.name}.svg`,
    renderLinePlot({
      title: `Fit of ${tg.name} (${d}×${d}) vs trainable parameters`,
      xLabel: "trainable parameters",
      yLabel: "‖ΔW − T‖ / ‖T‖",
      xLog: true,
      series,
    }),
  );
}
await Deno.writeTextFile(`${values.out}/expressiveness.md`, md.join("\n"));
console.log(`wrote ${values.out}/expressiveness.{json,md} and ${targets.length} SVG plot(s)`);
