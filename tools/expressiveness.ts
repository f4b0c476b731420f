/**
 * `deno task expressiveness`: fit target updates with every adapter at matched parameter budgets
 * on the GPU; write `expressiveness.json` (schema in reports/schema.ts), `expressiveness.md` (table)
 * and one SVG plot per target into `--out` (default reports/out/expressiveness).
 *
 * Options: --d N (layer size, default 64), --budgets a,b,c, --steps N, --lr X, --seed N,
 * --targets random,kron,stories260K-wq0 (i.i.d. Gaussian; a full-rank sum of 4 Kronecker
 * products; the embedded model's layer-0 wq, skipped with a message when the file is missing),
 * --out DIR. Options are checked before the GPU starts.
 */
import { adaptersForBudget, fitTarget } from "../evals/expressiveness.ts";
import { kronRearrange, singularValues, truncationError } from "../evals/svd.ts";
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { kronMaterializeCpu } from "../kernels/adapters/kron_cpu.ts";
import { loadLlama2c } from "../models/llama2c.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { gaussianArray } from "../kernels/cpu/random.ts";
import {
  type ExpressivenessReport,
  ExpressivenessReportSchema,
  type ExpressivenessRow,
} from "../grid/schema.ts";
import { renderLinePlot } from "../reports/svg.ts";
import {
  type CommandSpec,
  intOption,
  numberOption,
  type ParsedCli,
  runCli,
  UsageError,
} from "./cli.ts";

/** The targets `--targets` accepts. */
export const TARGET_NAMES = ["random", "kron", "stories260K-wq0"] as const;
/** One of {@link TARGET_NAMES}. */
export type TargetName = (typeof TARGET_NAMES)[number];

/** The command-line interface of `deno task expressiveness`. */
export const SPEC: CommandSpec = {
  name: "deno task expressiveness",
  summary: "Fit target weight updates with every adapter at matched parameter budgets on the " +
    "GPU; write a JSON report, a Markdown table and one SVG plot per target.",
  options: {
    d: { type: "string", value: "N", default: "64", description: "Layer size (d×d targets)." },
    budgets: {
      type: "string",
      value: "LIST",
      default: "256,512,1024,2048",
      description: "Trainable-parameter budgets, comma-separated.",
    },
    steps: { type: "string", value: "N", default: "300", description: "Adam steps per fit." },
    lr: { type: "string", value: "X", default: "0.01", description: "Peak learning rate (> 0)." },
    seed: { type: "string", value: "N", default: "1", description: "Seed (≥ 1) of targets/init." },
    targets: {
      type: "string",
      value: "LIST",
      default: TARGET_NAMES.join(","),
      description: "Targets: random, kron (--d divisible by 8), stories260K-wq0 (--d 64).",
    },
    out: {
      type: "string",
      value: "DIR",
      default: "reports/out/expressiveness",
      description: "Output folder.",
    },
  },
  notes: "Targets: random is i.i.d. Gaussian; kron a full-rank sum of 4 Kronecker products;\n" +
    "stories260K-wq0 the embedded model's layer-0 wq, skipped with a message when the file is\n" +
    "missing or its size is not --d. Output: expressiveness.json, expressiveness.md and one SVG\n" +
    "plot per target.",
  examples: [
    "deno task expressiveness",
    "deno task expressiveness --d 128 --budgets 512,1024 --targets random,kron --steps 100",
  ],
};

/** The checked options. */
interface Options {
  d: number;
  steps: number;
  seed: number;
  lr: number;
  budgets: number[];
  targets: TargetName[];
  out: string;
}

/** Check every option (a UsageError names the bad one) before anything is computed. */
function options(values: ParsedCli["values"]): Options {
  const d = intOption("d", values.d, 1)!;
  const steps = intOption("steps", values.steps, 1)!;
  const seed = intOption("seed", values.seed, 1)!;
  const lr = numberOption("lr", values.lr, 0)!;
  if (!(lr > 0)) throw new UsageError(`--lr=${values.lr}: must be > 0`);
  const budgets = (values.budgets as string).split(",").map((b) => {
    const n = Number(b);
    if (b.trim() === "" || !Number.isInteger(n) || n <= 0) {
      throw new UsageError(`--budgets=${values.budgets}: "${b}" is not a positive integer`);
    }
    return n;
  });
  const targets = (values.targets as string).split(",").map((t) => {
    if (!(TARGET_NAMES as readonly string[]).includes(t)) {
      throw new UsageError(
        `--targets=${values.targets}: unknown target "${t}" (${TARGET_NAMES.join(", ")})`,
      );
    }
    return t as TargetName;
  });
  if (targets.includes("kron") && d % 8 !== 0) {
    throw new UsageError(`--targets kron needs --d divisible by 8 (got ${d})`);
  }
  return { d, steps, seed, lr, budgets, targets, out: values.out as string };
}

async function main({ values }: ParsedCli): Promise<void> {
  const { d, steps, seed, lr, budgets, targets: targetNames, out } = options(values);
  // Targets T (d×d) with a random base W0; both scaled to unit-variance entries / √d.
  const targets: { name: string; t: Float32Array; note: string }[] = [];
  for (const name of targetNames) {
    if (name === "random") {
      targets.push({
        name: `random-${d}`,
        t: gaussianArray(d * d, seed * 7 + 1, 1 / Math.sqrt(d)),
        note: "i.i.d. Gaussian, full rank",
      });
    } else if (name === "kron") {
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
        `rel. error ${r.relError.toFixed(4)} in ${r.seconds.toFixed(1)} s · ETA ${
          eta.toFixed(0)
        } s`,
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

  await Deno.mkdir(out, { recursive: true });
  await Deno.writeTextFile(
    `${out}/expressiveness.json`,
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
      `${out}/${tg.name}.svg`,
      renderLinePlot({
        title: `Fit of ${tg.name} (${d}×${d}) vs trainable parameters`,
        xLabel: "trainable parameters",
        yLabel: "‖ΔW − T‖ / ‖T‖",
        xLog: true,
        series,
      }),
    );
  }
  await Deno.writeTextFile(`${out}/expressiveness.md`, md.join("\n"));
  console.log(`wrote ${out}/expressiveness.{json,md} and ${targets.length} SVG plot(s)`);
}

if (import.meta.main) await runCli(SPEC, main);
