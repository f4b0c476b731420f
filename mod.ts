/**
 * moka — MoKA (Mixture of Kronecker Adapters) and its baselines on WebGPU.
 *
 * This module is the public API. What exists today:
 * - the WebGPU runtime: {@link acquireGpu}, {@link GpuRuntime}, {@link GpuTensor},
 *   {@link BufferPool}, {@link PipelineCache}, {@link Batch} (many dispatches, one submit,
 *   optional GPU timestamps);
 * - dense matmul kernels ({@link matmul}: C = α·op(A)·op(B) + β·C, batched, any size) with
 *   tile shapes as parameters ({@link MatmulKernelConfig}) and the CPU reference
 *   {@link matmulCpu} they are tested against;
 * - 4-bit frozen weights: NF4 ({@link quantizeNf4}, with QLoRA's double quantization) and
 *   asymmetric group-wise int4 ({@link quantizeInt4}), and fused WGSL kernels that dequantize in
 *   registers: {@link quantMatmul} (y = x·Wᵀ, decode and prefill) and
 *   {@link quantMatmulBackward} (dx = dy·W);
 * - the report schema of the kernel self-check ({@link SelfCheckReportSchema}).
 *
 * @example
 * ```ts
 * import { GpuRuntime, matmul } from "./mod.ts";
 * const rt = await GpuRuntime.create();
 * const a = rt.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * const w = rt.upload(new Float32Array([1, 0, 0, 0, 1, 0]), [2, 3]); // [out, in]
 * const y = await matmul(rt, a, w, { m: 2, n: 2, k: 3, transB: true }); // y = a·wᵀ
 * console.log(await rt.read(y)); // Float32Array [1, 2, 4, 5]
 * ```
 *
 * @module
 */
export {
  acquireGpu,
  type AcquireGpuOptions,
  assertAlive,
  type Gpu,
  type GpuBackend,
  GpuUnavailableError,
  sharedGpu,
} from "./kernels/runtime/device.ts";
export { bucketSize, BufferPool, type PoolStats } from "./kernels/runtime/buffer_pool.ts";
export { PipelineCache } from "./kernels/runtime/pipeline_cache.ts";
export { Batch, type Binding, type KernelTiming } from "./kernels/runtime/batch.ts";
export { GpuTensor, TENSOR_USAGE } from "./kernels/runtime/tensor.ts";
export { dtypeOf, GpuRuntime } from "./kernels/runtime/runtime.ts";
export {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  hostArray,
  numel,
} from "./kernels/runtime/dtype.ts";
export {
  checkMatmulOperands,
  type FullMatmulSpec,
  matmulCpu,
  matmulSizes,
  type MatmulSpec,
  resolveMatmulSpec,
} from "./kernels/cpu/matmul.ts";
export {
  CPU_ADAPTER_MATMUL,
  CPU_ADAPTER_MATMUL_SMALL,
  defaultMatmulKernel,
  GPU_MATMUL,
  isCpuAdapter,
  matmul,
  type MatmulOptions,
  matmulParams,
  NAIVE_MATMUL,
} from "./kernels/matmul/matmul.ts";
export {
  kernelName,
  type MatmulKernelConfig,
  type MatmulLayout,
  matmulWgsl,
  vec4Layout,
  workgroupTile,
} from "./kernels/matmul/wgsl.ts";
export {
  blocksPerRow,
  checkWeightInput,
  getCode,
  type Int4Weight,
  type Nf4DoubleQuant,
  type Nf4Weight,
  packCodes,
  quantizedBytes,
  type QuantizedWeight,
  unpackCodes,
  validateQuantized,
  wordsPerRow,
} from "./models/quant/format.ts";
export {
  dequantizeNf4,
  doubleQuantize,
  NF4_LEVELS,
  NF4_ZERO_CODE,
  nf4Absmax,
  nf4Code,
  type Nf4Options,
  normalFloatLevels,
  quantizeNf4,
} from "./models/quant/nf4.ts";
export { dequantizeInt4, quantizeInt4 } from "./models/quant/int4.ts";
export { normalCdf, normalQuantile } from "./models/quant/normal.ts";
export {
  type GpuQuantWeight,
  QUANT_BACKWARD,
  QUANT_DECODE,
  QUANT_PREFILL,
  quantMatmul,
  quantMatmulBackward,
  type QuantMatmulOptions,
  uploadF32Weight,
  uploadQuantized,
} from "./kernels/quant/qmatmul.ts";
export {
  type QuantBackwardConfig,
  quantBackwardWgsl,
  type QuantForwardConfig,
  quantForwardWgsl,
  type QuantKernelFormat,
} from "./kernels/quant/wgsl.ts";
export {
  parseSelfCheckReport,
  type ReportSchema,
  type SelfCheckReport,
  SelfCheckReportSchema,
  type SelfCheckRow,
  SelfCheckRowSchema,
} from "./reports/schema.ts";
