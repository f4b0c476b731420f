/**
 * `deno task bench`: matmul kernels timed by `deno bench`, grouped by size with the naive kernel
 * as the baseline (so the summary prints "×faster than naive"). GFLOP/s and the comparison with
 * tfjs-webgpu are in `deno task perf`, which uses larger sizes.
 */
import { GpuRuntime } from "../kernels/runtime/runtime.ts";
import { defaultMatmulKernel, GPU_MATMUL, matmul, NAIVE_MATMUL } from "../kernels/matmul/matmul.ts";
import { kernelName, type MatmulKernelConfig } from "../kernels/matmul/wgsl.ts";
import { randomF32 } from "../kernels/testing/mod.ts";
import { tfjsMatmul } from "./tfjs_peer.ts";

const rt = await GpuRuntime.create();

for (const size of [128, 256]) {
  const aData = randomF32(size * size, 1);
  const bData = randomF32(size * size, 2);
  const a = rt.upload(aData, [size, size]);
  const b = rt.upload(bData, [size, size]);
  const c = rt.empty([size, size]);
  const spec = { m: size, n: size, k: size };
  const group = `matmul ${size}³ (${((2 * size ** 3) / 1e6).toFixed(1)} MFLOP)`;
  const kernels: [MatmulKernelConfig, boolean][] = [
    [NAIVE_MATMUL, true],
    [defaultMatmulKernel(rt.variants, size, size), false],
    [GPU_MATMUL, false],
  ];
  for (const [kernel, baseline] of kernels) {
    Deno.bench({
      name: `${kernelName(kernel)} ${size}`,
      group,
      baseline,
      async fn() {
        await matmul(rt, a, b, spec, { out: c, kernel });
      },
    });
  }
  const tf = await tfjsMatmul(aData, bData, size, size, size);
  Deno.bench({
    name: `tfjs-webgpu matMul ${size} (incl. 16-byte readback)`,
    group,
    async fn() {
      await tf.run();
    },
  });
}
