/**
 * Save and load adapters as safetensors. One file holds the adapters of many layers (tensor names
 * `<layer>.<param>`, e.g. `layers.0.attention.wq.A.0`); `__metadata__` carries the format name,
 * its version and, per layer, the adapter config and the layer's dIn/dOut as JSON. Loading checks
 * all of it (version, config, shapes, the exact set of tensors) before returning anything.
 */
import { z } from "../../deps/zod.ts";
import { issueText } from "../schema.ts";
import { assertFinite, encodeSafetensors, missingSays, parseSafetensors } from "../safetensors.ts";
import type { Adapter } from "./adapter.ts";
import {
  type AdapterConfig,
  adapterFromParams,
  createAdapter,
  parseAdapterConfig,
  trainableParams,
} from "./registry.ts";

/** `__metadata__.format` of adapter files. */
export const ADAPTER_FILE_FORMAT = "moka-adapters";
/** Bumped whenever names, shapes or semantics of saved tensors change. */
export const ADAPTER_FILE_VERSION = "1";

const LayerMetaSchema = z.record(
  z.string(),
  z.object({
    config: z.unknown(),
    // No linear layer of a supported model is wider than 2^20 (hf.ts bounds its config alike).
    dIn: z.number().int().positive().max(2 ** 20),
    dOut: z.number().int().positive().max(2 ** 20),
  }).strict(),
);

/** Adapters by layer name. */
export type AdapterSet = Record<string, Adapter<AdapterConfig>>;

/** Serialise adapters to safetensors bytes (params in spec order, layers in key order). */
export function encodeAdapters(
  adapters: AdapterSet,
  extra: Record<string, string> = {},
): Uint8Array {
  const tensors = [];
  const layers: Record<string, unknown> = {};
  for (const [layer, a] of Object.entries(adapters)) {
    if (layer.includes("\u0000") || layer === "") throw new Error(`bad layer name "${layer}"`);
    layers[layer] = { config: a.config, dIn: a.dIn, dOut: a.dOut };
    for (const s of a.specs()) {
      tensors.push({ name: `${layer}.${s.name}`, shape: s.shape, data: a.params[s.name] });
    }
  }
  return encodeSafetensors(tensors, {
    ...extra,
    format: ADAPTER_FILE_FORMAT,
    version: ADAPTER_FILE_VERSION,
    layers: JSON.stringify(layers),
  });
}

/** What the loader checks adapter files against. */
export interface AdapterLoadOptions {
  /**
   * The [dIn, dOut] of the module a layer name adapts in the model the adapters are for (throws
   * for a name the model lacks): every layer's declared dims must equal them.
   */
  dims?: (layer: string) => [number, number];
}

/**
 * Parse adapter bytes; `source` names the file in every error. Declared sizes are checked
 * against the model (`options.dims`) and the file's own size, and every value must be finite,
 * before anything is allocated or returned.
 */
