/**
 * Kernels: the WebGPU runtime ({@link GpuRuntime}, {@link GpuTensor}, {@link Batch}: many
 * dispatches, one submit; buffer pool, pipeline cache, tensor arenas), the dense matmul kernels
 * with their tile shapes as parameters and the CPU reference, the adapter kernels (gates, split-K
 * gradients, fused Kronecker mixtures), AdamW, and the LLaMA layer kernels (forward and backward,
 * KV-cached decoding, token selection) with their float64 references.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GpuRuntime, matmul } from "./mod.ts";
 * const rt = await GpuRuntime.create();
 * const a = rt.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * const w = rt.upload(new Float32Array([1, 0, 0, 0, 1, 0]), [2, 3]); // [out, in]
 * const y = await matmul(rt, a, w, { m: 2, n: 2, k: 3, transB: true }); // y = a·wᵀ
 * assert.deepEqual(Array.from(await rt.read(y)), [1, 2, 4, 5]);
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
} from "./runtime/device.ts";
export { bucketSize, BufferPool, type PoolStats } from "./runtime/buffer_pool.ts";
export { PipelineCache } from "./runtime/pipeline_cache.ts";
export { type ArenaSlot, planArena, TensorArena } from "./runtime/arena.ts";
export { Batch, type Binding, type KernelTiming } from "./runtime/batch.ts";
export {
  GpuTensor,
  rowAlignment,
  STORAGE_OFFSET_ALIGNMENT,
  TENSOR_USAGE,
} from "./runtime/tensor.ts";
export { dtypeOf, GpuRuntime, type GpuRuntimeOptions } from "./runtime/runtime.ts";
export {
  chooseKernelVariants,
  type KernelTarget,
  type KernelVariantRequest,
  type KernelVariants,
  subgroupPrelude,
  variantRequestFromEnv,
  variantsName,
} from "./runtime/variants.ts";
export {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  hostArray,
  numel,
} from "./runtime/dtype.ts";
export {
  checkMatmulOperands,
  type FullMatmulSpec,
  matmulCpu,
  matmulSizes,
  type MatmulSpec,
  resolveMatmulSpec,
} from "./cpu/matmul.ts";
export {
  CPU_ADAPTER_MATMUL,
  CPU_ADAPTER_MATMUL_SMALL,
  defaultMatmulKernel,
  GPU_MATMUL,
  GPU_MATMUL_LARGE,
  isCpuAdapter,
  matmul,
  type MatmulOptions,
  matmulParams,
  NAIVE_MATMUL,
} from "./matmul/matmul.ts";
export {
  kernelName,
  type MatmulKernelConfig,
  type MatmulLayout,
  matmulWgsl,
  vec4Layout,
  workgroupTile,
} from "./matmul/wgsl.ts";
export { type CeChunk, ceFinish, ceGrad, ceStats } from "./llama/cross_entropy.ts";
export {
  checkKronShape,
  kronBackwardCpu,
  kronForwardCpu,
  kronMaterializeCpu,
  type KronShape,
  softmax,
} from "./adapters/kron_cpu.ts";
export {
  fusedKronBackward,
  type FusedKronComponent,
  fusedKronDirect,
  fusedKronEpilogue,
  fusedKronForward,
  fusedKronGateGrad,
  type FusedKronLayer,
  type FusedKronPlan,
  fusedKronPlan,
} from "./adapters/kron_fused.ts";
export { dropoutKeep, gaussianArray, kaimingUniform, rng, uniformArray } from "./cpu/random.ts";
export {
  difference,
  doraBackward,
  doraForward,
  doraNormGrad,
  doraNorms,
  dotInto,
  dropout,
  gateBackward,
  gatedAxpy,
  kronExpand,
  sumSlices,
  transposeBatched,
} from "./adapters/ops.ts";
export {
  gradMatmul,
  type GradMatmulArgs,
  gradMatmulSlots,
  sliceCount,
} from "./adapters/grad_matmul.ts";
export { type AdamWStep, adamwStep, adamwStepCpu } from "./optim/adamw.ts";
export { ropeApply, type RopeLayout } from "./llama/cpu/rope.ts";
export { beamSelect, type BeamStateLayout, beamStateLayout, greedySelect } from "./llama/select.ts";
/** The LLaMA layer kernels (forward and backward), each tested against `models/llama/cpu/`. */
export * as llamaKernels from "./llama/ops.ts";
export { FLAT_INDEX_WGSL, launch, type UniformLayout, uniformLayout } from "./runtime/launch.ts";
export type { ProductEpilogue } from "./runtime/epilogue.ts";
export { attentionBackward, type AttentionDims, attentionForward } from "./llama/attention.ts";
