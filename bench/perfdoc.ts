/**
 * The performance document. Every measuring command records its JSON result in
 * `bench/results/<kind>-<name>.json` (with date, commit and device), and PERFORMANCE.md is rendered
 * from all recorded results: numbers come from real runs, stamped with where and when they ran.
 */

import { gitCommit } from "../grid/runner.ts";

const RESULTS = new URL("./results/", import.meta.url);
const DOCUMENT = new URL("../PERFORMANCE.md", import.meta.url);

/**
 * Where results are recorded and the document rendered: by default `bench/results/` and
 * `PERFORMANCE.md` at the root; a folder given (`--results DIR`) holds both, its
 * `PERFORMANCE.md` rendered from its own JSON files only (tests, device checks).
 */
export interface ResultsPlace {
  /** Folder of the JSON results. */
  results: URL;
  /** The rendered document. */
  document: URL;
}

/** The default place, or `dir` (a path) holding both the results and its PERFORMANCE.md. */
export function resultsPlace(dir?: string): ResultsPlace {
  if (dir === undefined) return { results: RESULTS, document: DOCUMENT };
  const base = new URL(`file://${Deno.realPathSync(".")}/`);
  const folder = new URL(dir.endsWith("/") ? dir : `${dir}/`, base);
  return { results: folder, document: new URL("PERFORMANCE.md", folder) };
}

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

/** Write a result to bench/results (or `place`) and render PERFORMANCE.md again. */
export async function recordResult(
  kind: RecordedResult["kind"],
  name: string,
  device: string,
  result: Record<string, unknown>,
  place: ResultsPlace = resultsPlace(),
): Promise<string> {
  const record: RecordedResult = {
    kind,
    name,
    date: new Date().toISOString(),
    commit: (await gitCommit()).slice(0, 12),
    device,
    result,
  };
  await Deno.mkdir(place.results, { recursive: true });
  const file = new URL(`${kind}-${slug(name)}.json`, place.results);
  await Deno.writeTextFile(file, JSON.stringify(record, null, 2) + "\n");
  await renderPerformance(place);
  return file.pathname;
}

