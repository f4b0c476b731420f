/**
 * Exact trainable-parameter counts for whole models: Σ over layers and target modules of the
 * adapter's count on that module's [dIn, dOut]. This is the "trainable parameters" column of the
 * paper's tables (e.g. LoRA r=32 on q,k,v,up,down of LLaMA-3-8B = 56,623,104).
 */
import {
  linearDims,
  type LlamaShape,
  parseTargetModule,
  shapeWidths,
  type TargetModule,
} from "../llama_shapes.ts";
import {
  configForModule,
  parseAdapterConfig,
  parseAdapterSpec,
  trainableParams,
} from "./registry.ts";

/** Count per module kind and in total. */
export interface ParamCount {
  /** Σ over all layers and modules. */
  total: number;
  /** Per layer, by module. */
  perModule: Partial<Record<TargetModule, number>>;
  /** Layers of the model. */
  layers: number;
}

/**
 * Trainable parameters of `adapter` on `targets` of every layer of `model` (`adapter` may carry
 * per-module overrides, `configForModule`).
 */
export function countTrainableParams(
  model: LlamaShape,
  targets: readonly string[],
  adapter: unknown,
): ParamCount {
  parseAdapterSpec(adapter);
  const perModule: Partial<Record<TargetModule, number>> = {};
  for (const t of targets) {
    const m = parseTargetModule(t);
    const config = parseAdapterConfig(configForModule(adapter, m));
    const [dIn, dOut] = linearDims(shapeWidths(model), m);
    try {
      perModule[m] = trainableParams(config, dIn, dOut);
    } catch (e) {
      throw new Error(`${model.name} ${m} (${dOut}×${dIn}): ${(e as Error).message}`);
    }
  }
  const perLayer = Object.values(perModule).reduce((a, b) => a + b, 0);
  return { total: perLayer * model.layers, perModule, layers: model.layers };
}
