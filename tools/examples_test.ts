/**
 * The programs in examples/ run as a user runs them (their documented permissions) and print
 * what they promise.
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

async function runExample(file: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "--allow-write", `examples/${file}`],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, `${file} failed:\n${new TextDecoder().decode(out.stderr)}`);
  return stdout;
}

Deno.test("examples: an adapter on one layer matches its float64 reference", async () => {
  const out = await runExample("adapter_layer.ts");
  const error = Number(out.match(/‖gpu − cpu‖\/‖cpu‖ = ([0-9.e+-]+)/)?.[1]);
  assert.ok(error < 1e-4, `relative error ${error}:\n${out}`);
});

Deno.test("examples: fine-tuning stories260K with MoKA lowers the loss", async () => {
  const out = await runExample("finetune_stories.ts");
  const losses = [...out.matchAll(/loss ([0-9.]+)/g)].map((m) => Number(m[1]));
  assert.ok(losses.length >= 2 && losses.at(-1)! < losses[0], `losses ${losses}:\n${out}`);
});

Deno.test("examples: MMLU scoring prints an accuracy with its interval", async () => {
  const out = await runExample("mmlu_score.ts");
  assert.match(out, /accuracy/);
  assert.match(out, /chance/);
});
