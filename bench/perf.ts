/**
 * `deno task perf`: one JSON object on stdout with the headline performance numbers, each ratio
 * measured against its baseline in the same run. Progress goes to stderr.
 *
 *   deno task perf              headline numbers
 *   deno task perf --sweep      also time a grid of tile shapes (to pick per-device defaults)
 *   deno task perf --size 512   another problem size (default 1024)
 *   deno task perf --only quant,adapters   some sections (roofline, matmul, quant, adapters, model)
 *   deno task perf --markdown   only render PERFORMANCE.md from bench/results
 *
 * The device's own roofline (bench/roofline.ts: f32 and f16 FMA, copy bandwidth) is measured
 * first, and every GFLOP/s or GB/s figure gets a `*_fraction_of_roofline` beside it. A full run
 * (no --only; --record for a partial one) records its JSON in bench/results/perf-<device>.json
 * (--results DIR: there) and renders PERFORMANCE.md again (--no-record: neither). Options are
 * checked before the GPU starts.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { variantsName } from "../kernels/runtime/variants.ts";
import {
  defaultMatmulKernel,
  isCpuAdapter,
  matmul,
  NAIVE_MATMUL,
} from "../kernels/matmul/matmul.ts";
import { kernelName, type MatmulKernelConfig } from "../kernels/matmul/wgsl.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { cpuPeakGflops, gflops, sig3, timeMs } from "./timing.ts";
import { tfjsMatmul } from "./tfjs_peer.ts";
import { quantPerf } from "./quant_perf.ts";
import { adapterPerf } from "./adapter_perf.ts";
import { modelPerf } from "./model_perf.ts";
import { torchPeer } from "./peer.ts";
import { recordResult, renderPerformance, resultsPlace } from "./perfdoc.ts";
import { roofline, withRooflineFractions } from "./roofline.ts";
import { type CommandSpec, intOption, type ParsedCli, runCli, UsageError } from "../tools/cli.ts";

/** The sections `--only` selects among. */
export const SECTIONS = ["roofline", "matmul", "quant", "adapters", "model"] as const;

/** The command-line interface of `deno task perf`. */
export const SPEC: CommandSpec = {
  name: "deno task perf",
  summary: "Measure the headline performance numbers, each ratio against its baseline in the " +
    "same run, and print them as one JSON object (progress on stderr).",
  options: {
    sweep: {
      type: "boolean",
      description: "Also time a grid of matmul tile shapes (to pick per-device defaults).",
    },
    grid: {
      type: "string",
      value: "JSON",
      description: "Kernel configs (a JSON list) to time instead of --sweep's (default: none).",
    },
    size: { type: "string", value: "N", default: "1024", description: "Matmul size (N×N×N)." },
    only: {
      type: "string",
      value: "LIST",
      description: `Sections, comma-separated: ${SECTIONS.join(", ")} (default: all).`,
    },
    markdown: {
      type: "boolean",
      description: "Only render PERFORMANCE.md from bench/results (no GPU).",
    },
    "no-record": {
      type: "boolean",
      description: "Do not record a full run in bench/results nor render PERFORMANCE.md.",
    },
    record: {
      type: "boolean",
      description: "Record the run even with --only (a partial result under the device's name).",
    },
    results: {
      type: "string",
      value: "DIR",
      description: "Record into DIR and render DIR/PERFORMANCE.md instead of bench/results and " +
        "PERFORMANCE.md (also for --markdown).",
    },
    peer: {
      type: "string",
      value: "NAME",
      description: "After the model section, run the same workloads in a peer framework and " +
        "report the ratios: torch (Debian's python3-torch; skipped when absent).",
    },
  },
  notes: "The roofline section (f32 and f16 FMA throughput, copy bandwidth of this device, GPU\n" +
    "timestamps where available) runs first; every GFLOP/s and GB/s figure then gets a\n" +
    "*_fraction_of_roofline key beside it, and a known GPU's datasheet figures are added as\n" +
    "nominal values. A full run (no --only) records its JSON in bench/results/perf-<device>.json\n" +
    "and renders PERFORMANCE.md again. The kernel variants (MOKA_KERNELS) are recorded too.",
  examples: [
    "deno task perf",
    "deno task perf --only roofline",
    "deno task perf --only roofline,matmul --size 256 --record --results /tmp/perf",
    "deno task perf --only quant,adapters --size 512",
    "deno task perf --markdown",
    "deno task perf --only model --peer torch",
  ],
};

