/** Build one adapter per target module of every layer, PEFT's `target_modules` style. */
import type { Adapter, BaseRowNorms } from "../adapters/adapter.ts";
import {
  type AdapterConfig,
  configForModule,
  createAdapter,
  parseAdapterSpec,
} from "../adapters/registry.ts";
import type { Llama2cCheckpoint } from "../llama2c.ts";
import { parseTargetModule, TARGET_MODULES, type TargetModule } from "../llama_shapes.ts";
import { linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "./config.ts";
import { adapterKey } from "./cpu/model.ts";

/** Where DoRA's initial magnitude ‖W_r‖ comes from: host weights, or a function of the module. */
export type BaseWeights =
  | Llama2cCheckpoint
  | ((key: string) => Promise<Float32Array | BaseRowNorms> | Float32Array | BaseRowNorms);

/** The modules `targets` names (default all seven), parsed. */
export function targetModules(targets?: readonly string[]): TargetModule[] {
  return (targets ?? TARGET_MODULES).map(parseTargetModule);
}

/**
 * Adapters keyed `${layer}.${module}` for `targets` (default all seven), seeded per module from
 * `seed`; `adapter` may carry per-module overrides (`configForModule`). `weights` is needed by
 * DoRA (its magnitude starts at ‖W‖): host weights, or e.g.
 * `(key) => model.baseRowNorms(key).then((rowNorms) => ({ rowNorms }))` for a model on the GPU.
 */
export async function adaptersForModel(
  config: LlamaConfig,
  adapter: unknown,
  seed: number,
  options: { targets?: readonly string[]; weights?: BaseWeights } = {},
): Promise<Map<string, Adapter<AdapterConfig>>> {
  const targets = targetModules(options.targets);
  const needsWeight = parseAdapterSpec(adapter).kind === "dora";
  const out = new Map<string, Adapter<AdapterConfig>>();
  for (let l = 0; l < config.layers; l++) {
    for (const m of targets) {
      const [dIn, dOut] = linearDims(config, m);
      const key = adapterKey(l, m);
      const w = !needsWeight || options.weights === undefined
        ? undefined
        : typeof options.weights === "function"
        ? await options.weights(key)
        : options.weights.layers[l][LLAMA2C_WEIGHT[m]];
      const moduleSeed = seed * 1000 + 10 * l + TARGET_MODULES.indexOf(m);
      out.set(key, createAdapter(configForModule(adapter, m), dIn, dOut, moduleSeed, w));
    }
  }
  return out;
}
