/**
 * The one place that decides which kernel variants a runtime records.
 *
 * Two families exist for most kernels. The CPU-adapter variants (llvmpipe, SwiftShader, WARP) are
 * barrier-free and register-tiled: on a rasteriser every storage load is a per-lane gather and a
 * workgroup barrier is a thread synchronisation, so reuse must come from registers. The GPU
 * variants tile through workgroup memory, load wide and coalesced, and reduce with subgroup
 * operations where the device grants them. Every kernel family asks {@link KernelVariants} rather
 * than looking at the adapter itself, and tests force the GPU family on a CPU adapter to check it
 * against its float64 twin.
 */
import type { Gpu } from "./device.ts";

/** Which family of kernels runs: the CPU-adapter shapes or the GPU shapes. */
export type KernelTarget = "cpu-adapter" | "gpu";

/** What a caller may force; anything left out follows the device. */
export interface KernelVariantRequest {
  /** Kernel family (default: `"cpu-adapter"` on CPU adapters, `"gpu"` elsewhere). */
  target?: KernelTarget;
  /** Use subgroup operations (default: where the device grants `subgroups`). */
  subgroups?: boolean;
  /** Use f16 arithmetic where a kernel's tests allow it (default: where `shader-f16` exists). */
  f16?: boolean;
}

/** The variants every kernel family consults, with the limits that size their tiles. */
export interface KernelVariants {
  /** The kernel family. */
  readonly target: KernelTarget;
  /** Subgroup operations (`subgroupAdd`, ...) may be used. */
  readonly subgroups: boolean;
  /** WGSL using subgroup operations must start with `enable subgroups;` (browsers; not naga). */
  readonly subgroupDirective: boolean;
  /** f16 arithmetic may be used. */
  readonly f16: boolean;
  /** Bytes of workgroup memory one workgroup may use. */
  readonly workgroupStorageBytes: number;
  /** Invocations one workgroup may have. */
  readonly maxInvocations: number;
  /** Whether any choice was forced rather than taken from the device. */
  readonly forced: boolean;
}

/** True for adapters that run shaders on the CPU. */
export function isCpuAdapter(gpu: Gpu): boolean {
  const d = gpu.description.toLowerCase();
  return gpu.adapter.info.isFallbackAdapter || /llvmpipe|swiftshader|warp|lavapipe/.test(d);
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * A request read from `MOKA_KERNELS`: `auto` (or unset), `gpu`, `cpu-adapter`, optionally followed
 * by `,subgroups`, `,no-subgroups`, `,f16` or `,no-f16`. An unknown word throws with the choices.
 */
export function variantRequestFromEnv(
  value: string | undefined = envGet("MOKA_KERNELS"),
): KernelVariantRequest {
  const request: KernelVariantRequest = {};
  if (value === undefined || value.trim() === "") return request;
  for (const word of value.split(",").map((w) => w.trim())) {
    if (word === "auto") continue;
    else if (word === "gpu" || word === "cpu-adapter") request.target = word;
    else if (word === "subgroups" || word === "no-subgroups") {
      request.subgroups = word === "subgroups";
    } else if (word === "f16" || word === "no-f16") request.f16 = word === "f16";
    else {
      throw new RangeError(
        `MOKA_KERNELS: unknown word "${word}" (auto, gpu, cpu-adapter, subgroups, ` +
          `no-subgroups, f16, no-f16)`,
      );
    }
  }
  return request;
}

/**
 * The variants for `gpu`, with `request` forcing any choice. Forcing a feature the device lacks
 * (subgroups, f16) throws: a test that asks for the subgroup path must not silently run another.
 */
export function chooseKernelVariants(
  gpu: Gpu,
  request: KernelVariantRequest = {},
): KernelVariants {
  if (request.subgroups && !gpu.hasSubgroups) {
    throw new RangeError(`subgroup kernels were requested but ${gpu.description} lacks subgroups`);
  }
  if (request.f16 && !gpu.hasF16) {
    throw new RangeError(`f16 kernels were requested but ${gpu.description} lacks shader-f16`);
  }
  const limits = gpu.device.limits;
  return {
    target: request.target ?? (isCpuAdapter(gpu) ? "cpu-adapter" : "gpu"),
    subgroups: request.subgroups ?? gpu.hasSubgroups,
    subgroupDirective: gpu.subgroupDirective,
    f16: request.f16 ?? gpu.hasF16,
    workgroupStorageBytes: limits.maxComputeWorkgroupStorageSize,
    maxInvocations: limits.maxComputeInvocationsPerWorkgroup,
    forced: request.target !== undefined || request.subgroups !== undefined ||
      request.f16 !== undefined,
  };
}

/** The line a WGSL module using subgroup operations starts with on this device ("" in naga). */
export function subgroupPrelude(v: KernelVariants): string {
  return v.subgroups && v.subgroupDirective ? "enable subgroups;\n" : "";
}

/** A short name of the variants for reports, e.g. `gpu+subgroups+f16`. */
export function variantsName(v: KernelVariants): string {
  return [v.target, v.subgroups ? "subgroups" : "", v.f16 ? "f16" : ""].filter(Boolean).join("+");
}
