/**
 * The performance document. Every measuring command records its JSON result in
 * `bench/results/<kind>-<name>.json` (with date, commit and device), and PERFORMANCE.md is rendered
 * from all recorded results: numbers come from real runs, stamped with where and when they ran.
 */

import { gitCommit } from "../grid/runner.ts";

const RESULTS = new URL("./results/", import.meta.url);
const DOCUMENT = new URL("../PERFORMANCE.md", import.meta.url);

/** One recorded measurement. */
export interface RecordedResult {
  /** `perf` (deno task perf) or `scale` (deno task scale). */
  kind: "perf" | "scale";
  /** What was measured (the device for perf, shape and device for scale). */
  name: string;
  /** ISO date of the run. */
  date: string;
  /** Git commit of the code measured. */
  commit: string;
  /** The adapter's description. */
  device: string;
  /** The command's JSON output. */
  result: Record<string, unknown>;
}

/** A file-name-safe slug: "NVIDIA H200 (Vulkan)" → "nvidia-h200-vulkan". */
export function slug(text: string): string {
  return text.toLowerCase().replace(/\([^)]*\d[^)]*\)/g, "").replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "").slice(0, 48) || "unknown";
}

/** Write a result to bench/results and render PERFORMANCE.md again. */
export async function recordResult(
  kind: RecordedResult["kind"],
  name: string,
  device: string,
  result: Record<string, unknown>,
): Promise<string> {
  const record: RecordedResult = {
    kind,
    name,
    date: new Date().toISOString(),
    commit: (await gitCommit()).slice(0, 12),
    device,
    result,
  };
  await Deno.mkdir(RESULTS, { recursive: true });
  const file = new URL(`${kind}-${slug(name)}.json`, RESULTS);
  await Deno.writeTextFile(file, JSON.stringify(record, null, 2) + "\n");
  await renderPerformance();
  return file.pathname;
}

