/**
 * The device's own roofline, measured in the same run as the kernels it is compared with: f32 FMA
 * throughput, f16 FMA throughput (where `shader-f16` exists) and copy bandwidth, each from a small
 * WGSL kernel whose size grows until one run takes at least `minMs` (20 ms by default), so it
 * takes seconds on a CPU adapter (llvmpipe) and fills a large GPU alike. Timed with GPU
 * timestamps where the device has them, wall time of the submit otherwise.
 *
 * - FMA: every invocation runs 4 or 8 independent `fma` chains of vec4 (the faster count kept)
 *   for `iters` rounds on values read from a buffer (nothing folds at compile time), and writes
 *   their sum (nothing is optimised away). FLOPs = invocations × iters × chains × 4 × 2.
 * - Copy: a grid-stride loop reads a buffer of vec4<f32> and writes another of the same size,
 *   dispatched several times in a row once the buffer is as large as allowed (up to 256 MiB).
 *   Bytes = read + written.
 *
 * `deno task perf` measures it first (`--only roofline`) and puts a `*_fraction_of_roofline`
 * beside every GFLOP/s and GB/s figure; {@link nominalGpu} adds a known GPU's datasheet figures,
 * labelled nominal, beside the measured ones.
 */
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { median, sig3 } from "./timing.ts";

/** Options of {@link roofline}. */
export interface RooflineOptions {
  /** Grow each kernel until one run takes at least this (ms; default 20). */
  minMs?: number;
  /** Timed runs at the final size, the median reported (default 3). */
  reps?: number;
}

/** A known GPU's datasheet figures (nominal, never measured here). */
export interface NominalGpu {
  /** Product name as the datasheet gives it. */
  name: string;
  /** Matched against the adapter's description. */
  match: RegExp;
  /** f32 non-tensor-core peak, GFLOP/s. */
  f32Gflops: number;
  /** Memory bandwidth, GB/s. */
  bandwidthGbps: number;
}

/** Datasheet figures of known GPUs (SXM parts): labelled nominal wherever they are reported. */
export const NOMINAL_GPUS: readonly NominalGpu[] = [
  {
    name: "NVIDIA H200 SXM (datasheet)",
    match: /\bh200\b/i,
    f32Gflops: 67_000,
    bandwidthGbps: 4800,
  },
  {
    name: "NVIDIA H100 SXM (datasheet)",
    match: /\bh100\b/i,
    f32Gflops: 67_000,
    bandwidthGbps: 3350,
  },
  {
    name: "NVIDIA A100 SXM 80GB (datasheet)",
    match: /\ba100\b/i,
    f32Gflops: 19_500,
    bandwidthGbps: 2039,
  },
];

/** The datasheet entry of the adapter described by `description`, if it is a known GPU. */
export function nominalGpu(description: string): NominalGpu | undefined {
  return NOMINAL_GPUS.find((g) => g.match.test(description));
}

const WG = 256;
// Independent vec4 accumulators per invocation: each count is timed and the fastest kept (a CPU
// adapter spills 8 vec4 chains out of its 16 AVX registers, a GPU hides FMA latency with them).
const CHAINS = [4, 8];
const LANES = 4;
const MAX_WG_X = 8192; // × 256 = 2M invocations: several waves on any GPU

function fmaWgsl(type: "f32" | "f16", chains: number): string {
  const v = `vec4<${type}>`;
  const init = Array.from(
    { length: chains },
    (_, i) => `  var a${i} = ${v}(${type}(f32(i & 1023u) * 1e-4 + ${i}.0 * 1e-3)) + c;`,
  ).join("\n");
  const body = Array.from({ length: chains }, (_, i) => `    a${i} = fma(a${i}, b, c);`).join(
    "\n",
  );
  const sum = Array.from({ length: chains }, (_, i) => `a${i}`).join(" + ");
  return `${type === "f16" ? "enable f16;\n" : ""}
struct P { iters: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> seed: array<vec4<f32>, 2>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let b = ${v}(seed[0]);
  let c = ${v}(seed[1]);
${init}
  for (var k = 0u; k < p.iters; k++) {
${body}
  }
  let s = vec4<f32>(${sum});
  out[i] = s.x + s.y + s.z + s.w;
}
`;
}

const COPY_WGSL = `
struct P { n: u32, stride: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < p.n; i += p.stride) {
    dst[i] = src[i];
  }
}
`;

/** How one run was timed. */
type Timing = "gpu-timestamp" | "wall";

/**
 * Milliseconds of `dispatches` recorded into one batch: the sum of their GPU timestamps, or the
 * submit's wall time when the device has none (or reports zero).
 */
async function timeBatch(
  rt: GpuRuntime,
  record: (batch: ReturnType<GpuRuntime["batch"]>) => void,
): Promise<{ ms: number; timing: Timing }> {
  const batch = rt.batch({ profile: rt.gpu.hasTimestamps });
  record(batch);
  const t0 = performance.now();
  await batch.submit();
  const wall = performance.now() - t0;
  const ns = batch.durations().reduce((n, t) => n + t.ns, 0);
  return ns > 0 ? { ms: ns / 1e6, timing: "gpu-timestamp" } : { ms: wall, timing: "wall" };
}

