/**
 * PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors` as Hugging Face PEFT
 * saves and loads them, for LoRA, DoRA (LoRA with `use_dora`) and LoKr on a LLaMA model.
 *
 * Keys are PEFT's: `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`,
 * `….lora_B.weight`, DoRA's `….lora_magnitude_vector` (older PEFT wrote `….weight` after it; both
 * are read), LoKr's `….lokr_w1`, `lokr_w1_a`, `lokr_w1_b`, `lokr_w2`, `lokr_w2_a`, `lokr_w2_b`.
 * Ranks and α that differ between modules go to `rank_pattern` / `alpha_pattern` under the
 * module's full name. MoKA, KronA and MoKA_s have no PEFT type: they stay in the kit's own
 * `moka-adapters` file (`models/adapters/io.ts`), or are merged into the base
 * (`models/merged.ts`).
 *
 * Row order: PEFT addresses `q_proj`/`k_proj` rows as Hugging Face stores them. Adapters trained on
 * a Hugging Face checkpoint already live in that basis (the kit keeps its rows and rotates in the
 * `half` layout). For a llama2.c checkpoint (interleaved RoPE) LoRA and DoRA on q/k are exported
 * with B's rows and the magnitude permuted, which is exact; LoKr on q/k cannot be (a row
 * permutation of a Kronecker product is not one) and is refused.
 */
import { z } from "../deps/zod.ts";
import type { AdapterSet } from "./adapters/io.ts";
import type { Params } from "./adapters/adapter.ts";
import type { DoraConfig } from "./adapters/dora/config.ts";
import type { LokrConfig } from "./adapters/lokr/config.ts";
import { lokrLayout } from "./adapters/lokr/config.ts";
import type { LoraConfig } from "./adapters/lora/config.ts";
import { type AdapterConfig, adapterFromParams } from "./adapters/registry.ts";
import { permuteRope } from "./hf.ts";
import { headSize, linearDims, type LlamaConfig } from "./llama/config.ts";
import { TARGET_MODULES, type TargetModule } from "./llama_shapes.ts";
import {
  assertFinite,
  decodeToF32,
  encodeSafetensors,
  missingSays,
  parseSafetensors,
  type SafetensorsFile,
} from "./safetensors.ts";

/** PEFT's name of the module an adapter key (`3.q`) sits on: `model.layers.3.self_attn.q_proj`. */
export function peftModuleName(key: string): string {
  const [layer, module] = key.split(".");
  if (!/^\d+$/.test(layer) || !TARGET_MODULES.includes(module as TargetModule)) {
    throw new Error(`adapter key "${key}" is not <layer>.<module> (${TARGET_MODULES})`);
  }
  const block = ["q", "k", "v", "o"].includes(module) ? "self_attn" : "mlp";
  return `model.layers.${layer}.${block}.${module}_proj`;
}

const MODULE_PATTERN = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$/;
const KEY_PREFIX = "base_model.model.";

/** The adapter key of a PEFT module name, or null for modules the kit does not adapt. */
function keyOfModule(name: string): string | null {
  const m = MODULE_PATTERN.exec(name);
  if (!m) return null;
  const attention = ["q", "k", "v", "o"].includes(m[3]);
  if (attention !== (m[2] === "self_attn")) return null;
  return `${m[1]}.${m[3]}`;
}

/** Options of {@link exportPeft}. */
export interface PeftExportOptions {
  /** `base_model_name_or_path` in the config (default null). */
  baseModel?: string | null;
}

/** A PEFT adapter in memory: the config object and the tensors of `adapter_model.safetensors`. */
export interface PeftAdapter {
  /** Contents of `adapter_config.json`. */
  config: Record<string, unknown>;
  /** Tensors with PEFT's key names, f32. */
  tensors: { name: string; shape: number[]; data: Float32Array }[];
}

type PeftKind = "lora" | "dora" | "lokr";
type RowFlip = (data: Float32Array, cols: number) => Float32Array;

/** q/k rows between the kit's order and Hugging Face's (identity for HF checkpoints). */
function rowOrder(c: LlamaConfig, module: string, toHf: boolean): RowFlip | null {
  if ((c.ropeLayout ?? "interleaved") === "half" || (module !== "q" && module !== "k")) {
    return null;
  }
  const heads = module === "q" ? c.heads : c.kvHeads;
  return (data, cols) => permuteRope(data, heads, headSize(c), cols, toHf);
}

