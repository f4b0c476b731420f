/**
 * Save and load adapters as safetensors. One file holds the adapters of many layers (tensor names
 * `<layer>.<param>`, e.g. `layers.0.attention.wq.A.0`); `__metadata__` carries the format name,
 * its version and, per layer, the adapter config and the layer's dIn/dOut as JSON. Loading checks
 * all of it (version, config, shapes, the exact set of tensors) before returning anything.
 */
import { z } from "../../deps/zod.ts";
import { encodeSafetensors, parseSafetensors } from "../safetensors.ts";
import type { Adapter } from "./adapter.ts";
import {
  type AdapterConfig,
  adapterFromParams,
  createAdapter,
  parseAdapterConfig,
} from "./registry.ts";

/** `__metadata__.format` of adapter files. */
export const ADAPTER_FILE_FORMAT = "moka-adapters";
/** Bumped whenever names, shapes or semantics of saved tensors change. */
export const ADAPTER_FILE_VERSION = "1";

const LayerMetaSchema = z.record(
  z.string(),
  z.object({
    config: z.unknown(),
    dIn: z.number().int().positive(),
    dOut: z.number().int().positive(),
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

/** Parse adapter bytes; `source` names the file in every error. */
export function decodeAdapters(bytes: Uint8Array, source = "adapter file"): AdapterSet {
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
  let meta: z.output<typeof LayerMetaSchema>;
  try {
    meta = LayerMetaSchema.parse(JSON.parse(layers ?? "null"));
  } catch (e) {
    throw new Error(`${source}: __metadata__.layers is invalid (${(e as Error).message})`);
  }
  const out: AdapterSet = {};
  const used = new Set<string>();
  for (const [layer, { config, dIn, dOut }] of Object.entries(meta)) {
    const c = parseAdapterConfig(config, `${source}: layer ${layer} config`);
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
      params[s.name] = file.tensor(name);
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
    // A throwaway instance only to ask for names and shapes (DoRA's init needs some weight).
    const weight = c.kind === "dora" ? new Float32Array(dIn * dOut).fill(1) : undefined;
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

/** Read adapters from `path`, fully validated. */
export async function loadAdapters(path: string): Promise<AdapterSet> {
  return decodeAdapters(await Deno.readFile(path), path);
}
