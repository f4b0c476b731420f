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
 * - adapters ({@link createAdapter}): MoKA and MoKA_s ({@link MokaAdapter}, the vec-trick on the
 *   GPU via {@link KronMixtureGpu}), KronA, LoKr (PEFT's layout), LoRA and DoRA, each with a
 *   float64 reference, GPU forward/backward, merge, and safetensors files ({@link saveAdapters});
 *   whole-model parameter counts ({@link countTrainableParams});
 * - AdamW on the GPU ({@link adamwStep}), the expressiveness experiment ({@link fitTarget});
 * - LLaMA: the llama2.c checkpoint and tokenizer readers ({@link loadLlama2c},
 *   {@link Llama2cTokenizer}), a safetensors reader/writer, the float64 reference model
 *   ({@link CpuLlama}), the GPU model with f32/NF4/int4 bases and adapters ({@link GpuLlama}),
 *   KV-cached greedy and beam-search generation ({@link generate}) and adapter training with
 *   checkpoints ({@link Trainer});
 * - report schemas ({@link SelfCheckReportSchema}, {@link ExpressivenessReportSchema}) and SVG
 *   plots ({@link renderLinePlot}).
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
export { type ArenaSlot, planArena, TensorArena } from "./kernels/runtime/arena.ts";
export { Batch, type Binding, type KernelTiming } from "./kernels/runtime/batch.ts";
export {
  GpuTensor,
  rowAlignment,
  STORAGE_OFFSET_ALIGNMENT,
  TENSOR_USAGE,
} from "./kernels/runtime/tensor.ts";
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
  emptyWeight,
  type GpuQuantWeight,
  QUANT_BACKWARD,
  QUANT_DECODE,
  QUANT_PREFILL,
  quantMatmul,
  quantMatmulBackward,
  type QuantMatmulOptions,
  type StorageFormat,
  storageRowBytes,
  uploadF32Weight,
  uploadHalfWeight,
  uploadQuantized,
} from "./kernels/quant/qmatmul.ts";
export { quantizeRows, type RawRows, type StoredDType } from "./kernels/quant/quantize.ts";
export {
  type FrozenBlock,
  frozenBlockBackward,
  frozenBlockMatmul,
  frozenDequantize,
  frozenGather,
  frozenMatmul,
  frozenMatmulBackward,
  type FrozenMatmulOptions,
  FrozenMatrix,
  type FrozenOptions,
  frozenRowNorms,
  planRowBlocks,
} from "./kernels/quant/frozen.ts";
export { type CeChunk, ceFinish, ceGrad, ceStats } from "./kernels/llama/cross_entropy.ts";
export {
  type QuantBackwardConfig,
  quantBackwardWgsl,
  type QuantForwardConfig,
  quantForwardWgsl,
  quantForwardWideWgsl,
  type QuantKernelFormat,
  wideForwardEligible,
} from "./kernels/quant/wgsl.ts";
export {
  type ChoiceAccuracy,
  type ExpressivenessReport,
  ExpressivenessReportSchema,
  type ExpressivenessRow,
  parseReportText,
  parseRunReport,
  parseSelfCheckReport,
  type ReportSchema,
  type RunReport,
  RunReportSchema,
  type SelfCheckReport,
  SelfCheckReportSchema,
  type SelfCheckRow,
  SelfCheckRowSchema,
  type TaskAccuracy,
} from "./reports/schema.ts";
export type { Schema } from "./models/schema.ts";
export {
  DASHES,
  type DashStyle,
  DISTINCT_STYLES,
  downsample,
  escapeXml,
  type LinePlot,
  MARKERS,
  type MarkerShape,
  renderLinePlot,
  type Series,
  type SeriesStyle,
  seriesStyle,
} from "./reports/svg.ts";

