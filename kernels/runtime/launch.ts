/**
 * Small helpers to record element-wise kernels: uniform blocks from field lists, 1-D grids folded
 * to 2-D past the dispatch limit, and `launch` (compile once, bind, dispatch).
 */
import type { Batch } from "./batch.ts";
import type { GpuRuntime } from "./runtime.ts";
import type { GpuTensor } from "./tensor.ts";

const WG = 256;

/** WGSL: flat index of a 1-D launch of `wg`-wide workgroups folded to 2-D (`flat(gid, nwg)`). */
export function flatIndexWgsl(wg: number): string {
  return `
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * ${wg}u; }`;
}

/** {@link flatIndexWgsl} for the default 256-wide workgroups. */
export const FLAT_INDEX_WGSL: string = flatIndexWgsl(WG);

/** Grid for `n` invocations of a `wg`-wide 1-D kernel, folded to 2-D past the dispatch limit. */
export function grid1d(rt: GpuRuntime, n: number, wg = WG): [number, number] {
  const groups = Math.ceil(n / wg);
  const limit = rt.device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= limit) return [groups, 1];
  const y = Math.ceil(groups / limit);
  return [Math.ceil(groups / y), y];
}

/** A uniform block declared once: its WGSL struct and the host packing that matches it. */
export interface UniformLayout<K extends string> {
  /** `struct <name> { ... }` with the fields in order (padded to 16 bytes). */
  wgsl: string;
  /** The block's bytes from a value per field. */
  pack(values: Record<K, number>): ArrayBuffer;
}

/**
 * Declare a uniform block by its fields (u32 or f32, 4 bytes each, in order): the WGSL struct
 * and the packing come from this one list, so they cannot disagree.
 */
export function uniformLayout<K extends string>(
  name: string,
  fields: readonly (readonly [K, "u32" | "f32"])[],
): UniformLayout<K> {
  const pads = (4 - (fields.length % 4)) % 4;
  const members = [
    ...fields.map(([f, t]) => `${f}: ${t}`),
    ...Array.from({ length: pads }, (_, i) => `_pad${i}: u32`),
  ];
  return {
    wgsl: `struct ${name} {\n  ${members.join(",\n  ")},\n}`,
    pack: (values) =>
      packUniform(fields.map(([f, t]) => (t === "u32" ? { u: values[f] } : { f: values[f] }))),
  };
}

// A uniform block from a list of u32 and f32 fields, in order (all 4 bytes); only through a
// layout, so no kernel packs by hand in an order its struct does not share.
function packUniform(fields: ({ u: number } | { f: number })[]): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil(fields.length / 4) * 16));
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  fields.forEach((v, i) => {
    if ("u" in v) u[i] = v.u;
    else f[i] = v.f;
  });
  return buf;
}

/**
 * Compile (cached) and record one kernel: binding 0 is the uniform block `params` (from a
 * {@link uniformLayout}'s `pack`), then `buffers` in order; `invocations` is the 1-D size (folded
 * to 2-D) of a kernel whose workgroups are `wg` wide, or "one" for one workgroup.
 */
export async function launch(
  rt: GpuRuntime,
  batch: Batch,
  kernel: { code: string; label: string },
  params: ArrayBuffer,
  buffers: GpuTensor[],
  invocations: number | "one",
  wg = WG,
): Promise<void> {
  const pipeline = await rt.pipelines.get(kernel.code, kernel.label);
  batch.dispatch(
    pipeline,
    [batch.uniform(params), ...buffers.map((t) => t.binding)],
    invocations === "one" ? [1] : grid1d(rt, invocations, wg),
  );
}
