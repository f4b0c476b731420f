/**
 * `deno task scale --stages generate,mmlu` end to end at the smallest synthetic shape (mid-0.2b):
 * the decode figures (greedy, 4 beams, a commonsense-style batch) and the MMLU batch with their
 * rates, bytes per token and shares of the copy bandwidth, recorded into a temporary --results
 * folder and rendered into its PERFORMANCE.md; nothing lands in bench/results.
 */
import assert from "node:assert/strict";
import { CPU_ADAPTER_BATCH } from "../evals/batching.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TASKS: Record<string, string> = JSON.parse(
  Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
).tasks;

function benchResults(): string[] {
  return [...Deno.readDirSync(`${ROOT}bench/results`)].map((e) => e.name).sort();
}

Deno.test("deno task scale --stages generate,mmlu: decode and MMLU figures at mid-0.2b", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moka-scale-test-" });
  const before = benchResults();
  try {
    const words = TASKS.scale.trim().split(/\s+/);
    const started = performance.now();
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        ...words.slice(1),
        "--shape",
        "mid-0.2b",
        "--stages",
        "generate,mmlu",
        "--generate",
        "3",
        "--decode-prompt",
        "8",
        "--mmlu-shots",
        "0",
        "--mmlu-questions",
        "4",
        "--record",
        "--results",
        dir,
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);
    const r = JSON.parse(new TextDecoder().decode(run.stdout)) as Record<string, unknown>;
    assert.equal(r.ok, true, String(r.error));
    const num = (k: string) => {
      assert.equal(typeof r[k], "number", `${k}: ${r[k]}`);
      assert.ok((r[k] as number) > 0 && Number.isFinite(r[k]), `${k}: ${r[k]}`);
      return r[k] as number;
    };
    assert.equal(r.decode_prompt_tokens, 8);
    assert.equal(r.decode_steps, 2);
    assert.equal(r.generated_tokens, 3);
    const copy = num("roofline_copy_gbps");
    assert.equal(typeof r.roofline_source, "string");
    for (const key of ["decode", "beam4", "commonsense_batch"]) {
      for (const f of ["tokens_per_s", "step_ms", "prefill_s", "bytes_per_token", "gbps"]) {
        num(`${key}_${f}`);
      }
      assert.equal(
        r[`${key}_fraction_of_roofline`],
        Number((num(`${key}_gbps`) / copy).toPrecision(3)),
        key,
      );
    }
    // One step reads the weights once for all its rows: fewer bytes per token with more rows.
    assert.ok(num("beam4_bytes_per_token") < num("decode_bytes_per_token"));
    assert.ok(num("decode_bytes_per_token") > num("decode_weight_bytes_per_step") * 0.99);
    // The chooser's pick: 8 on a CPU adapter (which decodes 2 of them), at least 8 on a GPU.
    const cpuAdapter = String(r.variants).startsWith("cpu-adapter");
    if (cpuAdapter) {
      assert.equal(r.commonsense_batch_chooser, CPU_ADAPTER_BATCH);
      assert.equal(r.commonsense_batch_questions, 2);
    } else {
      assert.ok(num("commonsense_batch_chooser") >= CPU_ADAPTER_BATCH);
      assert.equal(r.commonsense_batch_questions, r.commonsense_batch_chooser);
    }
    assert.equal(r.mmlu_questions, 4);
    assert.equal(r.mmlu_shots, 0);
    assert.equal(r.mmlu_batch, 4, "all 4 questions in one forward");
    assert.equal(r.mmlu_batches, 1);
    num("mmlu_prompts_per_s");
    num("mmlu_s");
    num("generate_s");

    const recorded = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.equal(recorded.filter((n) => n.startsWith("scale-")).length, 1, `${recorded}`);
    const doc = await Deno.readTextFile(`${dir}/PERFORMANCE.md`);
    for (
      const row of [
        "greedy batch 1 tokens/s",
        "4 beams beam-tokens/s",
        "commonsense batch (questions × 4 beams) tokens/s",
        "MMLU prompts/s",
        "copy GB/s (source)",
      ]
    ) assert.ok(doc.includes(`| ${row}`), row);
    assert.match(doc, new RegExp(`\\| ${r.decode_tokens_per_s} \\(`));
    assert.deepEqual(benchResults(), before, "nothing recorded into bench/results");
    console.log(
      `scale generate,mmlu at mid-0.2b: ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