// Adapters: common interface, the five families, files and parameter counts.
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
} from "./models/adapters/adapter.ts";
export {
  type AdapterConfig,
  AdapterConfigSchema,
  adapterFromParams,
  type AdapterKind,
  createAdapter,
  parseAdapterConfig,
  trainableParams,
} from "./models/adapters/registry.ts";
export { type MokaConfig, MokaConfigSchema, mokaShapes } from "./models/adapters/moka/config.ts";
export { MokaAdapter } from "./models/adapters/moka/layer.ts";
export { kronMixtureDelta, mokaMerged } from "./models/adapters/moka/merge.ts";
export {
  mokaShapeCandidates,
  type MokaShapeProposal,
  proposeMokaShapes,
} from "./models/adapters/moka/shapes.ts";
export { type KronaConfig, KronaConfigSchema } from "./models/adapters/krona/config.ts";
export { KronaAdapter } from "./models/adapters/krona/layer.ts";
export {
  factorization,
  type LokrConfig,
  LokrConfigSchema,
  type LokrLayout,
  lokrLayout,
} from "./models/adapters/lokr/config.ts";
export { LokrAdapter } from "./models/adapters/lokr/layer.ts";
export { type LoraConfig, LoraConfigSchema } from "./models/adapters/lora/config.ts";
export { LoraAdapter } from "./models/adapters/lora/layer.ts";
export { type DoraConfig, DoraConfigSchema } from "./models/adapters/dora/config.ts";
export { DoraAdapter } from "./models/adapters/dora/layer.ts";
export {
  checkKronShape,
  kronBackwardCpu,
  kronForwardCpu,
  kronMaterializeCpu,
  type KronShape,
  softmax,
} from "./models/adapters/kron_cpu.ts";
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
} from "./models/adapters/kron_gpu.ts";
export {
  fusedKronBackward,
  type FusedKronComponent,
  fusedKronForward,
  fusedKronGateGrad,
  type FusedKronLayer,
  type FusedKronPlan,
  fusedKronPlan,
} from "./kernels/adapters/kron_fused.ts";
export {
  ADAPTER_FILE_FORMAT,
  ADAPTER_FILE_VERSION,
  type AdapterSet,
  decodeAdapters,
  encodeAdapters,
  loadAdapters,
  saveAdapters,
} from "./models/adapters/io.ts";
export {
  checkAdaptersFit,
  exportPeft,
  importPeft,
  isPeftFolder,
  loadPeft,
  type PeftAdapter,
  type PeftExportOptions,
  peftModuleName,
  savePeft,
} from "./models/peft.ts";
export { type MergeOptions, writeMergedHf } from "./models/merged.ts";
export { countTrainableParams, type ParamCount } from "./models/adapters/count.ts";
export {
  LLAMA2_7B,
  LLAMA3_8B,
  LLAMA_SHAPES,
  type LlamaShape,
  LlamaShapeSchema,
  MID_0_2B,
  moduleDims,
  parseTargetModule,
  STORIES_260K,
  TARGET_MODULES,
  type TargetModule,
  TINYLLAMA_1B,
} from "./models/llama_shapes.ts";
export {
  type Llama2cCheckpoint,
  type Llama2cConfig,
  type Llama2cLayer,
  llama2cLayout,
  loadLlama2c,
  parseLlama2c,
  parseLlama2cHeader,
} from "./models/llama2c.ts";
export {
  decodeToF32,
  encodeElements,
  encodeSafetensors,
  parseSafetensors,
  plannedBytes,
  planShards,
  type RawTensorBytes,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsFile,
  SafetensorsReader,
  SafetensorsWriter,
  shardIndexJson,
  type TensorPlan,
  writeShardedSafetensors,
} from "./models/safetensors.ts";
export {
  ENGLISH_SAMPLE,
  SYNTHETIC_SHAPES,
  type SyntheticOptions,
  type SyntheticShape,
  syntheticTokenizer,
  writeSyntheticHf,
} from "./models/synthetic.ts";
export { bytesToUnicode } from "./models/tokenizer/byte_level.ts";
export { dataDir, defaultModelPath, modelsDir } from "./models/paths.ts";
export {
  dropoutKeep,
  gaussianArray,
  hash32,
  kaimingUniform,
  rng,
  uniformArray,
} from "./models/random.ts";

// Adapter kernels and the optimizer.
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
  grid1d,
  kronExpand,
  packUniform,
  sumSlices,
  transposeBatched,
} from "./kernels/adapters/ops.ts";
export {
  gradMatmul,
  type GradMatmulArgs,
  gradMatmulSlots,
  sliceCount,
} from "./kernels/adapters/grad_matmul.ts";
export { type AdamWStep, adamwStep, adamwStepCpu } from "./kernels/optim/adamw.ts";

// LLaMA: readers, the float64 reference, the GPU model, generation and training.
export {
  ByteFallbackTokenizer,
  Llama2cTokenizer,
  loadLlama2cTokenizer,
} from "./models/tokenizer/llama2c.ts";
export type { TextTokenizer } from "./models/tokenizer/tokenizer.ts";
export { HfTokenizer, llama2cToTokenizerJson } from "./models/tokenizer/hf.ts";
export {
  hfConfigJson,
  hfTensorName,
  hfTensorShapes,
  loadHfLlama,
  openHfSource,
  parseHfConfig,
  permuteRope,
} from "./models/hf.ts";
export {
  hostSource,
  hostTensor,
  type LlamaSource,
  type LlamaTensorName,
  readAllWeights,
  tensorNames,
  tensorShape,
} from "./models/llama/source.ts";
export { type OpenedModel, openModel } from "./models/llama/open.ts";
export {
  type LoadedWeights,
  loadWeights,
  type WeightFormat,
  type WeightLoadOptions,
} from "./models/llama/gpu/weights.ts";
export {
  fromLlama2c,
  headSize,
  kvDim,
  linearDims,
  LLAMA2C_WEIGHT,
  type LlamaConfig,
} from "./models/llama/config.ts";
export {
  adapterKey,
  type CpuAdapters,
  CpuLlama,
  type LayerTape,
  type Tape,
} from "./models/llama/cpu/model.ts";
export { ropeApply, type RopeLayout } from "./models/llama/cpu/rope.ts";
export {
  type BaseFormat,
  CHECKPOINT_ABOVE_BYTES,
  type ForwardOptions,
  GpuLlama,
  type GpuLlamaOptions,
  KvCache,
  type LogitsRequest,
  type Trainables,
} from "./models/llama/gpu/model.ts";
export {
  cpuLogitsAt,
  cpuScorer,
  generate,
  generateOnGpu,
  type GenerateOptions,
  type Generation,
  type GpuGenerateOptions,
  gpuScorer,
  logitsAt,
  nextTokenLogits,
  type Scorer,
  search,
  searchOnGpu,
} from "./models/llama/generate.ts";
export {
  beamSelect,
  type BeamStateLayout,
  beamStateLayout,
  greedySelect,
} from "./kernels/llama/select.ts";
export {
  CHECKPOINT_FORMAT,
  type DataPosition,
  epochOrder,
  type Example,
  learningRate,
  type StepLog,
  type TrainConfig,
  TrainConfigSchema,
  Trainer,
} from "./models/llama/train.ts";
export { loadModelReference, type ModelReference } from "./models/llama/reference.ts";
/** The LLaMA layer kernels (forward and backward), each tested against `models/llama/cpu/`. */
export * as llamaKernels from "./kernels/llama/ops.ts";
export { FLAT_INDEX_WGSL, launch } from "./kernels/runtime/launch.ts";