export function decodeAdapters(
  bytes: Uint8Array,
  source = "adapter file",
  options: AdapterLoadOptions = {},
): AdapterSet {
  const file = parseSafetensors(bytes, source);
  const { format, version, layers } = file.metadata;
  if (format !== ADAPTER_FILE_FORMAT) {
    throw new Error(
      `${source}: not a moka adapter file (__metadata__.format = ${JSON.stringify(format)})`,
    );
  }
  if (version !== ADAPTER_FILE_VERSION) {
    throw new Error(
      `${source}: adapter file version ${JSON.stringify(version)}, this moka reads version ` +
        `${ADAPTER_FILE_VERSION}`,
    );
  }
  let layersJson: unknown;
  try {
    layersJson = JSON.parse(layers ?? "null");
  } catch (e) {
    throw new Error(`${source}: __metadata__.layers: not JSON (${(e as Error).message})`);
  }
  const parsedMeta = LayerMetaSchema.safeParse(layersJson);
  if (!parsedMeta.success) {
    throw new Error(`${source}: __metadata__.layers: ${issueText(parsedMeta.error.issues)}`);
  }
  const meta: z.output<typeof LayerMetaSchema> = parsedMeta.data;
  // Values the file holds: an upper bound on what its metadata may declare.
  let stored = 0;
  for (const e of file.entries.values()) stored += e.shape.reduce((a, b) => a * b, 1);
  const configs = new Map<string, AdapterConfig>();
  let total = 0;
  for (const [layer, { config, dIn, dOut }] of Object.entries(meta)) {
    const c = parseAdapterConfig(config, `${source}: layer ${layer} config`);
    if (options.dims) {
      let want: [number, number];
      try {
        want = options.dims(layer);
      } catch (e) {
        throw new Error(`${source}: layer ${layer}: ${(e as Error).message}`);
      }
      if (want[0] !== dIn || want[1] !== dOut) {
        throw new Error(
          `${source}: layer ${layer} declares ${dIn} → ${dOut}, the model's module is ` +
            `${want[0]} → ${want[1]}`,
        );
      }
    }
    let declared: number;
    try {
      declared = trainableParams(c, dIn, dOut);
    } catch (e) {
      throw new Error(`${source}: layer ${layer}: ${(e as Error).message}`);
    }
    total += declared;
    if (total > stored) {
      throw new Error(
        `${source}: layer ${layer} declares ${c.kind} on ${dIn} → ${dOut} with ${declared} ` +
          `parameters (${total} so far), the file holds ${stored} values in all`,
      );
    }
    configs.set(layer, c);
  }
  const out: AdapterSet = {};
  const used = new Set<string>();
  for (const [layer, { dIn, dOut }] of Object.entries(meta)) {
    const c = configs.get(layer)!;
    // Shapes come from the config and dims; every tensor must match them exactly.
    const probe = adapterShapes(c, dIn, dOut, `${source}: layer ${layer}`);
    const params: Record<string, Float32Array> = {};
    for (const s of probe) {
      const name = `${layer}.${s.name}`;
      const entry = file.entries.get(name);
      if (!entry) throw new Error(`${source}: missing tensor "${name}"`);
      if (entry.shape.join(",") !== s.shape.join(",")) {
        throw new Error(
          `${source}: tensor "${name}" has shape [${entry.shape}], the config implies [${s.shape}]`,
        );
      }
      params[s.name] = assertFinite(file.tensor(name), source, name);
      used.add(name);
    }
    out[layer] = adapterFromParams(c, dIn, dOut, params, `${source}: layer ${layer}`);
  }
  const stray = [...file.entries.keys()].filter((k) => !used.has(k));
  if (stray.length) {
    throw new Error(`${source}: tensors not described by the metadata: ${stray.join(", ")}`);
  }
  return out;
}

function adapterShapes(c: AdapterConfig, dIn: number, dOut: number, what: string) {
  try {
    // A throwaway instance only to ask for names and shapes (DoRA's init needs row norms; not a
    // whole weight, which would be dIn × dOut floats).
    const weight = c.kind === "dora" ? { rowNorms: new Float32Array(dOut).fill(1) } : undefined;
    return createAdapter(c, dIn, dOut, 0, weight).specs();
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

/** Write adapters to `path` (via a temp file + rename, so a crash never leaves half a file). */
export async function saveAdapters(
  path: string,
  adapters: AdapterSet,
  extra?: Record<string, string>,
) {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeFile(tmp, encodeAdapters(adapters, extra));
  await Deno.rename(tmp, path);
}

/** Read adapters from `path`, fully validated (against the model when `options.dims` is given). */
export async function loadAdapters(
  path: string,
  options: AdapterLoadOptions = {},
): Promise<AdapterSet> {
  const bytes = await missingSays(Deno.readFile(path), path, "named as the adapter file");
  return decodeAdapters(bytes, path, options);
}
