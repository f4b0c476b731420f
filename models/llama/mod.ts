/**
 * LLaMA: checkpoint and tokenizer readers (llama2.c, Hugging Face folders streamed shard by
 * shard, safetensors), the float64 reference model, the GPU model with f32/NF4/int4 bases and
 * adapters, KV-cached greedy and beam-search generation with the selection on the GPU (several
 * prompts per batch), adapter training with checkpoints and exact resume, memory estimates and
 * synthetic checkpoints of real shapes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   estimateStepMemory,
 *   kvDim,
 *   LLAMA3_8B,
 *   linearDims,
 *   type LlamaConfig,
 *   shapeWidths,
 * } from "./mod.ts";
 * // LLaMA-3-8B's grouped-query attention: k and v project 4096 → 1024 (8 KV heads of 128).
 * assert.deepEqual(linearDims(shapeWidths(LLAMA3_8B), "k"), [4096, 1024]);
 * // stories260K's shape: what one training step holds on the GPU, from the shapes alone.
 * const tiny: LlamaConfig = {
 *   dim: 64,
 *   hiddenDim: 172,
 *   layers: 5,
 *   heads: 8,
 *   kvHeads: 4,
 *   vocab: 512,
 *   seqLen: 512,
 *   sharedClassifier: true,
 *   ropeTheta: 10000,
 *   normEps: 1e-5,
 * };
 * assert.equal(kvDim(tiny), 32);
 * const m = estimateStepMemory(tiny, {
 *   base: "f32",
 *   embedding: "f32",
 *   batch: 1,
 *   seq: 32,
 *   checkpointing: false,
 *   adapterParams: 1000,
 *   logitsChunkBytes: 1 << 20,
 * });
 * assert.equal(m.weights, 260_032 * 4); // the 260K f32 parameters
 * assert.equal(m.adapterState, 1000 * 4 * 5); // parameters, gradients, accumulation, AdamW m, v
 * assert.equal(m.total, m.weights + m.adapterState + m.activations + m.logits);
 * ```
 *
 * @module
 */
export type { Schema } from "../schema.ts";
export {
  type BlockWidths,
  LLAMA2_7B,
  LLAMA3_8B,
  LLAMA_SHAPES,
  type LlamaShape,
  LlamaShapeSchema,
  MID_0_2B,
  parseTargetModule,
  shapeWidths,
  STORIES_260K,
  TARGET_MODULES,
  type TargetModule,
  TINYLLAMA_1B,
} from "../llama_shapes.ts";
export {
  type Llama2cCheckpoint,
  type Llama2cConfig,
  type Llama2cLayer,
  llama2cLayout,
  loadLlama2c,
  parseLlama2c,
  parseLlama2cHeader,
} from "../llama2c.ts";
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
} from "../safetensors.ts";
export {
  ENGLISH_SAMPLE,
  SYNTHETIC_SHAPES,
  type SyntheticOptions,
  type SyntheticShape,
  syntheticTokenizer,
  writeSyntheticHf,
} from "../synthetic.ts";
export { bytesToUnicode } from "../tokenizer/byte_level.ts";
export {
  ByteFallbackTokenizer,
  Llama2cTokenizer,
  loadLlama2cTokenizer,
} from "../tokenizer/llama2c.ts";
export type { TextTokenizer } from "../tokenizer/tokenizer.ts";
export { HfTokenizer, llama2cToTokenizerJson } from "../tokenizer/hf.ts";
export {
  hfConfigJson,
  hfTensorName,
  hfTensorShapes,
  loadHfLlama,
  openHfSource,
  parseHfConfig,
  permuteRope,
} from "../hf.ts";
export {
  hostSource,
  hostTensor,
  type LlamaSource,
  type LlamaTensorName,
  readAllWeights,
  tensorNames,
  tensorShape,
} from "./source.ts";
export { type OpenedModel, openModel, readModelConfig } from "./open.ts";
export {
  type LoadedWeights,
  loadWeights,
  type WeightFormat,
  type WeightLoadOptions,
} from "./gpu/weights.ts";
export type { LlamaLayerWeights, LlamaWeights } from "./weights.ts";
export {
  fromLlama2c,
  headSize,
  kvDim,
  linearDims,
  LLAMA2C_WEIGHT,
  type LlamaConfig,
} from "./config.ts";
export { adapterKey, type CpuAdapters, CpuLlama, type LayerTape, type Tape } from "./cpu/model.ts";
export {
  type BaseFormat,
  CHECKPOINT_ABOVE_BYTES,
  type ForwardOptions,
  GpuLlama,
  type GpuLlamaOptions,
  KvCache,
  type LogitsRequest,
  type Trainables,
} from "./gpu/model.ts";
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
} from "./generate.ts";
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
} from "./train.ts";
export { loadModelReference, type ModelReference } from "./reference.ts";
export { adamwHyper, trainCpu } from "./train.ts";
export { adaptersForModel, type BaseWeights, targetModules } from "./attach.ts";
export {
  describeStepMemory,
  estimateGenerationMemory,
  estimateScoringMemory,
  estimateStepMemory,
  type InferenceBatchMemory,
  inferenceTokenBytes,
  type StepMemory,
  type StepMemorySettings,
  widestActivationRowBytes,
} from "./memory.ts";
