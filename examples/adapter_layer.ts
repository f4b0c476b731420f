/**
 * One MoKA adapter on one linear layer with a 4-bit (NF4) frozen base:
 * build the adapter, run the adapted forward on the GPU (base matmul + adapter, one batch),
 * compare it with the float64 CPU reference, and print the parameter counts.
 *
 * Run from the repository root:
 *   deno run --allow-read --allow-env examples/adapter_layer.ts
 *
 * Without a GPU, Mesa's software driver prints a harmless XDG_RUNTIME_DIR warning unless that
 * variable is set or --allow-write lets the runtime create a private one.
 */
import {
  createAdapter,
  dequantizeNf4,
  frozenMatmul,
  FrozenMatrix,
  gaussianArray,
  GpuRuntime,
  quantizeNf4,
  uploadQuantized,
} from "../mod.ts";

const [dIn, dOut, tokens] = [256, 128, 16];
const rt = await GpuRuntime.create();
console.log(`adapter: ${rt.gpu.description}`);

// The frozen base W [dOut, dIn], quantized to NF4 (block 64) and uploaded in 4 bits.
const w = gaussianArray(dOut * dIn, 1, 0.05);
const nf4 = quantizeNf4(w, dOut, dIn);
const base = FrozenMatrix.of(uploadQuantized(rt, nf4));

// MoKA: ΔW = s·Σᵢ softmax(g)ᵢ·(Aᵢ ⊗ Bᵢ), three components of different shapes.
const moka = createAdapter({ kind: "moka", components: [[8, 8], [4, 16], [16, 4]] }, dIn, dOut, 7);
// At init ΔW = 0 (one factor starts at zero); give every parameter a value so the check means
// something.
const params = Object.fromEntries(
  Object.entries(moka.params).map(([name, v], i) => [name, gaussianArray(v.length, 100 + i, 0.2)]),
);
moka.setParams(params);

// GPU: y = x·Wᵀ through the fused NF4 kernel, then the adapter turns y into the adapted output.
const xHost = gaussianArray(tokens * dIn, 2);
const x = rt.upload(xHost, [tokens, dIn]);
const layer = await moka.toGpu(rt, base);
const batch = rt.batch();
const y = await frozenMatmul(rt, batch, x, base);
await layer.forward(batch, x, y, tokens);
await batch.submit();
const gpu = await rt.read(y) as Float32Array;

// CPU: the float64 reference on the dequantized base (what the GPU computes with).
const ref = moka.math.forward(
  moka.paramsF64(),
  Float64Array.from(dequantizeNf4(nf4)),
  Float64Array.from(xHost),
  tokens,
);
let num = 0;
let den = 0;
for (let i = 0; i < ref.length; i++) {
  num += (gpu[i] - ref[i]) ** 2;
  den += ref[i] ** 2;
}
const err = Math.sqrt(num / den);
console.log(`forward [${tokens} × ${dOut}]: ‖gpu − cpu‖/‖cpu‖ = ${err.toExponential(2)}`);

console.log(`trainable parameters: MoKA ${moka.trainableParams()}`);
const lora = createAdapter({ kind: "lora", r: 4, alpha: 8 }, dIn, dOut, 7);
console.log(`  (LoRA r=4 on the same layer: ${lora.trainableParams()}; dense ΔW: ${dIn * dOut})`);
console.log(`base weight: ${base.bytes} bytes in NF4 vs ${dIn * dOut * 4} in f32`);

for (const t of [x, y]) t.release();
layer.release();
base.release();
if (!(err < 1e-5)) throw new Error(`GPU and CPU disagree: ${err}`);
