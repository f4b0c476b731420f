/**
 * The peer a user would otherwise pick: TensorFlow.js's WebGPU backend, on the same adapter.
 * Bench-only: nothing under mod.ts imports this file.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-webgpu";

/** A matmul of fixed size in tfjs-webgpu, timed like ours. */
export interface TfjsMatmul {
  /** Compute C = A·B and read back C's first row's first 4 values (forces completion). */
  run(): Promise<Float32Array>;
  dispose(): void;
}

/**
 * Set up tfjs-webgpu with the given row-major operands; throws if its backend cannot start or its
 * first result disagrees with a float64 dot product (a timing of wrong work is worthless).
 */
export async function tfjsMatmul(
  aData: Float32Array,
  bData: Float32Array,
  m: number,
  n: number,
  k: number,
): Promise<TfjsMatmul> {
  if (!(await tf.setBackend("webgpu"))) throw new Error("tfjs: the webgpu backend did not start");
  await tf.ready();
  const a = tf.tensor2d(aData, [m, k]);
  const b = tf.tensor2d(bData, [k, n]);
  const peer: TfjsMatmul = {
    async run() {
      const c = tf.matMul(a, b);
      const head = tf.slice(c, [0, 0], [1, Math.min(4, n)]);
      const values = (await head.data()) as Float32Array;
      c.dispose();
      head.dispose();
      return values;
    },
    dispose() {
      a.dispose();
      b.dispose();
    },
  };
  const got = await peer.run();
  for (let j = 0; j < got.length; j++) {
    let want = 0;
    for (let p = 0; p < k; p++) want += aData[p] * bData[p * n + j];
    if (Math.abs(got[j] - want) > 1e-3 * Math.max(1, Math.abs(want))) {
      throw new Error(
        `tfjs-webgpu matMul is wrong on this adapter: C[0,${j}]=${got[j]}, want ${want}`,
      );
    }
  }
  return peer;
}