/** One throughput measurement: the rate, how it was timed, and the final size. */
interface Measured {
  rate: number;
  ms: number;
  timing: Timing;
  size: string;
}

async function measureFma(
  rt: GpuRuntime,
  type: "f32" | "f16",
  minMs: number,
  reps: number,
): Promise<Measured> {
  let best: Measured | null = null;
  for (const chains of CHAINS) {
    const m = await measureFmaChains(rt, type, chains, minMs, reps);
    if (!best || m.rate > best.rate) best = m;
  }
  return best!;
}

async function measureFmaChains(
  rt: GpuRuntime,
  type: "f32" | "f16",
  chains: number,
  minMs: number,
  reps: number,
): Promise<Measured> {
  const pipeline = await rt.pipelines.get(fmaWgsl(type, chains), `roofline/fma-${type}-x${chains}`);
  const seed = rt.device.createBuffer({
    size: 32,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    label: "roofline seed",
  });
  // a ← a·b + c converges to c / (1 − b): bounded in f16 as in f32.
  rt.device.queue.writeBuffer(
    seed,
    0,
    new Float32Array([0.999, 0.998, 0.997, 0.996, 0.001, 0.002, 0.003, 0.004]),
  );
  const out = rt.device.createBuffer({
    size: MAX_WG_X * WG * 4,
    usage: GPUBufferUsage.STORAGE,
    label: "roofline out",
  });
  let wgs = 64;
  let iters = 16;
  const run = () =>
    timeBatch(rt, (b) => {
      b.dispatch(pipeline, [b.uniform(new Uint32Array([iters, 0, 0, 0])), seed, out], [wgs]);
    });
  try {
    await run(); // compile and first touch
    for (;;) {
      const { ms } = await run();
      if (ms >= minMs) break;
      // Grow by 2–16× toward minMs: workgroups first (fill the device), then rounds.
      let grow = Math.min(16, Math.max(2, 2 ** Math.ceil(Math.log2(minMs / Math.max(ms, 1e-3)))));
      while (grow > 1 && wgs < MAX_WG_X) {
        wgs *= 2;
        grow /= 2;
      }
      iters *= grow;
      if (iters > 1 << 26) break;
    }
    const times: { ms: number; timing: Timing }[] = [];
    for (let r = 0; r < reps; r++) times.push(await run());
    const ms = median(times.map((t) => t.ms));
    const flops = wgs * WG * iters * chains * LANES * 2;
    return {
      rate: flops / ms / 1e6,
      ms,
      timing: times[0].timing,
      size: `${wgs}×${WG} invocations × ${iters} rounds × ${chains} vec4<${type}> chains`,
    };
  } finally {
    seed.destroy();
    out.destroy();
  }
}

async function measureCopy(rt: GpuRuntime, minMs: number, reps: number): Promise<Measured> {
  const pipeline = await rt.pipelines.get(COPY_WGSL, "roofline/copy-vec4");
  const limits = rt.device.limits;
  const cap = Math.min(256 * 2 ** 20, limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const maxBytes = Math.floor(cap / 16) * 16;
  let bytes = Math.min(4 * 2 ** 20, maxBytes);
  let dispatches = 1;
  let buffers: [GPUBuffer, GPUBuffer] | null = null;
  const alloc = () => {
    buffers?.forEach((b) => b.destroy());
    buffers = [0, 1].map((i) =>
      rt.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.STORAGE,
        label: `roofline copy ${i ? "dst" : "src"}`,
      })
    ) as [GPUBuffer, GPUBuffer];
  };
  const run = () =>
    timeBatch(rt, (b) => {
      const n = bytes / 16;
      const groups = Math.min(Math.ceil(n / WG), MAX_WG_X);
      const params = b.uniform(new Uint32Array([n, groups * WG, 0, 0]));
      for (let i = 0; i < dispatches; i++) {
        b.dispatch(pipeline, [params, buffers![0], buffers![1]], [groups]);
      }
    });
  try {
    alloc();
    await run(); // compile and first touch
    // At least 64 MiB per buffer where the device allows it: larger than any cache.
    const floor = Math.min(64 * 2 ** 20, maxBytes);
    for (;;) {
      const { ms } = await run();
      if (ms >= minMs && bytes >= floor) break;
      let grow = Math.min(16, Math.max(2, 2 ** Math.ceil(Math.log2(minMs / Math.max(ms, 1e-3)))));
      if (bytes < maxBytes) {
        const next = Math.min(maxBytes, bytes * grow);
        grow = Math.max(1, grow / (next / bytes));
        bytes = next;
        alloc();
        await run(); // first touch of the new buffers
      }
      // A profiled batch times up to 2048 dispatches; 1024 of ≥ 64 MiB is ≥ 20 ms below 6 TB/s.
      dispatches = Math.min(1024, Math.ceil(dispatches * grow));
      if (dispatches === 1024) break;
    }
    const times: { ms: number; timing: Timing }[] = [];
    for (let r = 0; r < reps; r++) times.push(await run());
    const ms = median(times.map((t) => t.ms));
    return {
      rate: (2 * bytes * dispatches) / ms / 1e6,
      ms,
      timing: times[0].timing,
      size: `${(bytes / 2 ** 20).toFixed(0)} MiB read + written × ${dispatches} dispatches`,
    };
  } finally {
    (buffers as [GPUBuffer, GPUBuffer] | null)?.forEach((b) => b.destroy());
  }
}