/** Every recorded result, newest first. */
export async function readResults(): Promise<RecordedResult[]> {
  const out: RecordedResult[] = [];
  try {
    for await (const e of Deno.readDir(RESULTS)) {
      if (!e.isFile || !e.name.endsWith(".json")) continue;
      try {
        out.push(JSON.parse(await Deno.readTextFile(new URL(e.name, RESULTS))));
      } catch (err) {
        throw new Error(`bench/results/${e.name}: ${(err as Error).message}`);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort((a, b) => b.date.localeCompare(a.date));
}

const GiB = 2 ** 30;
const fmt = (v: unknown, digits = 3): string => {
  if (typeof v === "number") {
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(digits)));
  }
  if (v === undefined || v === null) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
};
const gib = (v: unknown) => typeof v === "number" ? `${(v / GiB).toFixed(2)} GiB` : "—";

function scaleTable(runs: RecordedResult[]): string[] {
  const rows: [string, (r: Record<string, unknown>) => string][] = [
    ["device", (r) => fmt(r.device)],
    ["base / checkpointing", (r) => `${fmt(r.base ?? "nf4")} / ${fmt(r.checkpointing)}`],
    ["all stages ok", (r) => fmt(r.ok) + (r.error ? ` (${r.error})` : "")],
    [
      "load s (MB/s; disk read in the same run)",
      (r) => `${fmt(r.load_s)} (${fmt(r.load_mb_s)}; ${fmt(r.read_floor_mb_s)})`,
    ],
    ["forward s", (r) => fmt(r.forward_s)],
    ["train step s (tokens/s)", (r) => `${fmt(r.train_step_s)} (${fmt(r.train_tokens_per_s)})`],
    ["MMLU 5-shot batch s", (r) => fmt(r.mmlu_s)],
    ["greedy 16 tokens s", (r) => fmt(r.generate_s)],
    ["peak host RSS", (r) => gib(r.peak_rss_bytes)],
    ["peak GPU pool", (r) => gib(r.peak_gpu_bytes)],
    ["frozen weights on the GPU", (r) => gib(r.weight_bytes)],
    ["train step pool growth (estimate)", (r) => {
      const e = r.estimated_step_bytes as Record<string, number> | undefined;
      return `${gib(r.train_step_gpu_bytes)} (${e ? gib(e.activations + e.logits) : "—"})`;
    }],
    ["estimate, LLaMA-3-8B 4×256 NF4 MoKA", (r) => gib(r.estimated_gpu_bytes_llama3_8b)],
  ];
  const head = ["", ...runs.map((r) => `${r.name}`)];
  const lines = [
    `| ${head.join(" | ")} |`,
    `| ${head.map(() => "---").join(" | ")} |`,
  ];
  for (const [label, get] of rows) {
    lines.push(
      `| ${label} | ${runs.map((r) => get({ ...r.result, device: r.device })).join(" | ")} |`,
    );
  }
  lines.push(
    "",
    runs.map((r) =>
      `- ${r.name}: ${r.date.slice(0, 10)}, commit ${r.commit}, ${
        fmt(r.result.trainable_params)
      } ` +
      `trainable MoKA parameters, training ${fmt(r.result.batch ?? 1)} × ${
        fmt(r.result.seq ?? 32)
      } tokens.`
    ).join("\n"),
  );
  return lines;
}

/**
 * The small-model workloads at a glance: ours, the baseline measured in the same run (the
 * adapters' per-component matmul kernels; token selection on the host), and the PyTorch peer.
 */
function modelTable(r: Record<string, unknown>): string[] {
  const models = ["stories260k", "random_d512_l8"].filter((m) => r[`train_tokens_per_s_${m}`]);
  if (!models.length) return [];
  const rows: string[] = [
    "| model · workload (tokens/s) | moka | baseline, same run | × | PyTorch CPU | moka ÷ PyTorch | dispatches |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const m of models) {
    const work = [
      [
        "MoKA training (1 × 256)",
        "train_tokens_per_s",
        "train_tokens_per_s_matmul_kernels",
        "train_step_dispatches",
      ],
      [
        "greedy generation",
        "generate_tokens_per_s",
        "generate_tokens_per_s_host_select",
        "decode_step_dispatches",
      ],
      [
        "4-beam generation",
        "generate_4beam_tokens_per_s",
        "generate_4beam_tokens_per_s_host_select",
        "",
      ],
    ];
    for (const [label, key, base, dispatches] of work) {
      const ours = r[`${key}_${m}`] as number | undefined;
      const b = r[`${base}_${m}`] as number | undefined;
      const torch = r[`torch_${key}_${m}`] as number | undefined;
      rows.push(
        `| ${m} · ${label} | ${fmt(ours)} | ${fmt(b)} | ${ours && b ? fmt(ours / b) : "—"} | ` +
          `${fmt(torch)} | ${fmt(r[`moka_over_torch_${key}_${m}`])} | ` +
          `${dispatches ? fmt(r[`${dispatches}_${m}`]) : "—"} |`,
      );
    }
  }
  rows.push(
    "",
    "Baselines: training with the adapters' per-component matmul kernels; generation with the " +
      "token chosen on the host after each step. Dispatches: one training step (forward, backward, " +
      "gradient norm, AdamW) or one decoding step. PyTorch: `--peer torch`, f32 base, 2 threads.",
    "",
  );
  return rows;
}

/** Render PERFORMANCE.md from bench/results. */
export async function renderPerformance(): Promise<void> {
  const results = await readResults();
  const scale = results.filter((r) => r.kind === "scale");
  const perf = results.filter((r) => r.kind === "perf");
  const lines = [
    "# Performance",
    "",
    "Generated by `deno task perf` from the JSON results in `bench/results/` (one per device for",
    "`deno task perf`, one per shape and device for `deno task scale --record`); every number comes",
    "from the run named with it. Ratios are measured against a baseline in the same run; floors",
    "(FLOPs ÷ peak, bytes ÷ bandwidth) and memory stand beside times.",
    "",
    "## Paper-size models (`deno task scale`)",
    "",
    ...(scale.length ? scaleTable(scale) : ["No scale run recorded yet."]),
    "",
    "## Kernels, adapters and the small models (`deno task perf`)",
    "",
  ];
  for (const r of perf) {
    lines.push(`### ${r.device}`, "", `${r.date.slice(0, 10)}, commit ${r.commit}.`, "");
    lines.push(...modelTable(r.result));
    lines.push("| key | value |", "| --- | --- |");
    for (const [k, v] of Object.entries(r.result)) {
      if (k === "adapter" || k === "backend") continue;
      const text = typeof v === "object" ? JSON.stringify(v) : fmt(v);
      lines.push(`| \`${k}\` | ${text.replaceAll("|", "\\|")} |`);
    }
    lines.push("");
  }
  if (!perf.length) lines.push("No perf run recorded yet.", "");
  await Deno.writeTextFile(DOCUMENT, lines.join("\n"));
}
