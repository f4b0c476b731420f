/**
 * The command-line conventions every tool follows: `--help` prints usage, options, defaults and
 * examples and exits 0; an unknown option or a bad value prints one line and the usage hint on
 * stderr and exits 2, with no stack trace. Arguments are checked before any expensive work.
 */
import { parseArgs } from "node:util";

/** One option of a command. */
export interface OptionSpec {
  /** `string` options take a value, `boolean` ones are flags. */
  type: "string" | "boolean";
  /** What it does (one line). */
  description: string;
  /** Default value shown in the help and used when absent. */
  default?: string | boolean;
  /** The value's placeholder in the help (`N`, `DIR`, ...). */
  value?: string;
  /** May be given several times (values collected in order). */
  multiple?: boolean;
}

/** A command's interface. */
export interface CommandSpec {
  /** How it is invoked, e.g. `deno task scale`. */
  name: string;
  /** What it does (one or two sentences). */
  summary: string;
  /** Options by long name (without `--`). */
  options: Record<string, OptionSpec>;
  /** Positional arguments, as shown in the usage line (omit: none allowed). */
  positionals?: string;
  /** Example invocations. */
  examples?: string[];
  /** More text after the options (environment variables, output). */
  notes?: string;
}

/** Thrown for bad arguments; `runCli` turns it into one line on stderr and exit code 2. */
export class UsageError extends Error {
  /** An error whose message is shown to the user as is. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The help text of a command. */
export function helpText(spec: CommandSpec): string {
  const lines = [`${spec.name} — ${spec.summary}`, ""];
  lines.push(`Usage: ${spec.name} [options]${spec.positionals ? ` ${spec.positionals}` : ""}`);
  lines.push("", "Options:");
  const entries = Object.entries(spec.options).map(([name, o]) => {
    const left = `  --${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${o.default})` : "";
    return [left, `${o.description}${def}${o.multiple ? " (repeatable)" : ""}`];
  });
  entries.push(["  --help", "Show this help and exit."]);
  const width = Math.max(...entries.map(([l]) => l.length)) + 2;
  for (const [l, r] of entries) lines.push(l.padEnd(width) + r);
  if (spec.notes) lines.push("", spec.notes.trimEnd());
  if (spec.examples?.length) {
    lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  }
  return lines.join("\n");
}

/** Parsed arguments: option values by name, and positionals. */
export interface ParsedCli {
  /** Values by option name (defaults filled in). */
  values: Record<string, string | boolean | string[] | undefined>;
  /** Positional arguments in order. */
  positionals: string[];
}

/**
 * Parse `args` against `spec`. Returns null after printing the help for `--help`; throws
 * {@link UsageError} for unknown options, missing values or stray positionals.
 */
export function parseCli(spec: CommandSpec, args: string[]): ParsedCli | null {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(helpText(spec));
    return null;
  }
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = o.multiple ? { type: o.type, multiple: true } : { type: o.type };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: spec.positionals !== undefined });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify.*$/s, ""));
  }
  const values = { ...parsed.values } as ParsedCli["values"];
  for (const [name, o] of Object.entries(spec.options)) {
    if (values[name] === undefined && o.default !== undefined) values[name] = o.default;
  }
  return { values, positionals: parsed.positionals };
}

/** An integer option value in [min, max]; `undefined` stays undefined. */
export function intOption(
  name: string,
  value: unknown,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (
    typeof value !== "string" || value.trim() === "" || !Number.isInteger(n) || n < min || n > max
  ) {
    throw new UsageError(`--${name}=${value}: expected an integer in [${min}, ${max}]`);
  }
  return n;
}

/** A number option value in [min, max]. */
export function numberOption(
  name: string,
  value: unknown,
  min = -Infinity,
  max = Infinity,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (
    typeof value !== "string" || value.trim() === "" || !Number.isFinite(n) || n < min || n > max
  ) {
    throw new UsageError(`--${name}=${value}: expected a number in [${min}, ${max}]`);
  }
  return n;
}

/** One of `choices`, or a {@link UsageError} naming them. */
export function choiceOption<T extends string>(
  name: string,
  value: unknown,
  choices: readonly T[],
): T {
  if (typeof value === "string" && (choices as readonly string[]).includes(value)) {
    return value as T;
  }
  throw new UsageError(`--${name}=${value}: expected one of ${choices.join(", ")}`);
}

/**
 * Run a tool's `main` with the conventions above: a {@link UsageError} prints one line and the
 * help hint and exits 2; any other error prints its message (no stack unless MOKA_DEBUG is set)
 * and exits 1.
 */
export async function runCli(
  spec: CommandSpec,
  main: (cli: ParsedCli) => Promise<number | void>,
): Promise<never> {
  let code = 0;
  try {
    const cli = parseCli(spec, Deno.args);
    if (cli) code = (await main(cli)) ?? 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${spec.name}: ${e.message}\nRun '${spec.name} --help' for usage.`);
      code = 2;
    } else {
      const debug = (() => {
        try {
          return Deno.env.get("MOKA_DEBUG") !== undefined;
        } catch {
          return false;
        }
      })();
      console.error(
        `${spec.name}: error: ${debug ? (e as Error).stack : (e as Error).message ?? String(e)}`,
      );
      code = 1;
    }
  }
  Deno.exit(code);
}

/**
 * `path` checked before any expensive work: it must exist, and be a readable folder (`"dir"`) or
 * a file (`"file"`) when `kind` says so. Otherwise a {@link UsageError} names `--name` and the path.
 */
export async function pathOption(
  name: string,
  path: string,
  kind: "file" | "dir" | "any" = "any",
): Promise<string> {
  const fail = (why: string) => new UsageError(`--${name} ${path}: ${why}`);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw fail(e instanceof Deno.errors.NotFound ? "not found" : (e as Error).message);
  }
  if (kind === "file" && !info.isFile) throw fail("not a file");
  if (kind === "dir") {
    if (!info.isDirectory) throw fail("not a folder");
    try {
      // Listing one entry proves the folder can be read (stat alone does not).
      for await (const _ of Deno.readDir(path)) break;
    } catch (e) {
      throw fail(`not readable (${(e as Error).message})`);
    }
  }
  return path;
}
