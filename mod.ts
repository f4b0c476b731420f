/**
 * moka — MoKA (Mixture of Kronecker Adapters) and its baselines on WebGPU.
 *
 * What most programs need: a WebGPU runtime and the dense matmul, 4-bit (NF4) base weights, the
 * adapters (MoKA, MoKA_s, KronA, LoKr, LoRA, DoRA), a LLaMA model on the GPU that trains them and
 * generates, and the commonsense and MMLU evaluations. Everything else is in the subpath
 * modules, one per layer:
 *
 * | import                  | what                                                             |
 * | ----------------------- | ---------------------------------------------------------------- |
 * | `kernels/mod.ts`        | runtime, matmul, adapter and LLaMA kernels, AdamW, references     |
 * | `kernels/quant/mod.ts`  | NF4 and int4 formats, quantizers and fused kernels               |
 * | `models/adapters/mod.ts`| the adapter interface, six families, files, parameter counts     |
 * | `models/llama/mod.ts`   | readers, float64 and GPU models, generation, training            |
 * | `tasks/mod.ts`          | Alpaca template, commonsense and MMLU data                        |
 * | `evals/mod.ts`          | commonsense, MMLU, log-likelihood choice, statistics             |
 * | `grid/mod.ts`           | grid configs, pipelines, runner, run reports                      |
 * | `reports/mod.ts`        | SVG plots, HTML pages, the report server                          |
 *
 * (In a project that depends on the package, the same modules are `@moka/moka/kernels`,
 * `@moka/moka/quant`, `@moka/moka/adapters`, `@moka/moka/llama`, … as deno.json exports them.)
 *
 * @example A MoKA adapter on one layer, its parameter count and a GPU forward
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAdapter, GpuRuntime, matmul } from "./mod.ts";
 *
 * const rt = await GpuRuntime.create();
 * const [dIn, dOut, tokens] = [64, 32, 4];
 * const moka = createAdapter({ kind: "moka", components: [[8, 8], [4, 4]] }, dIn, dOut, 1);
 * // A₁ 8×8 ⊗ B₁ 4×8, A₂ 4×4 ⊗ B₂ 8×16, and one gate logit per component:
 * assert.equal(moka.trainableParams(), 64 + 32 + 16 + 128 + 2);
 *
 * const x = rt.upload(new Float32Array(tokens * dIn).fill(0.5), [tokens, dIn]);
 * const w = rt.upload(new Float32Array(dOut * dIn).fill(0.01), [dOut, dIn]); // the frozen base
 * const y = await matmul(rt, x, w, { m: tokens, n: dOut, k: dIn, transB: true }); // y = x·Wᵀ
 * const layer = await moka.toGpu(rt);
 * const batch = rt.batch();
 * await layer.forward(batch, x, y, tokens); // y += x·ΔWᵀ (ΔW = 0 at initialisation)
 * await batch.submit();
 * assert.equal((await rt.read(y))[0].toFixed(2), "0.32");
 * ```
 *
 * @module
 */

// The runtime and the dense matmul.
export { GpuRuntime } from "./kernels/runtime/runtime.ts";
export type { GpuTensor } from "./kernels/runtime/tensor.ts";
export type { Batch } from "./kernels/runtime/batch.ts";
export { matmul, type MatmulOptions } from "./kernels/matmul/matmul.ts";
export { matmulCpu } from "./kernels/cpu/matmul.ts";
export { gaussianArray, rng } from "./kernels/cpu/random.ts";

// 4-bit base weights.
export { dequantizeNf4, quantizeNf4 } from "./kernels/quant/nf4.ts";
export type { Nf4Weight } from "./kernels/quant/format.ts";
export { quantizeInt4 } from "./kernels/quant/int4.ts";
export { frozenMatmul, FrozenMatrix } from "./kernels/quant/frozen.ts";
export { uploadQuantized } from "./kernels/quant/qmatmul.ts";

// Adapters.
export { Adapter } from "./models/adapters/adapter.ts";
export {
  type AdapterConfig,
  AdapterConfigSchema,
  type AdapterKind,
  createAdapter,
  parseAdapterConfig,
} from "./models/adapters/registry.ts";
export { type AdapterSet, loadAdapters, saveAdapters } from "./models/adapters/io.ts";
export { countTrainableParams, type ParamCount } from "./models/adapters/count.ts";
export {
  LLAMA2_7B,
  LLAMA3_8B,
  LLAMA_SHAPES,
  type LlamaShape,
  TINYLLAMA_1B,
} from "./models/llama_shapes.ts";

// LLaMA: open a checkpoint, put it on the GPU, attach adapters, train, generate.
export { type OpenedModel, openModel } from "./models/llama/open.ts";
export type { LlamaConfig } from "./models/llama/config.ts";
export { CpuLlama } from "./models/llama/cpu/model.ts";
export { GpuLlama } from "./models/llama/gpu/model.ts";
export { adaptersForModel } from "./models/llama/attach.ts";
export { type Example, Trainer } from "./models/llama/train.ts";
export {
  generate,
  generateOnGpu,
  type Generation,
  type GpuGenerateOptions,
  searchManyOnGpu,
  searchOnGpu,
} from "./models/llama/generate.ts";
export type { TextTokenizer } from "./models/tokenizer/tokenizer.ts";

// Tasks and evaluations.
export { loadCommonsense } from "./tasks/commonsense/data.ts";
export { loadMmlu, type MmluQuestion } from "./tasks/mmlu/data.ts";
export { evaluateCommonsense } from "./evals/commonsense.ts";
export { evaluateMmlu, scoreMmlu } from "./evals/mmlu.ts";
export { wilsonInterval } from "./evals/stats.ts";
export { runCommonsense, runMmlu } from "./grid/pipeline.ts";