/** The most frequent value (ties: the first seen). */
function mostCommon<T>(values: T[]): T {
  const counts = new Map<T, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
}

/**
 * Adapters as a PEFT adapter: all must be one of LoRA, DoRA or LoKr with the same settings apart
 * from rank and α. Throws, naming the adapter, for MoKA/KronA, mixed kinds, or shapes that do not
 * fit `model`.
 */
export function exportPeft(
  adapters: AdapterSet,
  model: LlamaConfig,
  options: PeftExportOptions = {},
): PeftAdapter {
  const entries = Object.entries(adapters).sort(([a], [b]) => compareKeys(a, b));
  if (!entries.length) throw new Error("no adapters to export");
  checkAdaptersFit(adapters, model);
  const kind = entries[0][1].config.kind;
  if (kind !== "lora" && kind !== "dora" && kind !== "lokr") {
    throw new Error(
      `${entries[0][0]}: ${kind} has no PEFT adapter type; keep its moka-adapters file or merge ` +
        `it into the base (export --merge)`,
    );
  }
  // Everything but r and α must agree: PEFT has one config per model.
  const shared = (c: AdapterConfig) => {
    const { r: _r, alpha: _a, ...rest } = c as LoraConfig | LokrConfig;
    return JSON.stringify(rest);
  };
  const first = shared(entries[0][1].config);
  for (const [key, a] of entries) {
    if (a.config.kind !== kind) {
      throw new Error(`${key}: ${a.config.kind} beside ${kind}; a PEFT folder holds one type`);
    }
    if (shared(a.config) !== first) {
      throw new Error(`${key}: settings other than r and alpha differ from ${entries[0][0]}'s`);
    }
  }
  const cfgs = entries.map(([key, a]) => ({
    name: peftModuleName(key),
    c: a.config as LoraConfig | DoraConfig | LokrConfig,
  }));
  const r = mostCommon(cfgs.map(({ c }) => c.r));
  const alpha = mostCommon(cfgs.map(({ c }) => c.alpha));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const { name, c } of cfgs) {
    if (c.r !== r) rankPattern[name] = c.r;
    if (c.alpha !== alpha) alphaPattern[name] = c.alpha;
  }
  // Short names when every layer carries the same modules, else the exact module names.
  const modules = [...new Set(entries.map(([k]) => k.split(".")[1]))];
  const layers = new Set(entries.map(([k]) => k.split(".")[0]));
  const complete = layers.size === model.layers && entries.length === layers.size * modules.length;
  const targetModules = complete
    ? TARGET_MODULES.filter((m) => modules.includes(m)).map((m) => `${m}_proj`)
    : cfgs.map(({ name }) => name);
  const common = {
    task_type: "CAUSAL_LM",
    base_model_name_or_path: options.baseModel ?? null,
    revision: null,
    inference_mode: true,
    r,
    target_modules: targetModules,
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
  };
  let config: Record<string, unknown>;
  if (kind === "lokr") {
    const c = cfgs[0].c as LokrConfig;
    config = {
      peft_type: "LOKR",
      ...common,
      alpha,
      rank_dropout: 0,
      module_dropout: 0,
      use_effective_conv2d: false,
      decompose_both: c.decomposeBoth,
      decompose_factor: c.decomposeFactor,
      init_weights: true,
    };
  } else {
    const c = cfgs[0].c as LoraConfig | DoraConfig;
    config = {
      peft_type: "LORA",
      ...common,
      lora_alpha: alpha,
      lora_dropout: c.dropout,
      use_rslora: c.rslora,
      use_dora: kind === "dora",
      bias: "none",
      fan_in_fan_out: false,
      init_lora_weights: c.init === "gaussian" ? "gaussian" : true,
    };
  }
  const tensors: PeftAdapter["tensors"] = [];
  for (const [key, a] of entries) {
    const prefix = `${KEY_PREFIX}${peftModuleName(key)}`;
    const toHf = rowOrder(model, key.split(".")[1], true);
    const p = a.params;
    if (kind === "lokr") {
      if (toHf) {
        throw new Error(
          `${key}: LoKr on q/k of an interleaved-RoPE (llama2.c) model cannot be expressed in ` +
            `Hugging Face's row order; merge it instead (export --merge)`,
        );
      }
      for (const s of a.specs()) {
        tensors.push({ name: `${prefix}.lokr_${s.name}`, shape: s.shape, data: p[s.name] });
      }
      continue;
    }
    const rank = (a.config as LoraConfig).r;
    tensors.push({ name: `${prefix}.lora_A.weight`, shape: [rank, a.dIn], data: p.A });
    const b = toHf ? toHf(p.B, rank) : p.B;
    tensors.push({ name: `${prefix}.lora_B.weight`, shape: [a.dOut, rank], data: b });
    if (kind === "dora") {
      const m = toHf ? toHf(p.magnitude, 1) : p.magnitude;
      tensors.push({ name: `${prefix}.lora_magnitude_vector`, shape: [a.dOut], data: m });
    }
  }
  return { config, tensors };
}

