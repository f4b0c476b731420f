/**
 * Adapters: the common interface ({@link Adapter}: float64 reference, GPU forward and backward,
 * merge), the registry ({@link createAdapter} from a validated {@link AdapterConfig}), the six
 * families — MoKA and MoKA_s, KronA, LoKr, LoRA, DoRA —, adapter files (safetensors, PEFT
 * folders, merged checkpoints) and whole-model parameter counts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { countTrainableParams, createAdapter } from "./mod.ts";
 * import { LLAMA3_8B } from "../llama/mod.ts";
 * const moka = createAdapter({ kind: "moka", components: [[4, 4], [2, 2]] }, 64, 64, 1);
 * // A₁ 4×4 ⊗ B₁ 16×16, A₂ 2×2 ⊗ B₂ 32×32, and one gate logit per component:
 * assert.equal(moka.trainableParams(), 16 + 16 * 16 + 4 + 32 * 32 + 2);
 * // The same adapter on q and v of every LLaMA-3-8B layer (q 4096², v 4096 → 1024):
 * const count = countTrainableParams(LLAMA3_8B, ["q", "v"], moka.config);
 * assert.equal(count.layers, 32);
 * ```
 *
 * @module
 */
export {
  Adapter,
  type AdapterMath,
  type AdapterStart,
  type BaseRowNorms,
  type CpuGradients,
  type F64Params,
  type GpuAdapterLayer,
  type GpuLayerOptions,
  type Params,
  type ParamSpec,
  type ParamStorage,
  type PassOptions,
} from "./adapter.ts";
export {
  type AdapterConfig,
  AdapterConfigSchema,
  adapterFromParams,
  type AdapterKind,
  createAdapter,
  parseAdapterConfig,
  trainableParams,
} from "./registry.ts";
export { type MokaConfig, MokaConfigSchema, mokaShapes } from "./moka/config.ts";
export { MokaAdapter } from "./moka/layer.ts";
export { kronMixtureDelta, mokaMerged } from "./moka/merge.ts";
export { mokaShapeCandidates, type MokaShapeProposal, proposeMokaShapes } from "./moka/shapes.ts";
export { type KronaConfig, KronaConfigSchema } from "./krona/config.ts";
export { KronaAdapter } from "./krona/layer.ts";
export {
  factorization,
  type LokrConfig,
  LokrConfigSchema,
  type LokrLayout,
  lokrLayout,
} from "./lokr/config.ts";
export { LokrAdapter } from "./lokr/layer.ts";
export { type LoraConfig, LoraConfigSchema } from "./lora/config.ts";
export { LoraAdapter } from "./lora/layer.ts";
export { type DoraConfig, DoraConfigSchema } from "./dora/config.ts";
export { DoraAdapter } from "./dora/layer.ts";
export {
  CHUNK_GRAD_SLOTS,
  DEFAULT_KRON_SCRATCH_BYTES,
  DEFAULT_KRON_SCRATCH_BYTES_GPU,
  defaultKronScratchBytes,
  directForwardMacs,
  fuseBelow,
  type KronComponentTensors,
  type KronGpuOptions,
  KronMixtureGpu,
} from "./kron_gpu.ts";
export {
  ADAPTER_FILE_FORMAT,
  ADAPTER_FILE_VERSION,
  type AdapterLoadOptions,
  type AdapterSet,
  decodeAdapters,
  encodeAdapters,
  loadAdapters,
  saveAdapters,
} from "./io.ts";
export {
  checkAdaptersFit,
  exportPeft,
  importPeft,
  isPeftFolder,
  loadPeft,
  moduleDims,
  type PeftAdapter,
  type PeftExportOptions,
  peftModuleName,
  savePeft,
} from "../peft.ts";
export { type MergeOptions, writeMergedHf } from "../merged.ts";
export { countTrainableParams, type ParamCount } from "./count.ts";
