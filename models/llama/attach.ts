/** Build one adapter per target module of every layer, PEFT's `target_modules` style. */
import type { Adapter } from "../adapters/adapter.ts";
import { type AdapterConfig, createAdapter } from "../adapters/registry.ts";
import type { Llama2cCheckpoint } from "../llama2c.ts";
import { parseTargetModule, TARGET_MODULES } from "../llama_shapes.ts";
import { linearDims, LLAMA2C_WEIGHT, type LlamaConfig } from "./config.ts";
import { adapterKey } from "./cpu/model.ts";

/**
 * Adapters keyed `${layer}.${module}` for `targets` (default all seven), seeded per module from
 * `seed`. `weights` is needed by DoRA (its magnitude starts at ‖W‖).
 */
export function adaptersForModel(
  config: LlamaConfig,
  adapter: unknown,
  seed: number,
  options: { targets?: readonly string[]; weights?: Llama2cCheckpoint } = {},
): Map<string, Adapter<AdapterConfig>> {
  const targets = (options.targets ?? TARGET_MODULES).map(parseTargetModule);
  const out = new Map<string, Adapter<AdapterConfig>>();
  for (let l = 0; l < config.layers; l++) {
    for (const m of targets) {
      const [dIn, dOut] = linearDims(config, m);
      const w = options.weights?.layers[l][LLAMA2C_WEIGHT[m]];
      out.set(
        adapterKey(l, m),
        createAdapter(adapter, dIn, dOut, seed * 1000 + 10 * l + TARGET_MODULES.indexOf(m), w),
      );
    }
  }
  return out;
}