function compareKeys(a: string, b: string): number {
  const [la, ma] = a.split(".");
  const [lb, mb] = b.split(".");
  return Number(la) - Number(lb) ||
    TARGET_MODULES.indexOf(ma as TargetModule) - TARGET_MODULES.indexOf(mb as TargetModule);
}

/** Every adapter key names a module of `model` and the adapter's dIn/dOut are that module's. */
export function checkAdaptersFit(adapters: AdapterSet, model: LlamaConfig): void {
  const dims = moduleDims(model);
  for (const [key, a] of Object.entries(adapters)) {
    let dIn: number, dOut: number;
    try {
      [dIn, dOut] = dims(key);
    } catch (e) {
      throw new Error(`${key}: ${(e as Error).message}`);
    }
    if (a.dIn !== dIn || a.dOut !== dOut) {
      throw new Error(
        `${key}: adapter is ${a.dIn} → ${a.dOut}, the model's ${
          key.split(".")[1]
        } is ${dIn} → ${dOut}`,
      );
    }
  }
}

/**
 * The [dIn, dOut] of the module an adapter key (`<layer>.<module>`) names in `model`; throws for
 * a key the model lacks. What `loadAdapters` checks a file's declared dims against.
 */
export function moduleDims(model: LlamaConfig): (key: string) => [number, number] {
  return (key) => {
    peftModuleName(key);
    const [layer, module] = key.split(".");
    if (Number(layer) >= model.layers) {
      throw new Error(`the model has ${model.layers} layers`);
    }
    return linearDims(model, module as TargetModule);
  };
}

/** Write `adapter_config.json` and `adapter_model.safetensors` into `dir` (created). */
export async function savePeft(
  dir: string,
  adapters: AdapterSet,
  model: LlamaConfig,
  options: PeftExportOptions = {},
): Promise<void> {
  const peft = exportPeft(adapters, model, options);
  await Deno.mkdir(dir, { recursive: true });
  const weights = `${dir}/adapter_model.safetensors`;
  await Deno.writeFile(`${weights}.tmp`, encodeSafetensors(peft.tensors, { format: "pt" }));
  await Deno.rename(`${weights}.tmp`, weights);
  await Deno.writeTextFile(
    `${dir}/adapter_config.json`,
    JSON.stringify(peft.config, null, 2) + "\n",
  );
}

const Patterns = z.record(z.string(), z.number()).nullish().transform((v) => v ?? {});
const TargetModules = z.union([z.string(), z.array(z.string())]);
const LayersToTransform = z.union([z.number().int(), z.array(z.number().int())]).nullish();

const PeftLoraSchema = z.object({
  peft_type: z.literal("LORA"),
  r: z.number().int().positive(),
  lora_alpha: z.number().finite(),
  lora_dropout: z.number().min(0).lt(1).default(0),
  use_rslora: z.boolean().default(false),
  use_dora: z.boolean().default(false),
  target_modules: TargetModules,
  rank_pattern: Patterns,
  alpha_pattern: Patterns,
  bias: z.literal("none", { message: 'only bias "none" is supported' }).default("none"),
  fan_in_fan_out: z.literal(false, { message: "fan_in_fan_out models are not LLaMA" }).default(
    false,
  ),
  init_lora_weights: z.unknown().optional(),
  layers_to_transform: LayersToTransform,
  modules_to_save: z.array(z.string()).max(0, {
    message: "modules_to_save (full copies of base modules) are not supported",
  }).nullish(),
  lora_bias: z.literal(false, { message: "lora_bias is not supported" }).optional(),
}).loose();

