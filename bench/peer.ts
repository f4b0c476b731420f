/**
 * `deno task perf --peer torch`: run bench/torch_peer.py (the same model workloads in plain
 * PyTorch on the CPU) and set its numbers beside ours as ratios. Debian's python3-torch is looked
 * for at /usr/bin/python3 first (a pyenv or venv python3 on PATH may lack it); without it the
 * peer is reported as skipped, never as a number.
 */
import { defaultModelPath } from "../testing/paths.ts";
import { sig3 } from "./timing.ts";

/** Workload keys measured by both (suffixed by the model name). */
const SHARED = ["train_tokens_per_s", "generate_tokens_per_s", "generate_4beam_tokens_per_s"];
const MODELS = ["stories260k", "random_d512_l8"];

async function pythonWithTorch(): Promise<string | null> {
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const { success } = await new Deno.Command(python, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (success) return python;
    } catch {
      // not installed there
    }
  }
  return null;
}

/**
 * The peer's numbers (`torch_*`) and, for each workload both measured, moka/torch
 * (`moka_over_torch_*`); `ours` holds this run's model section.
 */
export async function torchPeer(
  ours: Record<string, unknown>,
  log: (m: string) => void,
  seconds = 3,
): Promise<Record<string, number | string | boolean>> {
  const python = await pythonWithTorch();
  if (!python) {
    log("peer torch: skipped (no python3 that imports torch; apt-get install python3-torch)");
    return { peer_torch: "skipped: no python3 that imports torch (apt-get install python3-torch)" };
  }
  log(`peer torch: ${python} bench/torch_peer.py (2 torch threads, OPENBLAS_NUM_THREADS=1) ...`);
  const script = new URL("./torch_peer.py", import.meta.url).pathname;
  const { success, stdout, stderr } = await new Deno.Command(python, {
    args: [
      script,
      "--checkpoint",
      defaultModelPath("stories260K.bin"),
      "--reference",
      defaultModelPath("reference.json"),
      "--seconds",
      String(seconds),
      "--threads",
      "2",
    ],
    env: { OPENBLAS_NUM_THREADS: "1", OMP_NUM_THREADS: "2" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`torch_peer.py failed:\n${new TextDecoder().decode(stderr).slice(-2000)}`);
  }
  const peer = JSON.parse(new TextDecoder().decode(stdout)) as Record<string, number | string>;
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(peer)) out[`torch_${k}`] = v;
  for (const model of MODELS) {
    for (const key of SHARED) {
      const mine = ours[`${key}_${model}`];
      const theirs = peer[`${key}_${model}`];
      if (typeof mine === "number" && typeof theirs === "number" && theirs > 0) {
        out[`moka_over_torch_${key}_${model}`] = sig3(mine / theirs);
      }
    }
  }
  return out;
}