/** Every recorded result, newest first. */
export async function readResults(place: ResultsPlace = resultsPlace()): Promise<RecordedResult[]> {
  const out: RecordedResult[] = [];
  try {
    for await (const e of Deno.readDir(place.results)) {
      if (!e.isFile || !e.name.endsWith(".json")) continue;
      try {
        out.push(JSON.parse(await Deno.readTextFile(new URL(e.name, place.results))));
      } catch (err) {
        throw new Error(`${new URL(e.name, place.results).pathname}: ${(err as Error).message}`);
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

type Row = [string, (r: Record<string, unknown>) => string];

/** A decode figure's rows: its rate and step time, bytes per token, GB/s and share of copy. */
function decodeRows(
  label: string,
  key: string,
  extra: (r: Record<string, unknown>) => string = () => "",
): Row[] {
  return [
    [
      `${label} (ms/step)`,
      (r) => `${fmt(r[`${key}_tokens_per_s`])}${extra(r)} (${fmt(r[`${key}_step_ms`])})`,
    ],
    [
      `… MB read per token · GB/s · of copy`,
      (r) =>
        `${
          typeof r[`${key}_bytes_per_token`] === "number"
            ? fmt((r[`${key}_bytes_per_token`] as number) / 1e6)
            : "—"
        } · ${fmt(r[`${key}_gbps`])} · ${fmt(r[`${key}_fraction_of_roofline`])}`,
    ],
  ];
}

function scaleTable(runs: RecordedResult[]): string[] {
  const rows: Row[] = [
    ["device", (r) => fmt(r.device)],
    ["base / checkpointing", (r) => `${fmt(r.base ?? "nf4")} / ${fmt(r.checkpointing)}`],
    ["all stages ok", (r) => fmt(r.ok) + (r.error ? ` (${r.error})` : "")],
    [
      "load s (MB/s; disk read in the same run)",
      (r) => `${fmt(r.load_s)} (${fmt(r.load_mb_s)}; ${fmt(r.read_floor_mb_s)})`,
    ],
    ["forward s", (r) => fmt(r.forward_s)],
    ["train step s (tokens/s)", (r) => `${fmt(r.train_step_s)} (${fmt(r.train_tokens_per_s)})`],
    ["MMLU stage s", (r) => fmt(r.mmlu_s)],
    [
      "MMLU prompts/s (batch chosen; questions, shots)",
      (r) =>
        `${fmt(r.mmlu_prompts_per_s)} (${fmt(r.mmlu_batch)}; ${fmt(r.mmlu_questions)}, ${
          fmt(r.mmlu_shots)
        }-shot)`,
    ],
    ["decode stage s", (r) => fmt(r.generate_s)],
    [
      "decode prompt tokens, timed steps",
      (r) => `${fmt(r.decode_prompt_tokens)}, ${fmt(r.decode_steps)}`,
    ],
    ...decodeRows("greedy batch 1 tokens/s", "decode"),
    ...decodeRows("4 beams beam-tokens/s", "beam4"),
    ...decodeRows(
      "commonsense batch (questions × 4 beams) tokens/s",
      "commonsense_batch",
      (r) =>
        ` (${fmt(r.commonsense_batch_questions)} × 4; chooser ${fmt(r.commonsense_batch_chooser)})`,
    ),
    [
      "copy GB/s (source)",
      (r) => `${fmt(r.roofline_copy_gbps)} (${fmt(r.roofline_source)})`,
    ],
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
    "",
    "Decode figures time the decode steps alone (N new tokens minus 1, the same prefill), after " +
      "a warm-up. MB read per token: the frozen linear weights in their format and the " +
      "classifier, read once per step for all its rows, plus each row's KV cache at the mean " +
      "position; GB/s is that over the step time, beside the device's copy bandwidth (read + " +
      "written) from its perf record. MMLU: the batch the device's chooser picks " +
      "(`evals/batching.ts`), prompts/s over the scoring alone.",
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

/**
 * The device's roofline measured in the run, the nominal figures beside it where known, and every
 * GFLOP/s or GB/s figure as a fraction of the measured roofline.
 */
function rooflineTable(r: Record<string, unknown>): string[] {
  if (typeof r.roofline_f32_gflops !== "number") return [];
  const lines = [
    "| roofline (measured in this run) | value | timing | size |",
    "| --- | --- | --- | --- |",
  ];
  for (
    const [label, key] of [
      ["f32 FMA GFLOP/s", "roofline_f32"],
      ["f16 FMA GFLOP/s", "roofline_f16"],
      ["copy GB/s (read + written)", "roofline_copy"],
    ]
  ) {
    const value = r[`${key}_gflops`] ?? r[`${key}_gbps`];
    if (value === undefined) continue;
    lines.push(
      `| ${label} | ${fmt(value)} | ${fmt(r[`${key}_timing`])} | ${fmt(r[`${key}_size`])} |`,
    );
  }
  if (r.gpu_nominal !== undefined) {
    lines.push(
      `| nominal: ${fmt(r.gpu_nominal)} | ${fmt(r.gpu_f32_gflops_nominal)} GFLOP/s f32, ` +
        `${fmt(r.gpu_bandwidth_gbps_nominal)} GB/s | measured ÷ nominal: ` +
        `${fmt(r.roofline_f32_fraction_of_nominal)} f32, ` +
        `${fmt(r.roofline_copy_fraction_of_nominal)} copy | — |`,
    );
  }
  if (r.cpu_peak_gflops_nominal !== undefined) {
    lines.push(`| nominal CPU f32 peak GFLOP/s | ${fmt(r.cpu_peak_gflops_nominal)} | — | — |`);
  }
  const fractions = Object.keys(r).filter((k) => k.includes("_fraction_of_roofline"));
  if (fractions.length) {
    lines.push(
      "",
      "| figure | value | fraction of the measured roofline |",
      "| --- | --- | --- |",
    );
    for (const k of fractions) {
      const figure = Object.keys(r).find((f) =>
        f !== k && typeof r[f] === "number" &&
        (f === k.replace("fraction_of_roofline", "gflops") ||
          f === k.replace("fraction_of_roofline", "gbps"))
      );
      const unit = figure?.includes("gbps") ? "GB/s" : "GFLOP/s";
      lines.push(
        `| \`${figure ?? k}\` | ${figure ? `${fmt(r[figure])} ${unit}` : "—"} | ${fmt(r[k])} |`,
      );
    }
  }
  lines.push("");
  return lines;
}

/** `deno task scale --block` runs: one block timed per kernel, the whole model extrapolated. */
function blockTable(runs: RecordedResult[]): string[] {
  const rows: [string, (r: Record<string, unknown>) => string][] = [
    ["device (kernel variants)", (r) => `${fmt(r.device)} (${fmt(r.variants)})`],
    [
      "tokens (batch × seq), checkpointing",
      (r) => `${fmt(r.batch)} × ${fmt(r.seq)}, ${fmt(r.checkpointing)}`,
    ],
    [
      "roofline f32 GFLOP/s · copy GB/s",
      (r) => `${fmt(r.roofline_f32_gflops)} · ${fmt(r.roofline_copy_gbps)}`,
    ],
    [
      "block fwd + bwd GPU ms (fwd / bwd)",
      (r) =>
        `${fmt(r.block_step_gpu_ms)} (${fmt(r.block_forward_gpu_ms)} / ${
          fmt(r.block_backward_gpu_ms)
        })`,
    ],
    [
      "block GFLOP · GFLOP/s · of roofline",
      (r) =>
        `${fmt(r.block_gflop)} · ${fmt(r.block_gflops)} · ${fmt(r.block_fraction_of_roofline)}`,
    ],
    [
      "head (classifier + loss, real vocab) GPU ms",
      (r) => `${fmt(r.head_step_gpu_ms)} (vocab ${fmt(r.vocab)})`,
    ],
    ["whole model step s, extrapolated", (r) => fmt(r.extrapolated_model_step_s)],
    ["tokens/s, extrapolated", (r) => fmt(r.extrapolated_model_tokens_per_s)],
    [
      "top kernels",
      (r) =>
        Array.isArray(r.block_kernels)
          ? (r.block_kernels as { kernel: string; share: number }[]).slice(0, 5).map((k) =>
            `${k.kernel} ${(100 * k.share).toFixed(0)}%`
          ).join(", ")
          : "—",
    ],
    ["all ok", (r) => fmt(r.ok) + (r.error ? ` (${r.error})` : "")],
  ];
  const head = ["", ...runs.map((r) => r.name)];
  const lines = [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`];
  for (const [label, get] of rows) {
    lines.push(
      `| ${label} | ${
        runs.map((r) => get({ ...r.result, device: r.device }).replaceAll("|", "\\|")).join(" | ")
      } |`,
    );
  }
  lines.push(
    "",
    "Block: the 1-layer model's GPU time minus a 0-layer model's, per kernel label; head: a " +
      "0-layer model at the real vocabulary. Whole model = layers × block + head, " +
      "extrapolated, without the optimizer step. FLOPs: model FLOPs (no recomputation).",
    "",
  );
  return lines;
}

/** Render PERFORMANCE.md from bench/results (or `place`). */
export async function renderPerformance(place: ResultsPlace = resultsPlace()): Promise<void> {
  const results = await readResults(place);
  const blocks = results.filter((r) => r.kind === "scale" && r.result.block === true);
  const scale = results.filter((r) => r.kind === "scale" && r.result.block !== true);
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
    ...(blocks.length
      ? ["## One transformer block (`deno task scale --block`)", "", ...blockTable(blocks)]
      : []),
    "## Kernels, adapters and the small models (`deno task perf`)",
    "",
  ];
  for (const r of perf) {
    const variants = r.result.variants ? `, kernels ${r.result.variants}` : "";
    lines.push(
      `### ${r.device}`,
      "",
      `${r.date.slice(0, 10)}, commit ${r.commit}${variants}.`,
      "",
    );
    lines.push(...rooflineTable(r.result));
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
  await Deno.mkdir(new URL(".", place.document), { recursive: true });
  await Deno.writeTextFile(place.document, lines.join("\n"));
}
