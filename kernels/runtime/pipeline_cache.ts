/**
 * Compute pipelines cached by (WGSL source, entry point, override constants).
 *
 * Kernels generate WGSL from their parameters (tile shape, transposes); the same parameters give
 * the same text, so the text itself is the cache key and no two kernels can collide.
 */

/** Cache of compiled compute pipelines for one device. */
export class PipelineCache {
  readonly #device: GPUDevice;
  readonly #pipelines = new Map<string, Map<string, Promise<GPUComputePipeline>>>();
  #count = 0;

  /** A cache of pipelines compiled for `device`. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** Number of distinct pipelines compiled so far. */
  get size(): number {
    return this.#count;
  }

  /**
   * The pipeline for `code`, compiling it on first use. A WGSL error rejects with the compiler's
   * messages and the kernel's label, and is not cached (a later call tries again).
   */
  get(
    code: string,
    label: string,
    constants: Record<string, number> = {},
    entryPoint = "main",
  ): Promise<GPUComputePipeline> {
    // Two levels: a memoised code string keeps its hash, so finding it costs no rehash of the
    // whole source (building one key string from it would).
    let byCode = this.#pipelines.get(code);
    if (!byCode) {
      byCode = new Map();
      this.#pipelines.set(code, byCode);
    }
    const key = `${entryPoint}\u0000${JSON.stringify(constants)}`;
    let pipeline = byCode.get(key);
    if (!pipeline) {
      pipeline = this.#compile(code, label, constants, entryPoint);
      pipeline.catch(() => {
        byCode.delete(key);
        this.#count--;
      });
      byCode.set(key, pipeline);
      this.#count++;
    }
    return pipeline;
  }

  async #compile(
    code: string,
    label: string,
    constants: Record<string, number>,
    entryPoint: string,
  ): Promise<GPUComputePipeline> {
    const module = this.#device.createShaderModule({ code, label });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length > 0) {
      const lines = code.split("\n");
      const detail = errors.map((m) =>
        `  line ${m.lineNum}: ${m.message}\n    ${lines[m.lineNum - 1]?.trim() ?? ""}`
      ).join("\n");
      throw new Error(`WGSL compile error in kernel "${label}":\n${detail}`);
    }
    try {
      return await this.#device.createComputePipelineAsync({
        label,
        layout: "auto",
        compute: { module, entryPoint, constants },
      });
    } catch (e) {
      throw new Error(`pipeline creation failed for kernel "${label}": ${(e as Error).message}`);
    }
  }
}
