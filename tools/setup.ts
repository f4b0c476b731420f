/**
 * `deno task setup`: make sure the system has what the kit needs before a long job starts — a
 * WebGPU adapter (on a machine without a GPU, Mesa's llvmpipe through Vulkan:
 * `mesa-vulkan-drivers`) and, for the test suite, Chromium (the report page's browser test).
 * Missing packages are installed with apt-get when running as root, otherwise the exact command
 * is printed and the exit code is 1. `deno task test` runs it first; `deno task reproduce` calls
 * {@link ensureSystem} before it starts the GPU.
 */
import { acquireGpu, GpuUnavailableError } from "../kernels/runtime/device.ts";
import { choiceOption, type CommandSpec, runCli } from "./cli.ts";

/** The command-line interface of `deno task setup`. */
export const SPEC: CommandSpec = {
  name: "deno task setup",
  summary: "Check (and on Debian as root, install) the system packages a job needs.",
  options: {
    for: {
      type: "string",
      value: "JOB",
      default: "reproduce",
      description: "reproduce (a WebGPU adapter) or test (also Chromium).",
    },
    check: { type: "boolean", description: "Only check; never install." },
    quiet: { type: "boolean", description: "Print nothing when all is present." },
  },
  examples: ["deno task setup --for test", "deno task setup --check"],
  notes: "Exit codes: 0 ready, 1 something is missing (the command to install it is printed).",
};

const CHROMIUM = ["chromium", "chromium-browser", "google-chrome"];

/** Whether an executable named `name` is on PATH. */
async function onPath(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
    try {
      const info = await Deno.stat(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111)) return true;
    } catch { /* not here */ }
  }
  return false;
}

/** Whether a WebGPU adapter can be had, asked in a fresh process (Deno sets WebGPU up once). */
async function hasGpu(): Promise<{ ok: boolean; detail: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-read", "--allow-write", import.meta.filename!, "--probe"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  return { ok: out.code === 0, detail: text };
}

/** What is missing for `job`: Debian package names and why. */
export async function missingPackages(job: "reproduce" | "test"): Promise<[string, string][]> {
  const missing: [string, string][] = [];
  const gpu = await hasGpu();
  if (!gpu.ok) missing.push(["mesa-vulkan-drivers", `no WebGPU adapter (${gpu.detail})`]);
  if (job === "test" && !(await Promise.all(CHROMIUM.map(onPath))).some(Boolean)) {
    missing.push(["chromium", "no Chromium for the report page's browser test"]);
  }
  return missing;
}

async function run(cmd: string[]): Promise<boolean> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return out.success;
}

/**
 * Make the system ready for `job`: true when it is (after installing what was missing, as root
 * on a system with apt-get, unless `check`); false after printing what to install.
 */
export async function ensureSystem(
  job: "reproduce" | "test",
  options: { check?: boolean; quiet?: boolean } = {},
): Promise<boolean> {
  let missing = await missingPackages(job);
  if (!missing.length) {
    if (!options.quiet) console.error(`[setup] ready for ${job}`);
    return true;
  }
  const packages = missing.map(([p]) => p);
  for (const [p, why] of missing) console.error(`[setup] ${why}: package ${p}`);
  const line = `apt-get update && apt-get install -y ${packages.join(" ")}`;
  const apt = await onPath("apt-get");
  const root = Deno.uid() === 0;
  if (options.check || !apt || !root) {
    console.error(
      apt
        ? `[setup] install them with: ${root ? "" : "sudo "}${line}`
        : `[setup] install the equivalent of: ${packages.join(", ")} (Debian names)`,
    );
    return false;
  }
  console.error(`[setup] installing: ${line}`);
  if (
    !(await run(["apt-get", "update", "-qq"])) ||
    !(await run(["apt-get", "install", "-y", "-qq", ...packages]))
  ) {
    console.error(`[setup] apt-get failed; run it yourself: ${line}`);
    return false;
  }
  missing = await missingPackages(job);
  if (missing.length) {
    console.error(`[setup] still missing after installing: ${missing.map(([, w]) => w)}`);
    return false;
  }
  console.error(`[setup] ready for ${job}`);
  return true;
}

if (import.meta.main) {
  if (Deno.args[0] === "--probe") {
    // Child of hasGpu(): request an adapter and say what it is.
    try {
      const gpu = await acquireGpu();
      console.log(gpu.description);
      Deno.exit(0);
    } catch (e) {
      console.log(e instanceof GpuUnavailableError ? "requestAdapter returned none" : String(e));
      Deno.exit(1);
    }
  }
  await runCli(SPEC, async ({ values }) => {
    const job = choiceOption("for", values.for, ["reproduce", "test"] as const);
    const ready = await ensureSystem(job, {
      check: values.check as boolean | undefined,
      quiet: values.quiet as boolean | undefined,
    });
    return ready ? 0 : 1;
  });
}
