/**
 * Minimal reproduction of a native heap corruption seen at the end of long WebGPU processes on
 * Linux (glibc aborts with "corrupted double-linked list", "double free or corruption", or a
 * SIGSEGV in libEGL.so.1).
 *
 * `deno test` runs each test module on a thread of its own with its own WebGPU instance. When the
 * backend is not pinned, wgpu's instance includes the GL backend, which initialises EGL
 * (libglvnd) while enumerating adapters. When the module ends, its instance and EGL display are
 * torn down, and when a thread that called into EGL exits, glvnd's thread-specific-data
 * destructor touches freed state: a use-after-free in native code that corrupts the heap (or
 * crashes at once). The more GPU modules a process runs, the likelier it is.
 *
 * Seen with Deno 2.9.6 (wgpu), libglvnd 1.6.0 (libEGL.so.1), Mesa 22.3.6 (llvmpipe/lavapipe),
 * glibc 2.36 on Debian 12. Backtrace of the crashing thread:
 *   #0 libEGL.so.1  #1 __nptl_deallocate_tsd  #2 start_thread  #3 clone3
 *
 * Workaround (kernels/runtime/device.ts): pin the backend before the first adapter request —
 * `DENO_WEBGPU_BACKEND=vulkan` on Linux — so EGL is never loaded. Run:
 *
 *   deno task soak --runs 10 -- deno run -A tools/repro/egl_thread_exit.ts        (backend unset)
 *   deno task soak --runs 10 --env DENO_WEBGPU_BACKEND=vulkan -- deno run -A tools/repro/egl_thread_exit.ts
 *
 * Arguments: [modules = 12] [pause per module in ms = 2500].
 */
const MODULES = Number(Deno.args[0] ?? 12);
const PAUSE_MS = Number(Deno.args[1] ?? 2500);

// One test module: acquire an adapter and a device, run one dispatch, read it back, then idle
// long enough for runtime threads that touched EGL to exit while later modules run.
const MODULE_SOURCE = `
Deno.test("adapter, device, one dispatch", async () => {
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter!.requestDevice();
  const module = device.createShaderModule({ code: \`
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&x)) { x[g.x] = x[g.x] * 2.0 + 1.0; }
}\` });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const data = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const staging = device.createBuffer({ size: 4096, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: data } }],
  }));
  pass.dispatchWorkgroups(16);
  pass.end();
  encoder.copyBufferToBuffer(data, 0, staging, 0, 4096);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  staging.unmap();
  await new Promise((r) => setTimeout(r, ${PAUSE_MS}));
});
`;

// deno test runs every module on a thread of its own with its own WebGPU instance, torn down
// when the module ends: the pattern that triggers the bug.
const dir = await Deno.makeTempDir({ prefix: "moka-egl-repro-" });
try {
  for (let i = 0; i < MODULES; i++) {
    await Deno.writeTextFile(`${dir}/m${String(i).padStart(2, "0")}_test.ts`, MODULE_SOURCE);
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", dir],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  console.log(
    `deno test of ${MODULES} GPU modules (DENO_WEBGPU_BACKEND=${
      Deno.env.get("DENO_WEBGPU_BACKEND") ?? "unset"
    }): ${out.signal ? `killed by ${out.signal}` : `exit ${out.code}`}`,
  );
  Deno.exitCode = out.signal ? 134 : out.code;
} finally {
  await Deno.remove(dir, { recursive: true });
}
