/**
 * Model measurements for `deno task perf`: MoKA fine-tuning tokens/s (NF4 base, MoKA on every
 * target module, seq 256; against the per-component matmul kernels in the same run) and KV-cached
 * greedy and 4-beam generation tokens/s (selection on the host against on the GPU; 8 questions
 * one at a time against one batched decode), on the embedded stories260K
 * and on a random model of LLaMA-like shape (d = 512, 8 layers) to show scaling; plus where the
 * GPU time of one training step goes (per-kernel timestamps, grouped by kernel family).
 */
import { describeStepMemory, estimateStepMemory } from "../models/llama/memory.ts";
import type { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { type Llama2cCheckpoint, type Llama2cConfig, loadLlama2c } from "../models/llama2c.ts";
import { fromLlama2c, linearDims, type LlamaConfig } from "../models/llama/config.ts";
import { TARGET_MODULES } from "../models/llama_shapes.ts";
import { adaptersForModel } from "../models/llama/attach.ts";
import {
  generate,
  generateOnGpu,
  gpuScorer,
  searchManyOnGpu,
  searchOnGpu,
} from "../models/llama/generate.ts";
import { GpuLlama } from "../models/llama/gpu/model.ts";
import { randomCheckpoint } from "../models/llama/testing.ts";
import { type Example, Trainer } from "../models/llama/train.ts";
import { defaultModelPath } from "../testing/paths.ts";
import { rng } from "../kernels/cpu/random.ts";
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

const ratio = (a: number, b: number) => sig3(a / b);

/** FLOPs of MoKA's vec-trick on one module (matmuls only), forward and backward. */
export function mokaModuleFlops(
  dIn: number,
  dOut: number,
  tokens: number,
  components: readonly (readonly [number, number])[],
): { forward: number; backward: number } {
  let forward = 0;
  let backward = 0;
  for (const [ma, na] of components) {
    const mb = dOut / ma;
    const nb = dIn / na;
    forward += 2 * tokens * (ma * na * nb + ma * nb * mb); // W = A'·X, y += W·Bᵀ
    // K = A'ᵀ·dY, dX += K·B, dB = Σ Kᵀ·X, Zt = B·Xᵀ, dA = Σ dY·Zt
    backward += 2 * tokens * (na * ma * mb + na * mb * nb + mb * na * nb + mb * nb * na +
      ma * mb * na);
  }
  return { forward, backward };
}

/**
 * Model FLOPs of one block's training forward + backward over `rows` tokens in sequences of `seq`
 * (recomputation by checkpointing not counted): the frozen linear layers (forward, and the input
 * gradient only: the base is frozen), causal attention (scores and values forward; four products
 * backward) and the adapters' vec-trick. Norms, RoPE, SwiGLU and the residuals are O(rows · dim)
 * and left out.
 */
export function blockFlops(
  c: LlamaConfig,
  rows: number,
  seq: number,
  moka: { components: [number, number][] },
  targets: readonly string[],
): { linear: number; attention: number; adapters: number; total: number } {
  let weights = 0;
  for (const m of TARGET_MODULES) {
    const [dIn, dOut] = linearDims(c, m);
    weights += dIn * dOut;
  }
  const linear = 2 * 2 * rows * weights;
  const attnForward = 2 * rows * (seq + 1) * c.dim; // QKᵀ and P·V over (seq + 1) / 2 keys
  const attention = 3 * attnForward;
  let adapters = 0;
  for (const m of targets) {
    const [dIn, dOut] = linearDims(c, m as "q");
    const f = mokaModuleFlops(dIn, dOut, rows, moka.components);
    adapters += f.forward + f.backward;
  }
  return { linear, attention, adapters, total: linear + attention + adapters };
}

/**
 * Model FLOPs of one training step of `rows` tokens in sequences of `seq`: every block's
 * ({@link blockFlops}) and the classifier's forward and input gradient.
 */
export function trainStepFlops(
  c: LlamaConfig,
  rows: number,
  seq: number,
  moka: { components: [number, number][] },
  targets: readonly string[],
): number {
  return c.layers * blockFlops(c, rows, seq, moka, targets).total + 4 * rows * c.vocab * c.dim;
}

async function trainTokensPerSecond(
  rt: GpuRuntime,
  model: GpuLlama,
  data: Example[],
  seq: number,
): Promise<number> {
  const trainer = new Trainer(rt, model, { steps: 3, lr: 1e-3, batchSize: 1, seq }, data, "perf");
  await trainer.trainStep(); // warm-up: pipelines compile
  const steps = [await trainer.trainStep(), await trainer.trainStep()];
  trainer.release();
  return (steps.length * seq) / steps.reduce((s, l) => s + l.seconds, 0);
}

async function generationTokensPerSecond(
  run: (maxNew: number) => Promise<unknown>,
  n: number,
): Promise<number> {
  await run(4); // warm-up
  const t0 = performance.now();
  await run(n);
  return n / ((performance.now() - t0) / 1000);
}

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
  const seq = 256;
  const next = rng(5);
  const data: Example[] = Array.from({ length: 4 }, () => {
    const ids = Array.from({ length: seq + 1 }, () => 3 + Math.floor(next() * (config.vocab - 3)));
    return { ids: ids.slice(0, seq), targets: ids.slice(1) };
  });
  // The baseline in the same run: the adapters' per-component matmul kernels.
  log(`${name}: training, per-component matmul kernels (baseline) ...`);
  await model.attach(adapters, { kernels: "matmul" });
  const baseTps = await trainTokensPerSecond(rt, model, data, seq);
  log(`  ${baseTps.toFixed(1)} tokens/s`);
  out[`train_tokens_per_s_matmul_kernels_${name}`] = sig3(baseTps);

  await model.attach(adapters); // kernels chosen by size (fused where dispatches dominate)
  log(`${name}: training step (MoKA ${JSON.stringify(moka)}, NF4 base, seq ${seq}) ...`);
  const before = rt.pool.stats.inUseBytes;
  rt.pool.resetPeak();
  const trainTps = await trainTokensPerSecond(rt, model, data, seq);
  log(`  ${trainTps.toFixed(1)} tokens/s (${(seq / trainTps).toFixed(2)} s/step)`);
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

  // Where one step's GPU time goes, and how many dispatches it takes.
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
  }
  // Forward and backward, plus the optimizer's gradient norm and AdamW (one each per buffer of
  // packed parameters).
  const buffers = model.trainables!.params.buffers.length;
  out[`train_step_dispatches_${name}`] = b.dispatchCount + 2 * buffers;
  for (const t of [ids, targets, loss]) t.release();

  // Generation from BOS, 32 tokens (no EOS), host-side selection against GPU-resident.
  const n = 32;
  const opts = (beams: number) => (maxNew: number) => ({ maxNew, eos: -1, beams });
  for (const beams of [1, 4]) {
    const what = beams === 1 ? "greedy" : `${beams}-beam`;
    log(`${name}: ${what} generation with a KV cache, selection on the host ...`);
    const host = await generationTokensPerSecond(
      (m) => generate(gpuScorer(rt, model), [1], config.vocab, opts(beams)(m)),
      n,
    );
    log(`  ${host.toFixed(1)} tokens/s; selection on the GPU ...`);
    const gpu = await generationTokensPerSecond(
      (m) => generateOnGpu(rt, model, [1], opts(beams)(m)),
      n,
    );
    log(`  ${gpu.toFixed(1)} tokens/s`);
    const key = beams === 1 ? "generate" : `generate_${beams}beam`;
    out[`${key}_tokens_per_s_host_select_${name}`] = sig3(host);
    out[`${key}_tokens_per_s_${name}`] = sig3(gpu);
    out[`${key}_speedup_${name}`] = ratio(gpu, host);
  }
  // The commonsense protocol's shape: 8 questions of different lengths × 4 beams × 32 tokens,
  // one question at a time against all 8 in one batched decode.
  const questions = Array.from(
    { length: 8 },
    (_, q) => Array.from({ length: 12 + 5 * q }, (_, i) => 1 + ((13 * i + 7 * q) % 300)),
  );
  const qOpts = { maxNew: n, beams: 4, eos: -1 };
  await searchManyOnGpu(rt, model, questions, { ...qOpts, maxNew: 4 }); // warm-up
  log(`${name}: 8 questions × 4 beams, one at a time ...`);
  let t0 = performance.now();
  for (const q of questions) await searchOnGpu(rt, model, q, qOpts);
  const single = questions.length * n / ((performance.now() - t0) / 1000);
  log(`  ${single.toFixed(1)} tokens/s; in one batch ...`);
  t0 = performance.now();
  await searchManyOnGpu(rt, model, questions, qOpts);
  const batched = questions.length * n / ((performance.now() - t0) / 1000);
  log(`  ${batched.toFixed(1)} tokens/s`);
  out[`generate_4beam_8questions_tokens_per_s_one_at_a_time_${name}`] = sig3(single);
  out[`generate_4beam_8questions_tokens_per_s_batched_${name}`] = sig3(batched);
  out[`generate_4beam_8questions_batched_speedup_${name}`] = ratio(batched, single);
  const cache = model.createCache(1, 8);
  const one = rt.upload(new Uint32Array([1]), [1], "u32");
  const d = rt.batch();
  const decoded = await model.decode(d, one, 0, cache);
  out[`decode_step_dispatches_${name}`] = d.dispatchCount + 1; // + the selection
  await d.submit();
  for (const t of [cache, one, decoded]) t.release();
  out[`train_tokens_per_s_${name}`] = sig3(trainTps);
  // Model FLOPs of the step (no recomputation) at the measured rate; perf adds the fraction of
  // the roofline beside it.
  const stepFlops = trainStepFlops(config, seq, seq, moka as { components: [number, number][] }, [
    ...TARGET_MODULES,
  ]);
  out[`train_gflop_per_step_${name}`] = sig3(stepFlops / 1e9);
  out[`train_gflops_${name}`] = sig3((stepFlops * trainTps) / seq / 1e9);
  out[`train_speedup_vs_matmul_kernels_${name}`] = ratio(trainTps, baseTps);
  out[`nf4_linear_weight_bytes_${name}`] = model.linearWeightBytes;
  out[`trainable_params_${name}`] = [...adapters.values()].reduce(
    (n, a) => n + a.trainableParams(),
    0,
  );
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