// The reproduction grid.
export {
  canonicalJson,
  FAMILIES,
  type Family,
  type GridConfig,
  GridConfigSchema,
  parseGridConfig,
  parseShard,
  planGrid,
  type PlannedRun,
  profile,
  type ProfileName,
  PROFILES,
  runConfig,
  sha256,
  shardRuns,
} from "./reports/grid/config.ts";
export {
  type ConfigRow,
  configRows,
  type MetricSpec,
  noiseVerdicts,
  type SeedStat,
} from "./reports/grid/aggregate.ts";
export {
  executeRun,
  finishedReport,
  type LoadedModel,
  loadGridModel,
} from "./reports/grid/runner.ts";
export {
  collectReports,
  type GridRow,
  gridRows,
  mergeShards,
  writeGridSummary,
} from "./reports/grid/summary.ts";

export { PUBLISHED, renderGridPage, renderRunPage, writeStaticPages } from "./reports/html.ts";

// Tasks and evaluations.
export {
  evaluationPrompt,
  type InstructionRecord,
  InstructionRecordSchema,
  PROTOCOL,
  type Protocol,
  type ProtocolName,
  PROTOCOLS,
  responseOf,
  trainingExample,
  trainingText,
} from "./tasks/alpaca.ts";
export {
  COMMONSENSE_ORDER,
  COMMONSENSE_TASKS,
  type CommonsenseTask,
  loadCommonsense,
  loadRecordFile,
  parseRecords,
  parseTask,
} from "./tasks/commonsense/data.ts";
export {
  formatQuestion,
  formatSubject,
  loadMmlu,
  MMLU_SUBJECTS,
  type MmluCategory,
  mmluCategory,
  mmluPrompt,
  type MmluQuestion,
  parseMmluCsv,
} from "./tasks/mmlu/data.ts";
export { parseCsv } from "./tasks/csv.ts";
export {
  type CommonsenseRun,
  commonsenseTrainRecords,
  evaluateHeldOut,
  type InstructionRun,
  runCommonsense,
  runInstructionTuning,
  runMmlu,
  toExamples,
} from "./tasks/pipeline.ts";
export { cpuHeldOutLoss, type HeldOutLoss, heldOutLoss } from "./evals/heldout.ts";
export {
  type ChoiceQuestion,
  choiceQuestion,
  type ChoiceScore,
  scoreChoices,
} from "./evals/choice.ts";
export { beyondSeedNoise, majorityBaseline, meanSd, wilsonInterval, Z95 } from "./evals/stats.ts";
export {
  type CommonsenseEvalOptions,
  evaluateCommonsense,
  extractAnswer,
  scoreAnswers,
  type TaskScore,
} from "./evals/commonsense.ts";
export {
  evaluateMmlu,
  letterContinuations,
  type MmluOptions,
  mmluPromptText,
  type MmluScores,
  scoreMmlu,
} from "./evals/mmlu.ts";
export {
  continuationLogLikelihoods,
  type LogitsAt,
  type ScoredPair,
  splitContinuation,
} from "./evals/loglik.ts";
export { adamwHyper, progressLine, trainCpu } from "./models/llama/train.ts";
export { adaptersForModel, type BaseWeights, targetModules } from "./models/llama/attach.ts";
export {
  describeStepMemory,
  estimateStepMemory,
  type StepMemory,
  type StepMemorySettings,
} from "./models/llama/memory.ts";
export {
  attentionBackward,
  type AttentionDims,
  attentionForward,
} from "./kernels/llama/attention.ts";
export {
  adaptersForBudget,
  type BudgetedAdapter,
  type FitOptions,
  type FitResult,
  fitTarget,
} from "./evals/expressiveness.ts";
export { kronRearrange, singularValues, truncationError } from "./evals/svd.ts";
