/**
 * Where shared data lives. Files are read in place, never copied: `MOKA_MODELS_DIR` and
 * `MOKA_DATA_DIR` override the defaults `../shared/models` and `../shared/data` (relative to the
 * repository root, found from this file's location so any working directory works).
 */

const repoRoot = new URL("../", import.meta.url);

/** The models folder (env `MOKA_MODELS_DIR`, default `<repo>/../shared/models`). */
export function modelsDir(): string {
  return Deno.env.get("MOKA_MODELS_DIR") ?? new URL("../shared/models", repoRoot).pathname;
}

/** The data folder (env `MOKA_DATA_DIR`, default `<repo>/../shared/data`). */
export function dataDir(): string {
  return Deno.env.get("MOKA_DATA_DIR") ?? new URL("../shared/data", repoRoot).pathname;
}

/** A file of the embedded default model, stories260K. */
export function defaultModelPath(file: string): string {
  return `${modelsDir()}/stories260K/${file}`;
}
