/**
 * Model measurements for `deno task perf`: MoKA fine-tuning tokens/s (NF4 base, MoKA on every
 * target module, seq 256) and KV-cached greedy generation tokens/s, on the embedded stories260K
 * and on a random model of LLaMA-like shape (d = 512, 8 layers) to show scaling; plus where the
 * GPU time of one training step goes (per-kernel timestamps, grouped by kernel family).
 */
import { describeStepMemory, estimateStepMemory } from "../models/llama/memory.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { type Llama2cCheckpoint, type Llama2cConfig, loadLlama2c } from "../models/llama2c.ts";
import { fromLlama2c } from "../models/llama/config.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import { generate, gpuScorer } from "../models/llama/generate.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { randomCheckpoint } from "../models/llama/testing.ts";
import { type Example, Trainer } from "../models/llama/train.ts";
import { defaultModelPath } from "../models/paths.ts";
import { rng } from "../models/random.ts";
import { sig3 } from "./timing.ts";

/** LLaMA-like shape for the scaling measurement. */
export const RANDOM_512: Llama2cConfig = {
  dim: 512,
  hiddenDim: 1376,
  layers: 8,
  heads: 8,
  kvHeads: 4,
  vocab: 4096,
  seqLen: 512,
  sharedClassifier: true,
};

async function measure(
  rt: GpuRuntime,
  name: string,
  ckpt: Llama2cCheckpoint,
  moka: unknown,
  log: (m: string) => void,
  out: Record<string, number | string>,
): Promise<void> {
  const config = fromLlama2c(ckpt.config);
  const model = await GpuLlama.create(rt, config, ckpt, { base: "nf4" });
  const adapters = await adaptersForModel(config, moka, 1);
  await model.attach(adapters);
  const seq = 256;
  const next = rng(5);
  const data: Example[] = Array.from({ length: 4 }, () => {
    const ids = Array.from({ length: seq + 1 }, () => 3 + Math.floor(next() * (config.vocab - 3)));
    return { ids: ids.slice(0, seq), targets: ids.slice(1) };
  });
  const trainer = new Trainer(rt, model, { steps: 3, lr: 1e-3, batchSize: 1, seq }, data, "perf");
  log(`${name}: training step (MoKA ${JSON.stringify(moka)}, NF4 base, seq ${seq}) ...`);
  const before = rt.pool.stats.inUseBytes;
  rt.pool.resetPeak();
  await trainer.trainStep(); // warm-up: pipelines compile
  // The step's pool growth beside the term-by-term estimate of what it holds.
  const estimate = estimateStepMemory(config, {
    base: "nf4",
    embedding: model.frozen.embed.format,
    batch: 1,
    seq,
    checkpointing: model.checkpoints(seq, seq),
    adapterParams: [...adapters.values()].reduce((n, a) => n + a.trainableParams(), 0),
    logitsChunkBytes: Math.min(64 * 2 ** 20, rt.device.limits.maxStorageBufferBindingSize),
  });
  out[`train_step_pool_growth_bytes_${name}`] = rt.pool.stats.peakInUseBytes - before;
  out[`train_step_estimated_growth_bytes_${name}`] = estimate.activations + estimate.logits;
  out[`train_step_estimate_${name}`] = describeStepMemory(estimate);
  const steps = [await trainer.trainStep(), await trainer.trainStep()];
  const secs = steps.reduce((s, l) => s + l.seconds, 0);
  const trainTps = (steps.length * seq) / secs;
  log(`  ${trainTps.toFixed(1)} tokens/s (${(secs / steps.length).toFixed(2)} s/step)`);
  trainer.release();

  // Where one step's GPU time goes.
  const ids = rt.upload(Uint32Array.from(data[0].ids), [seq]);
  const targets = rt.upload(Uint32Array.from(data[0].targets), [seq]);
  const b = rt.batch({ profile: true });
  await model.forward(b, ids, seq, { keep: true, logits: "none" });
  const loss = await model.lossAndBackward(b, targets, seq);
  await b.submit();
  const byFamily = new Map<string, number>();
  let total = 0;
  for (const t of b.durations()) {
    const family = t.label.split("/").slice(0, 2).join("/").replace(/-\d+x\d+.*$/, "");
    byFamily.set(family, (byFamily.get(family) ?? 0) + t.ns);
    total += t.ns;
  }
  if (total > 0) {
    const top = [...byFamily].sort((a, b) => b[1] - a[1]).slice(0, 6);
    out[`train_gpu_time_split_${name}`] = top.map(([k, ns]) =>
      `${k} ${(100 * ns / total).toFixed(0)}%`
    ).join(", ");
    out[`train_step_dispatches_${name}`] = b.dispatchCount;
  }
  for (const t of [ids, targets, loss]) t.release();

  log(`${name}: greedy generation with a KV cache ...`);
  await generate(gpuScorer(rt, model), [1], config.vocab, { maxNew: 4, eos: -1 }); // warm-up
  const t0 = performance.now();
  const n = 32;
  await generate(gpuScorer(rt, model), [1], config.vocab, { maxNew: n, eos: -1 });
  const genTps = n / ((performance.now() - t0) / 1000);
  log(`  ${genTps.toFixed(1)} tokens/s`);
  out[`train_tokens_per_s_${name}`] = sig3(trainTps);
  out[`generate_tokens_per_s_${name}`] = sig3(genTps);
  out[`nf4_linear_weight_bytes_${name}`] = model.linearWeightBytes;
  model.release();
}

/** Run the model measurements; `log` gets progress lines. */
export async function modelPerf(
  rt: GpuRuntime,
  log: (msg: string) => void,
): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = {};
  const stories = await loadLlama2c(defaultModelPath("stories260K.bin"));
  await measure(
    rt,
    "stories260k",
    stories,
    { kind: "moka", components: [[4, 4], [2, 2]] },
    log,
    out,
  );
  await measure(
    rt,
    "random_d512_l8",
    randomCheckpoint(RANDOM_512, 1),
    {
      kind: "moka",
      components: [[8, 8], [4, 4]],
    },
    log,
    out,
  );
  return out;
}