/** The checked options. */
interface Options {
  size: number;
  only?: string[];
  grid?: MatmulKernelConfig[];
  sweep: boolean;
  record: boolean;
  forceRecord: boolean;
  results?: string;
  peer?: "torch";
}

/** Check every option (a UsageError names the bad one) before the GPU starts. */
function options(values: ParsedCli["values"]): Options {
  const size = intOption("size", values.size, 1)!;
  const only = values.only === undefined ? undefined : (values.only as string).split(",");
  for (const section of only ?? []) {
    if (!(SECTIONS as readonly string[]).includes(section)) {
      throw new UsageError(
        `--only=${values.only}: unknown section "${section}" (${SECTIONS.join(", ")})`,
      );
    }
  }
  let grid: MatmulKernelConfig[] | undefined;
  if (values.grid !== undefined) {
    try {
      grid = JSON.parse(values.grid as string);
    } catch (e) {
      throw new UsageError(`--grid: not JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(grid)) {
      throw new UsageError("--grid: expected a JSON list of kernel configs");
    }
  }
  const peer = values.peer as string | undefined;
  if (peer !== undefined && peer !== "torch") {
    throw new UsageError(`--peer=${peer}: unknown peer (torch)`);
  }
  if (peer && only && !only.includes("model")) {
    throw new UsageError("--peer compares the model section: add model to --only");
  }
  if (values.record && values["no-record"]) {
    throw new UsageError("--record and --no-record contradict each other");
  }
  return {
    size,
    only,
    grid,
    sweep: values.sweep === true,
    record: values["no-record"] !== true,
    forceRecord: values.record === true,
    results: values.results as string | undefined,
    peer: peer as "torch" | undefined,
  };
}

async function main({ values }: ParsedCli): Promise<void> {
  const opts = options(values);
  const place = resultsPlace(opts.results);
  if (values.markdown) {
    // Only render PERFORMANCE.md from the recorded results.
    await renderPerformance(place);
    console.error(`[perf] wrote ${place.document.pathname} from ${place.results.pathname}`);
    return;
  }
  const size = opts.size;
  const log = (msg: string) => console.error(`[perf] ${msg}`);
  const rt = await GpuRuntime.create();
  const flops = 2 * size ** 3;
  const peak = isCpuAdapter(rt.gpu) ? cpuPeakGflops() : null;

  const aData = randomF32(size * size, 1);
  const bData = randomF32(size * size, 2);
  const a = rt.upload(aData, [size, size]);
  const b = rt.upload(bData, [size, size]);
  const c = rt.empty([size, size]);
  const head = rt.device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });

  /** Our side of the same methodology as the peer: compute, then read back 4 values of C. */
  async function timeKernel(kernel: MatmulKernelConfig, reps: number): Promise<number> {
    const spec = { m: size, n: size, k: size };
    return await timeMs(async () => {
      const batch = rt.batch();
      await matmul(rt, a, b, spec, { out: c, kernel, batch });
      batch.copy(c.buffer, 0, head, 0, 16);
      await batch.submit();
      await head.mapAsync(GPUMapMode.READ);
      head.unmap();
    }, reps);
  }

  let result: Record<string, unknown> = {
    adapter: rt.gpu.description,
    backend: rt.gpu.backend,
    variants: variantsName(rt.variants),
  };

  const wants = (section: string) => !opts.only || opts.only.includes(section);

  if (wants("roofline")) {
    // The device's own ceilings first: every rate below is also given as a fraction of them.
    log(`adapter ${rt.gpu.description}, kernels ${variantsName(rt.variants)}`);
    Object.assign(result, await roofline(rt, log));
    if (peak) result.cpu_peak_gflops_nominal = sig3(peak);
  }

  if (wants("matmul")) {
    log(`adapter ${rt.gpu.description}; ${size}³ matmul = ${flops / 1e9} GFLOP`);
    const tuned = defaultMatmulKernel(rt.variants);
    log(`naive kernel (baseline) ...`);
    const naiveMs = await timeKernel(NAIVE_MATMUL, 2);
    log(`  ${naiveMs.toFixed(1)} ms`);
    log(`tuned kernel ${kernelName(tuned)} ...`);
    const tunedMs = await timeKernel(tuned, 7);
    log(`  ${tunedMs.toFixed(1)} ms`);
    // GPU-side time of the same kernel from timestamp queries: the wall time minus this is overhead.
    const profiled = rt.batch({ profile: true });
    await matmul(rt, a, b, { m: size, n: size, k: size }, {
      out: c,
      kernel: tuned,
      batch: profiled,
    });
    await profiled.submit();
    const gpuNs = profiled.durations()[0]?.ns;
    log(`tfjs-webgpu matMul (peer) ...`);
    const tf = await tfjsMatmul(aData, bData, size, size, size);
    const tfjsMs = await timeMs(() => tf.run().then(() => {}), 5);
    tf.dispose();
    log(`  ${tfjsMs.toFixed(1)} ms`);

    const s = size;
    result[`matmul_naive_gflops_${s}`] = sig3(gflops(flops, naiveMs));
    result[`matmul_tuned_gflops_${s}`] = sig3(gflops(flops, tunedMs));
    result[`matmul_tuned_kernel`] = kernelName(tuned);
    if (gpuNs !== undefined) result[`matmul_tuned_gpu_timestamp_ms_${s}`] = sig3(gpuNs / 1e6);
    // The kernel's own rate, timed like the roofline (GPU timestamps, no readback or submit).
    if (gpuNs) result[`matmul_tuned_gpu_timestamp_gflops_${s}`] = sig3(flops / gpuNs);
    result[`matmul_tuned_vs_naive_${s}`] = sig3(naiveMs / tunedMs);
    result[`tfjs_webgpu_gflops_${s}`] = sig3(gflops(flops, tfjsMs));
    result[`matmul_vs_tfjs_webgpu_${s}`] = sig3(tfjsMs / tunedMs);
    if (peak) {
      result.cpu_peak_gflops_nominal = sig3(peak);
      result[`matmul_floor_ms_${s}`] = sig3(flops / peak / 1e6);
      result[`matmul_tuned_fraction_of_peak_${s}`] = sig3(gflops(flops, tunedMs) / peak);
    }
  }

  if (wants("quant")) {
    Object.assign(result, await quantPerf(rt, log));
  }
  if (wants("adapters")) {
    Object.assign(result, await adapterPerf(rt, log));
  }
  if (wants("model")) {
    Object.assign(result, await modelPerf(rt, log));
    if (opts.peer === "torch") Object.assign(result, await torchPeer(result, log));
  }

  if (opts.sweep || opts.grid) {
    const sweep: Record<string, number> = {};
    // --grid takes a JSON list of kernel configs; --sweep uses the built-in grid.
    const grid: MatmulKernelConfig[] = opts.grid ? [...opts.grid] : [];
    for (const [tm, tn] of opts.grid ? [] : [[4, 4], [8, 8], [8, 16], [16, 8], [16, 16]]) {
      for (const [wx, wy] of [[8, 8], [16, 4], [4, 16], [8, 1]]) {
        grid.push({ kind: "register", tm, tn, wx, wy });
      }
    }
    const shared = opts.grid ? [] : [[4, 4, 16, 16, 16], [4, 4, 8, 8, 32], [8, 8, 8, 8, 16]];
    for (const [tm, tn, wx, wy, bk] of shared) {
      grid.push({ kind: "shared", tm, tn, wx, wy, bk });
    }
    for (const cfg of grid) {
      const ms = await timeKernel(cfg, 3);
      sweep[kernelName(cfg)] = sig3(gflops(flops, ms));
      log(`  sweep ${kernelName(cfg)}: ${sweep[kernelName(cfg)]} GFLOP/s`);
    }
    result[`matmul_sweep_gflops_${size}`] = sweep;
  }

  result = withRooflineFractions(result);
  console.log(JSON.stringify(result, null, 2));
  if (opts.record && (!opts.only || opts.forceRecord)) {
    // A full run is the device's record: bench/results/perf-<device>.json and PERFORMANCE.md.
    const file = await recordResult("perf", rt.gpu.description, rt.gpu.description, result, place);
    log(`recorded ${file}`);
  }
}

if (import.meta.main) await runCli(SPEC, main);
