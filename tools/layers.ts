/**
 * The import rule, checked: every module imports only from its own layer or the layers below.
 *
 *   runtime → kernels → models → tasks → evals → grid → reports → tools
 *
 * (`deps/` wraps the npm dependencies and sits below everything; `testing/` — the checkout's
 * default data locations — may be imported by tests (`*_test.ts`), tools, benches and examples,
 * never by a library module; `bench/` and `deploy/` sit beside the tools, `examples/` on top.) Library modules also name
 * npm packages only through `deps/`, so they load by URL without an import map. Prints each
 * offending import as `file: imports target (layer a → layer b)` and exits 1 when there is one.
 * Part of `deno task check`.
 *
 *   deno run --allow-read tools/layers.ts [--help]
 */

/** Layers from the bottom; a path belongs to the first prefix it starts with. */
export const LAYERS: { name: string; prefixes: string[] }[] = [
  { name: "deps", prefixes: ["deps/"] },
  { name: "runtime", prefixes: ["kernels/runtime/"] },
  { name: "kernels", prefixes: ["kernels/"] },
  { name: "models", prefixes: ["models/"] },
  { name: "tasks", prefixes: ["tasks/"] },
  { name: "evals", prefixes: ["evals/"] },
  { name: "grid", prefixes: ["grid/"] },
  { name: "reports", prefixes: ["reports/"] },
  { name: "api", prefixes: ["mod.ts"] },
  { name: "tools", prefixes: ["tools/", "bench/", "testing/", "deploy/"] },
  { name: "examples", prefixes: ["examples/"] },
];

/** The layer index of a repository-relative path (-1: outside every layer). */
export function layerOf(path: string): number {
  return LAYERS.findIndex((l) => l.prefixes.some((p) => path === p || path.startsWith(p)));
}

/** Relative import specifiers of a TypeScript source (static imports and re-exports). */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']/g;
  for (const m of source.matchAll(re)) out.push(m[1]);
  for (const m of source.matchAll(/(?:^|\n)\s*import\s+["']([^"']+)["']/g)) out.push(m[1]);
  for (const m of source.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]);
  return out;
}

/** An upward import. */
export interface Violation {
  /** Importing file (relative to the root). */
  file: string;
  /** Imported file (relative to the root). */
  target: string;
  /** Their layers' names. */
  from: string;
  /** The imported layer. */
  to: string;
}

/** Every upward import among the files (relative path → source). */
export function violations(files: Map<string, string>): Violation[] {
  const found: Violation[] = [];
  for (const [file, source] of files) {
    const from = layerOf(file);
    if (from < 0) continue;
    for (const spec of importsOf(source)) {
      if (!spec.startsWith(".")) {
        // Loadable by URL: library modules name packages only through deps/ (full npm:
        // specifiers there); a bare specifier needs the importer's import map.
        const library = from < layerOf("mod.ts") && !file.endsWith("_test.ts");
        const allowed = spec.startsWith("node:") ||
          (spec.startsWith("npm:") && file.startsWith("deps/"));
        if (library && !allowed) {
          found.push({
            file,
            target: spec,
            from: LAYERS[from].name,
            to: "a package outside deps/",
          });
        }
        continue;
      }
      const target = new URL(spec, `file:///${file}`).pathname.slice(1);
      const to = layerOf(target);
      // Tests may use the checkout's fixtures wherever they live.
      if (target.startsWith("testing/") && file.endsWith("_test.ts")) continue;
      if (to > from) {
        found.push({ file, target, from: LAYERS[from].name, to: LAYERS[to].name });
      }
    }
  }
  return found;
}

async function walk(root: string, dir: string, out: Map<string, string>): Promise<void> {
  for await (const e of Deno.readDir(`${root}/${dir}`)) {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory) {
      if (e.name.startsWith(".") || e.name === "node_modules" || rel === "reports/out") continue;
      await walk(root, rel, out);
    } else if (e.isFile && e.name.endsWith(".ts")) {
      out.set(rel, await Deno.readTextFile(`${root}/${rel}`));
    }
  }
}

if (import.meta.main) {
  if (Deno.args.includes("--help")) {
    console.log(
      "usage: deno run --allow-read tools/layers.ts\n\nChecks that no module imports from a " +
        "layer above its own:\n  " + LAYERS.map((l) => l.name).join(" → ") +
        "\nExit 1 and one line per upward import when there is one.",
    );
    Deno.exit(0);
  }
  const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
  const files = new Map<string, string>();
  await walk(root, "", files);
  const bad = violations(files);
  for (const v of bad) console.error(`${v.file}: imports ${v.target} (${v.from} → ${v.to})`);
  if (bad.length) {
    console.error(
      `${bad.length} upward imports (layers: ${LAYERS.map((l) => l.name).join(" → ")})`,
    );
    Deno.exit(1);
  }
  console.log(`layers: ${files.size} modules, no upward import`);
}
