/**
 * WebGPU adapter and device acquisition.
 *
 * Deno picks its WebGPU backend (Vulkan, GL, Metal, ...) from `DENO_WEBGPU_BACKEND` when a worker
 * first requests an adapter; unset, it enables every backend. On Linux that includes GL, whose
 * EGL library (libglvnd) corrupts the heap when a thread that used it exits after the instance
 * was torn down (see tools/repro/egl_thread_exit.ts). So before the first request we pin the
 * platform's native backend (`vulkan` on Linux) unless the caller chose one, and give Mesa a
 * private `XDG_RUNTIME_DIR` when none is set (it otherwise prints an "error" on every start).
 * A backend asked for after the process has already chosen another cannot take effect:
 * `acquireGpu({ backend })` then says how to start the process instead.
 */

/** Backends a caller may ask for. `"auto"` takes the platform's native one. */
export type GpuBackend = "auto" | "vulkan" | "gl" | "metal" | "dx12";

/** Options for {@link acquireGpu}. */
export interface AcquireGpuOptions {
  /** Requested backend; defaults to `MOKA_WEBGPU_BACKEND`, then `"auto"`. */
  backend?: GpuBackend;
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /**
   * Optional features to enable when the adapter has them (never required). `subgroups` is asked
   * for by name even when the adapter does not list it (Deno's adapters grant it unlisted).
   */
  wantFeatures?: GPUFeatureName[];
}

/** An acquired adapter + device, with the facts kernels need to choose code paths. */
export interface Gpu {
  /** The adapter the device came from. */
  readonly adapter: GPUAdapter;
  /** The device every kernel runs on. */
  readonly device: GPUDevice;
  /** Human-readable adapter description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  readonly description: string;
  /** The backend Deno was asked for (`DENO_WEBGPU_BACKEND`), or `"auto"` when it could not be set. */
  readonly backend: string;
  /** `shader-f16` is enabled on the device. */
  readonly hasF16: boolean;
  /** `timestamp-query` is enabled on the device. */
  readonly hasTimestamps: boolean;
  /**
   * `subgroups` is enabled, a shader using `subgroupAdd` runs, and a 1-D workgroup's subgroups are
   * full runs of consecutive invocation indices (what the subgroup kernels rely on).
   */
  readonly hasSubgroups: boolean;
  /** Subgroup shaders need the `enable subgroups;` directive (browsers do; naga refuses it). */
  readonly subgroupDirective: boolean;
  /** The subgroup size a 256-wide workgroup ran with (0 without subgroups); kernels assume none. */
  readonly subgroupSize: number;
  /** Set once the device is lost; every later submit should fail with this reason. */
  lostReason: string | null;
}

/** Thrown when no usable WebGPU adapter or device can be obtained. */
export class GpuUnavailableError extends Error {
  /** An error whose message says what failed and how to fix it. */
  constructor(message: string) {
    super(message);
    this.name = "GpuUnavailableError";
  }
}

const FIX_HINT = "WebGPU needs an adapter. On Linux without a GPU install Mesa's software Vulkan " +
  "driver: `apt-get install -y mesa-vulkan-drivers` (llvmpipe); with an NVIDIA GPU the Vulkan " +
  "loader (`libvulkan1`). Only GL drivers: start Deno with DENO_WEBGPU_BACKEND=gl.";

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/** The backend each platform's GPUs are reached through (what "auto" pins). */
export function nativeBackend(os: string = Deno.build.os): GpuBackend {
  if (os === "darwin") return "metal";
  if (os === "windows") return "dx12";
  return "vulkan";
}

function envSet(name: string, value: string): boolean {
  try {
    Deno.env.set(name, value);
    return true;
  } catch {
    return false; // no --allow-env: Deno keeps its own defaults
  }
}

/**
 * Pin the backend and give Mesa a runtime dir before the first adapter request (see the module
 * comment). Returns the backend Deno will use: the one in `DENO_WEBGPU_BACKEND` afterwards.
 */
