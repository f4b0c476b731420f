import assert from "node:assert/strict";
import { testRuntime } from "../../kernels/testing/mod.ts";
import { loadLlama2c } from "../llama2c.ts";
import { defaultModelPath } from "../../testing/paths.ts";
import { Llama2cTokenizer } from "../tokenizer/llama2c.ts";
import { fromLlama2c } from "./config.ts";
import { adaptersForModel } from "./attach.ts";
import { GpuLlama } from "./gpu/model.ts";
import {
  epochOrder,
  type Example,
  learningRate,
  progressLine,
  trainCpu,
  Trainer,
} from "./train.ts";
import { type CpuAdapters, CpuLlama } from "./cpu/model.ts";

// Shapes must divide 64, 32 (k, v) and 172 (the MLP) alike.
const MOKA = { kind: "moka", components: [[4, 4], [2, 2]] };

async function setup(base: "f32" | "nf4") {
  const rt = await testRuntime();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const tok = await Llama2cTokenizer.load(defaultModelPath("tok512.bin"), config.vocab);
  const texts = [
    "The purple robot sang to the moon every night.",
    "Tom found a blue key under the old green tree.",
  ];
  // Prompt "Story:" masked, the rest is the target.
  const prompt = tok.encode("Story:", { bos: true }).length;
  const data: Example[] = texts.map((t) => {
    const ids = tok.encode(`Story: ${t}`, { bos: true, eos: true });
    return {
      ids: ids.slice(0, -1),
      targets: ids.slice(1).map((id, i) => (i + 1 < prompt ? -1 : id)),
    };
  });
  const model = await GpuLlama.create(rt, config, ckpt, { base });
  const adapters = await adaptersForModel(config, MOKA, 1);
  await model.attach(adapters);
  return { rt, model, data };
}

Deno.test("train: schedule and data order are what the config says", () => {
  const c = { steps: 100, lr: 1, warmup: 10, schedule: "cosine" as const } as Parameters<
    typeof learningRate
  >[0];
  assert.equal(learningRate(c, 5), 0.5);
  assert.equal(learningRate(c, 10), 1);
  assert.ok(Math.abs(learningRate(c, 55) - 0.5) < 1e-12);
  assert.equal(learningRate({ ...c, schedule: "linear" }, 100), 0);
  const o = epochOrder(10, 3, 0);
  assert.deepEqual([...o].sort((a, b) => a - b), [...Array(10).keys()]);
  assert.deepEqual(o, epochOrder(10, 3, 0));
  assert.notDeepEqual(o, epochOrder(10, 3, 1));
  const line = progressLine(
    { step: 3, loss: 2.5, gradNorm: 0.5, lr: 1e-3, tokens: 512, seconds: 2 },
    10,
    125,
  );
  assert.equal(line, "step 3/10 · loss 2.5000 · lr 1.00e-3 · |g| 0.500 · 256.0 tok/s · ETA 2m05s");
});

Deno.test("train: 50 steps of MoKA on an NF4 stories260K drive the loss down by half", async () => {
  const { model, data, rt } = await setup("nf4");
  const trainer = new Trainer(
    rt,
    model,
    { steps: 50, lr: 5e-3, warmup: 5, batchSize: 2, seq: 16, seed: 1 },
    data,
    "test",
  );
  const logs = await trainer.run({
    progress: (log, eta) => console.log(progressLine(log, 50, eta)),
  });
  const first = logs[0].loss;
  const last = logs.at(-1)!.loss;
  assert.ok(last < 0.5 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
  trainer.release();
  model.release();
});

Deno.test("train: kill after a checkpoint and resume gives the uninterrupted run's adapters", async () => {
  const config = {
    steps: 6,
    lr: 3e-3,
    warmup: 2,
    batchSize: 1,
    seq: 16,
    seed: 7,
    gradAccum: 2,
    checkpointEvery: 3,
  };
  const dir = await Deno.makeTempDir();
  const straight = await setup("f32");
  const t1 = new Trainer(straight.rt, straight.model, config, straight.data, "resume-test");
  await t1.run();
  const want = await Promise.all([...straight.model.adapters.values()].map((a) => a.download()));

  const part = await setup("f32");
  const t2 = new Trainer(part.rt, part.model, config, part.data, "resume-test");
  await t2.run({ checkpointPath: `${dir}/ckpt.safetensors`, stopAfter: 3 }); // "killed" after step 3
  const fresh = await setup("f32");
  const t3 = new Trainer(fresh.rt, fresh.model, config, fresh.data, "resume-test");
  await t3.resume(`${dir}/ckpt.safetensors`);
  assert.equal(t3.step, 3);
  await t3.run();
  const got = await Promise.all([...fresh.model.adapters.values()].map((a) => a.download()));
  got.forEach((p, i) => {
    for (const [k, v] of Object.entries(p)) assert.deepEqual(v, want[i][k], `adapter ${i} ${k}`);
  });
  assert.deepEqual(t3.history.map((h) => h.loss), t1.history.map((h) => h.loss));
  const other = new Trainer(fresh.rt, fresh.model, config, fresh.data, "another-run");
  await assert.rejects(other.resume(`${dir}/ckpt.safetensors`), /different run/);
  for (const x of [straight, part, fresh]) x.model.release();
  for (const t of [t1, t2, t3, other]) t.release();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: the float64 CPU model trained the same way drives the same loss down by half", async () => {
  const { data, model: gpu } = await setup("f32");
  gpu.release();
  const ckpt = await loadLlama2c(defaultModelPath("stories260K.bin"));
  const config = fromLlama2c(ckpt.config);
  const cpu = new CpuLlama(config, ckpt);
  const adapters: CpuAdapters = new Map(
    [...(await adaptersForModel(config, MOKA, 1))].map((
      [k, a],
    ) => [k, { adapter: a, params: a.paramsF64() }]),
  );
  const losses = trainCpu(cpu, adapters, data, {
    steps: 50,
    lr: 5e-3,
    warmup: 5,
    batchSize: 2,
    seq: 16,
  });
  assert.ok(
    losses.at(-1)! < 0.5 * losses[0],
    `CPU loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`,
  );
});