/**
 * Measure the roofline; returns `roofline_f32_gflops`, `roofline_f16_gflops` (where
 * `shader-f16` exists), `roofline_copy_gbps`, how each was timed and its final size, and a known
 * GPU's nominal figures (`gpu_nominal`, `gpu_f32_gflops_nominal`, `gpu_bandwidth_gbps_nominal`,
 * and the measured ones as fractions of them).
 */
export async function roofline(
  rt: GpuRuntime,
  log: (msg: string) => void = () => {},
  options: RooflineOptions = {},
): Promise<Record<string, number | string>> {
  const minMs = options.minMs ?? 20;
  const reps = options.reps ?? 3;
  const out: Record<string, number | string> = {};
  log(`roofline: f32 FMA ...`);
  const f32 = await measureFma(rt, "f32", minMs, reps);
  log(`  ${f32.rate.toFixed(1)} GFLOP/s (${f32.ms.toFixed(1)} ms, ${f32.timing}; ${f32.size})`);
  out.roofline_f32_gflops = sig3(f32.rate);
  out.roofline_f32_timing = f32.timing;
  out.roofline_f32_size = f32.size;
  if (rt.gpu.hasF16) {
    log(`roofline: f16 FMA ...`);
    const f16 = await measureFma(rt, "f16", minMs, reps);
    log(`  ${f16.rate.toFixed(1)} GFLOP/s (${f16.ms.toFixed(1)} ms, ${f16.timing}; ${f16.size})`);
    out.roofline_f16_gflops = sig3(f16.rate);
    out.roofline_f16_timing = f16.timing;
    out.roofline_f16_size = f16.size;
    out.roofline_f16_vs_f32 = sig3(f16.rate / f32.rate);
  }
  log(`roofline: copy bandwidth ...`);
  const copy = await measureCopy(rt, minMs, reps);
  log(`  ${copy.rate.toFixed(1)} GB/s (${copy.ms.toFixed(1)} ms, ${copy.timing}; ${copy.size})`);
  out.roofline_copy_gbps = sig3(copy.rate);
  out.roofline_copy_timing = copy.timing;
  out.roofline_copy_size = copy.size;
  const nominal = nominalGpu(rt.gpu.description);
  if (nominal) {
    out.gpu_nominal = nominal.name;
    out.gpu_f32_gflops_nominal = nominal.f32Gflops;
    out.gpu_bandwidth_gbps_nominal = nominal.bandwidthGbps;
    out.roofline_f32_fraction_of_nominal = sig3(f32.rate / nominal.f32Gflops);
    out.roofline_copy_fraction_of_nominal = sig3(copy.rate / nominal.bandwidthGbps);
  }
  return out;
}

/**
 * `result` with a `*_fraction_of_roofline` key beside every numeric GFLOP/s figure (`_gflops`,
 * against `roofline_f32_gflops`) and GB/s figure (`_gbps`, against `roofline_copy_gbps`): the key
 * with `gflops`/`gbps` replaced, e.g. `matmul_tuned_gflops_1024` →
 * `matmul_tuned_fraction_of_roofline_1024`. The roofline's own keys and nominal figures are
 * left alone; without a measured roofline the result comes back unchanged.
 */
export function withRooflineFractions(
  result: Record<string, unknown>,
): Record<string, unknown> {
  const f32 = result.roofline_f32_gflops;
  const copy = result.roofline_copy_gbps;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(result)) {
    if (key.includes("fraction_of_roofline")) continue; // recomputed below
    out[key] = value;
    if (typeof value !== "number" || key.startsWith("roofline_") || key.includes("nominal")) {
      continue;
    }
    const flops = /(^|_)gflops(_|$)/.exec(key);
    const bytes = /(^|_)gbps(_|$)/.exec(key);
    const m = flops ?? bytes;
    const roof = flops ? f32 : copy;
    if (!m || typeof roof !== "number" || roof <= 0) continue;
    const name = key.slice(0, m.index) + m[1] + "fraction_of_roofline" + m[2] +
      key.slice(m.index + m[0].length);
    out[name.replace(/^_/, "")] = sig3(value / roof);
  }
  return out;
}