function prepareEnvironment(requested: GpuBackend): string {
  let backend = envGet("DENO_WEBGPU_BACKEND");
  if (backend === undefined) {
    const pin = requested === "auto" ? nativeBackend() : requested;
    if (envSet("DENO_WEBGPU_BACKEND", pin)) backend = pin;
  }
  if (Deno.build.os === "linux" && envGet("XDG_RUNTIME_DIR") === undefined) {
    try {
      envSet("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "moka-xdg-" })); // mode 0700
    } catch { /* no --allow-write: Mesa only warns */ }
  }
  return backend ?? "auto";
}

/**
 * Request an adapter and a device with the optional features the kernels can use
 * (`shader-f16`, `timestamp-query`). Throws {@link GpuUnavailableError} with a fix when there is none.
 */
export async function acquireGpu(options: AcquireGpuOptions = {}): Promise<Gpu> {
  const requested = options.backend ?? (envGet("MOKA_WEBGPU_BACKEND") as GpuBackend | undefined) ??
    "auto";
  const started = prepareEnvironment(requested);
  if (requested !== "auto" && requested !== started) {
    throw new GpuUnavailableError(
      `backend "${requested}" was requested but this process already uses DENO_WEBGPU_BACKEND=` +
        `${started}; Deno takes it once per process, so run with DENO_WEBGPU_BACKEND=${requested}.`,
    );
  }
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new GpuUnavailableError(`navigator.gpu is missing in this runtime. ${FIX_HINT}`);
  }
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) {
    throw new GpuUnavailableError(
      `requestAdapter() returned null (backend ${started}). ${FIX_HINT}`,
    );
  }
  const wanted: GPUFeatureName[] = options.wantFeatures ??
    ["shader-f16", "timestamp-query", SUBGROUPS];
  const listed = wanted.filter((f) => adapter.features.has(f));
  const limits = adapter.limits;
  const request = (requiredFeatures: GPUFeatureName[]) =>
    adapter.requestDevice({
      requiredFeatures,
      requiredLimits: {
        maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
        maxBufferSize: limits.maxBufferSize,
        maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
        maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
      },
    });
  let device: GPUDevice | null = null;
  if (wanted.includes(SUBGROUPS) && !listed.includes(SUBGROUPS)) {
    try {
      device = await request([...listed, SUBGROUPS]);
    } catch { /* not granted unlisted: ask for the listed features only */ }
  }
  try {
    device ??= await request(listed);
  } catch (e) {
    throw new GpuUnavailableError(
      `requestDevice failed on ${adapter.info.description}: ${(e as Error).message}`,
    );
  }
  const subgroups = device.features.has(SUBGROUPS)
    ? await probeSubgroups(device)
    : { works: false, directive: false, size: 0 };
  const gpu: Gpu = {
    adapter,
    device,
    description: adapter.info.description || adapter.info.vendor || "unknown adapter",
    backend: started,
    hasF16: device.features.has("shader-f16"),
    hasTimestamps: device.features.has("timestamp-query"),
    hasSubgroups: subgroups.works,
    subgroupDirective: subgroups.directive,
    subgroupSize: subgroups.size,
    lostReason: null,
  };
  device.lost.then((info) => {
    gpu.lostReason = `WebGPU device lost (${info.reason}): ${info.message}`;
  });
  return gpu;
}

const SUBGROUPS = "subgroups" as GPUFeatureName;

// Each invocation checks that its subgroup is the run of consecutive invocation indices
// [i − lane, i − lane + size), full: the subgroup kernels reduce a subgroup, then combine the
// subgroups of a workgroup by index, and rely on that layout (every implementation we know forms
// 1-D subgroups this way, but WGSL does not promise it). Slot 256 gets the subgroup size.
const SUBGROUP_PROBE = `@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) i: u32,
  @builtin(subgroup_size) n: u32,
  @builtin(subgroup_invocation_id) lane: u32,
) {
  let full = subgroupAdd(1u) == n;
  let runs = subgroupBroadcastFirst(i) + lane == i && lane == i % n;
  o[i] = select(0u, 1u, full && runs);
  if (i == 0u) { o[256] = n; }
}`;

/**
 * Whether subgroup shaders work as the kernels use them, whether they need `enable subgroups;`
 * (WGSL requires the directive and browsers enforce it, while naga, Deno's compiler, refuses it),
 * and the subgroup size seen.
 */
async function probeSubgroups(
  device: GPUDevice,
): Promise<{ works: boolean; directive: boolean; size: number }> {
  for (const directive of [true, false]) {
    const code = (directive ? "enable subgroups;\n" : "") + SUBGROUP_PROBE;
    device.pushErrorScope("validation"); // a refused variant is expected, not an uncaptured error
    const module = device.createShaderModule({ code, label: "subgroup probe" });
    const info = await module.getCompilationInfo();
    await device.popErrorScope();
    if (info.messages.some((m) => m.type === "error")) continue;
    const bytes = 257 * 4;
    const out = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    });
    const read = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      const pipeline = await device.createComputePipelineAsync({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(
        0,
        device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [{ binding: 0, resource: { buffer: out } }],
        }),
      );
      pass.dispatchWorkgroups(1);
      pass.end();
      encoder.copyBufferToBuffer(out, 0, read, 0, bytes);
      device.queue.submit([encoder.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const flags = new Uint32Array(read.getMappedRange().slice(0));
      read.unmap();
      const works = flags.subarray(0, 256).every((f) => f === 1);
      return { works, directive, size: flags[256] };
    } catch {
      return { works: false, directive, size: 0 };
    } finally {
      out.destroy();
      read.destroy();
    }
  }
  return { works: false, directive: false, size: 0 };
}

/** Throw a clear error if the device was lost; call before submitting work. */
export function assertAlive(gpu: Gpu): void {
  if (gpu.lostReason !== null) {
    throw new GpuUnavailableError(
      `${gpu.lostReason}. Create a new Gpu with acquireGpu(); buffers of the lost device are gone.`,
    );
  }
}

let shared: Promise<Gpu> | null = null;

/** One process-wide Gpu, acquired on first use (tests and tools share it). */
export function sharedGpu(): Promise<Gpu> {
  if (!shared) {
    shared = acquireGpu().catch((e) => {
      shared = null;
      throw e;
    });
  }
  return shared;
}