const PeftLokrSchema = z.object({
  peft_type: z.literal("LOKR"),
  r: z.number().int().positive(),
  alpha: z.number().finite(),
  decompose_both: z.boolean().default(false),
  decompose_factor: z.number().int().default(-1),
  target_modules: TargetModules,
  rank_pattern: Patterns,
  alpha_pattern: Patterns,
  layers_to_transform: LayersToTransform,
  modules_to_save: z.array(z.string()).max(0, {
    message: "modules_to_save (full copies of base modules) are not supported",
  }).nullish(),
}).loose();

const PeftConfigSchema = z.discriminatedUnion("peft_type", [PeftLoraSchema, PeftLokrSchema]);

/** PEFT's lookup of a per-module override: the exact name, else a suffix match as a regex. */
function patternValue(patterns: Record<string, number>, module: string): number | undefined {
  if (module in patterns) return patterns[module];
  for (const [key, v] of Object.entries(patterns)) {
    if (new RegExp(`(^|.*\\.)(${key})$`).test(module)) return v;
  }
  return undefined;
}

/** Whether PEFT would adapt `module` under `target_modules`. */
function targeted(target: string | string[], module: string): boolean {
  if (typeof target === "string") return new RegExp(`^(?:${target})$`).test(module);
  return target.some((t) => t === module || module.endsWith(`.${t}`));
}

/**
 * Adapters from a PEFT adapter's config and weights, checked against `model` before any is
 * built: known type and fields, every tensor's module and shape, nothing missing or left over.
 * `source` names the folder in errors.
 */
