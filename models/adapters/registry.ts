/**
 * One entry point for every adapter: a zod discriminated union of the configs, and a factory.
 * Parameter counts come from the config alone (no tensors), so whole-model counts are instant.
 */
import { z } from "../../deps/zod.ts";
import { type IssueLike, issueText, type Same, type Schema } from "../schema.ts";
import type { Adapter, AdapterStart, BaseRowNorms, Params } from "./adapter.ts";
import { type DoraConfig, DoraConfigSchemaObject, doraTrainableParams } from "./dora/config.ts";
import { DoraAdapter } from "./dora/layer.ts";
import { type KronaConfig, KronaConfigSchemaObject, kronaTrainableParams } from "./krona/config.ts";
import { KronaAdapter } from "./krona/layer.ts";
import { type LokrConfig, LokrConfigSchemaObject, lokrTrainableParams } from "./lokr/config.ts";
import { LokrAdapter } from "./lokr/layer.ts";
import { type LoraConfig, LoraConfigSchemaObject, loraTrainableParams } from "./lora/config.ts";
import { LoraAdapter } from "./lora/layer.ts";
import { type MokaConfig, MokaConfigSchemaObject, mokaTrainableParams } from "./moka/config.ts";
import { MokaAdapter } from "./moka/layer.ts";

const AdapterConfigZod = z.discriminatedUnion("kind", [
  MokaConfigSchemaObject,
  KronaConfigSchemaObject,
  LokrConfigSchemaObject,
  LoraConfigSchemaObject,
  DoraConfigSchemaObject,
]);

/** Any adapter config, tagged by `kind`. */
export const AdapterConfigSchema: Schema<AdapterConfig> = AdapterConfigZod;

/** A validated adapter config. */
export type AdapterConfig = MokaConfig | KronaConfig | LokrConfig | LoraConfig | DoraConfig;

// The union is written out for the documentation; checked both ways against the schema's output.
const _unionMatchesSchema: Same<AdapterConfig, z.output<typeof AdapterConfigZod>> = true;

/** Adapter kinds. */
export type AdapterKind = AdapterConfig["kind"];

/**
 * The config of an adapter on one module of a model: `spec` may carry `modules`, overrides by
 * module name (`{ kind: "moka", components: [...], modules: { up: { components: [...] } } }`),
 * which replace the shared fields on that module — budgets that no single shape list reaches on
 * every module. Without `modules` the spec itself.
 */
export function configForModule(spec: unknown, module: string): unknown {
  if (typeof spec !== "object" || spec === null || !("modules" in spec)) return spec;
  const { modules, ...shared } = spec as { modules?: Record<string, unknown> };
  const override = modules?.[module];
  return override && typeof override === "object" ? { ...shared, ...override } : shared;
}

const MODULE_NAMES = ["q", "k", "v", "o", "gate", "up", "down"];

/**
 * The issues of an adapter spec that may carry per-module overrides (see {@link configForModule}),
 * each with its path from the spec's root (`modules.up.r`); empty when the spec is valid.
 */
export function adapterSpecIssues(value: unknown): IssueLike[] {
  const issues: IssueLike[] = [];
  if (value && typeof value === "object" && "modules" in value) {
    const modules = (value as { modules: unknown }).modules;
    if (typeof modules !== "object" || modules === null || Array.isArray(modules)) {
      return [{ path: ["modules"], message: "must map module names to overrides" }];
    }
    for (const m of Object.keys(modules)) {
      if (!MODULE_NAMES.includes(m)) {
        issues.push({
          path: ["modules", m],
          message: `unknown module (${MODULE_NAMES.join(", ")})`,
        });
        continue;
      }
      const r = AdapterConfigSchema.safeParse(configForModule(value, m));
      if (!r.success) {
        for (const i of r.error.issues) issues.push({ ...i, path: ["modules", m, ...i.path] });
      }
    }
  }
  const r = AdapterConfigSchema.safeParse(configForModule(value, ""));
  if (!r.success) issues.push(...r.error.issues);
  return issues;
}

/**
 * Parse an adapter spec that may carry per-module overrides (see {@link configForModule}): the
 * shared config and each module's are validated; returns the shared one. The error is one line,
 * `source: field a.b: what` for each bad field.
 */
export function parseAdapterSpec(value: unknown, source = "adapter config"): AdapterConfig {
  const issues = adapterSpecIssues(value);
  if (issues.length) throw new Error(`${source}: ${issueText(issues)}`);
  return parseAdapterConfig(configForModule(value, ""), source);
}

/** Parse an adapter config; the error (one line) names `source` and each bad field's path. */
export function parseAdapterConfig(value: unknown, source = "adapter config"): AdapterConfig {
  const r = AdapterConfigSchema.safeParse(value);
  if (!r.success) throw new Error(`${source}: ${issueText(r.error.issues)}`);
  return r.data;
}

/**
 * A fresh adapter for a dIn → dOut layer. `weight` (the frozen W, f32 [dOut, dIn], or just its
 * row norms) is needed by DoRA's magnitude init only.
 */
export function createAdapter(
  config: unknown,
  dIn: number,
  dOut: number,
  seed: number,
  weight?: Float32Array | BaseRowNorms,
): Adapter<AdapterConfig> {
  const c = parseAdapterConfig(config);
  if (c.kind === "dora" && !weight) {
    throw new Error("createAdapter: DoRA needs the base weight for its magnitude");
  }
  return construct(c, dIn, dOut, { seed, weight });
}

/** An adapter of `config` with the given parameters (names and sizes checked). */
export function adapterFromParams(
  config: AdapterConfig,
  dIn: number,
  dOut: number,
  params: Params,
  source?: string,
): Adapter<AdapterConfig> {
  return construct(config, dIn, dOut, { params, source });
}

function construct(
  c: AdapterConfig,
  dIn: number,
  dOut: number,
  start: AdapterStart,
): Adapter<AdapterConfig> {
  switch (c.kind) {
    case "moka":
      return new MokaAdapter(c, dIn, dOut, start);
    case "krona":
      return new KronaAdapter(c, dIn, dOut, start);
    case "lokr":
      return new LokrAdapter(c, dIn, dOut, start);
    case "lora":
      return new LoraAdapter(c, dIn, dOut, start);
    case "dora":
      return new DoraAdapter(c, dIn, dOut, start);
  }
}

/** Trainable parameters of `config` on one dIn → dOut layer, without building tensors. */
export function trainableParams(config: AdapterConfig, dIn: number, dOut: number): number {
  switch (config.kind) {
    case "moka":
      return mokaTrainableParams(config, dIn, dOut);
    case "krona":
      return kronaTrainableParams(config, dIn, dOut);
    case "lokr":
      return lokrTrainableParams(config, dIn, dOut);
    case "lora":
      return loraTrainableParams(config, dIn, dOut);
    case "dora":
      return doraTrainableParams(config, dIn, dOut);
  }
}