export function importPeft(
  configJson: unknown,
  weights: SafetensorsFile,
  model: LlamaConfig,
  source = "PEFT adapter",
): AdapterSet {
  const parsed = PeftConfigSchema.safeParse(configJson);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    const field = i.path.join(".") || "peft_type";
    const detail = field === "peft_type" && i.code === "invalid_union"
      ? `peft_type must be LORA or LOKR (MoKA/KronA are not PEFT types)`
      : i.message;
    throw new Error(`${source}/adapter_config.json: field ${field}: ${detail}`);
  }
  const pc = parsed.data;
  // Group tensors by module.
  const byModule = new Map<string, Map<string, string>>(); // module → param suffix → key
  for (const name of weights.entries.keys()) {
    if (!name.startsWith(KEY_PREFIX)) {
      throw new Error(`${source}/adapter_model.safetensors: "${name}" lacks "${KEY_PREFIX}"`);
    }
    const m =
      /^(.*)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?|lokr_w[12](?:_[ab])?)$/
        .exec(name.slice(KEY_PREFIX.length));
    if (!m) {
      throw new Error(
        `${source}/adapter_model.safetensors: "${name}" is not a LoRA/DoRA/LoKr tensor`,
      );
    }
    if (!keyOfModule(m[1])) {
      throw new Error(
        `${source}/adapter_model.safetensors: "${name}" is on ${m[1]}, not a LLaMA linear module`,
      );
    }
    const suffix = m[2].replace(/^lora_magnitude_vector\.weight$/, "lora_magnitude_vector");
    if (!byModule.has(m[1])) byModule.set(m[1], new Map());
    if (byModule.get(m[1])!.has(suffix)) {
      throw new Error(`${source}/adapter_model.safetensors: two tensors for ${m[1]}.${suffix}`);
    }
    byModule.get(m[1])!.set(suffix, name);
  }
  const layerFilter = pc.layers_to_transform == null
    ? null
    : new Set([pc.layers_to_transform].flat());
  const out: AdapterSet = {};
  for (let l = 0; l < model.layers; l++) {
    for (const module of TARGET_MODULES) {
      const key = `${l}.${module}`;
      const name = peftModuleName(key);
      const want = targeted(pc.target_modules, name) && (!layerFilter || layerFilter.has(l));
      const found = byModule.get(name);
      byModule.delete(name);
      if (!want) {
        if (found) {
          throw new Error(
            `${source}: tensors for ${name}, which target_modules / layers_to_transform exclude`,
          );
        }
        continue;
      }
      if (!found) throw new Error(`${source}: no tensors for targeted module ${name}`);
      const r = patternValue(pc.rank_pattern, name) ?? pc.r;
      const alpha = patternValue(pc.alpha_pattern, name) ??
        (pc.peft_type === "LORA" ? pc.lora_alpha : pc.alpha);
      const [dIn, dOut] = linearDims(model, module);
      let config: AdapterConfig;
      const wanted: [string, string, number[]][] = []; // [param, PEFT suffix, shape]
      if (pc.peft_type === "LOKR") {
        config = {
          kind: "lokr",
          r,
          alpha,
          decomposeBoth: pc.decompose_both,
          decomposeFactor: pc.decompose_factor,
        };
        const lay = lokrLayout(config, dIn, dOut);
        if (rowOrder(model, module, false)) {
          throw new Error(
            `${source}: LoKr on ${name} of an interleaved-RoPE (llama2.c) model has no exact ` +
              `equivalent in that row order`,
          );
        }
        if (lay.useW1) wanted.push(["w1", "lokr_w1", [lay.outL, lay.inM]]);
        else {
          wanted.push(["w1_a", "lokr_w1_a", [lay.outL, r]], ["w1_b", "lokr_w1_b", [r, lay.inM]]);
        }
        if (lay.useW2) wanted.push(["w2", "lokr_w2", [lay.outK, lay.inN]]);
        else {
          wanted.push(["w2_a", "lokr_w2_a", [lay.outK, r]], ["w2_b", "lokr_w2_b", [r, lay.inN]]);
        }
      } else {
        const low = {
          r,
          alpha,
          dropout: pc.lora_dropout,
          rslora: pc.use_rslora,
          init: pc.init_lora_weights === "gaussian" ? "gaussian" as const : "kaiming" as const,
        };
        config = pc.use_dora
          ? { kind: "dora", ...low, detachNorm: true }
          : { kind: "lora", ...low };
        wanted.push(["A", "lora_A.weight", [r, dIn]], ["B", "lora_B.weight", [dOut, r]]);
        if (pc.use_dora) wanted.push(["magnitude", "lora_magnitude_vector", [dOut]]);
      }
      const params: Params = {};
      const fromHf = rowOrder(model, module, false);
      for (const [param, suffix, shape] of wanted) {
        const tensorName = found.get(suffix);
        if (!tensorName) throw new Error(`${source}: missing ${KEY_PREFIX}${name}.${suffix}`);
        found.delete(suffix);
        const entry = weights.entries.get(tensorName)!;
        if (entry.shape.join(",") !== shape.join(",")) {
          throw new Error(
            `${source}: ${tensorName} has shape [${entry.shape}], r = ${r} on a ${dIn} → ${dOut} ` +
              `module implies [${shape}]`,
          );
        }
        const stored = weights.raw(tensorName);
        let data = assertFinite(
          decodeToF32(stored.bytes, stored.dtype),
          `${source}/adapter_model.safetensors`,
          tensorName,
        );
        if (fromHf && (param === "B" || param === "magnitude")) {
          data = fromHf(data, param === "B" ? r : 1);
        }
        params[param] = data;
      }
      if (found.size) {
        throw new Error(
          `${source}: ${[...found.values()].join(", ")} not expected for ${config.kind} r = ${r}`,
        );
      }
      out[key] = adapterFromParams(config, dIn, dOut, params, `${source}: ${name}`);
    }
  }
  if (byModule.size) {
    throw new Error(`${source}: tensors for modules the model lacks: ${[...byModule.keys()]}`);
  }
  return out;
}

/** Whether `dir` holds a PEFT adapter (an `adapter_config.json`). */
export async function isPeftFolder(dir: string): Promise<boolean> {
  try {
    return (await Deno.stat(`${dir}/adapter_config.json`)).isFile;
  } catch {
    return false;
  }
}

/** Read a PEFT adapter folder for `model`, fully validated. */
export async function loadPeft(dir: string, model: LlamaConfig): Promise<AdapterSet> {
  const text = await missingSays(
    Deno.readTextFile(`${dir}/adapter_config.json`),
    `${dir}/adapter_config.json`,
    "not a PEFT adapter folder",
  );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${dir}/adapter_config.json: not JSON (${(e as Error).message})`);
  }
  const path = `${dir}/adapter_model.safetensors`;
  const bytes = await missingSays(
    Deno.readFile(path),
    path,
    "beside adapter_config.json",
  );
  return importPeft(json, parseSafetensors(bytes, path), model, dir);
}
