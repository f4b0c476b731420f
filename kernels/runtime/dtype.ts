/**
 * Element types a tensor can hold on the GPU.
 *
 * - `f32`: IEEE float32.
 * - `f16`: IEEE float16; WGSL arithmetic on it needs the `shader-f16` feature.
 * - `u32`: raw 32-bit words, used for packed 4-bit weights and indices.
 */
export type DType = "f32" | "f16" | "u32";

/** Bytes per element of each dtype. */
export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = { f32: 4, f16: 2, u32: 4 };

/** The typed array that holds a dtype's values on the CPU. */
export type HostArray<D extends DType> = D extends "f32" ? Float32Array
  : D extends "f16" ? Float16Array
  : Uint32Array;

/** Allocate a zeroed host array of `length` elements for `dtype`. */
export function hostArray<D extends DType>(dtype: D, length: number): HostArray<D> {
  switch (dtype) {
    case "f32":
      return new Float32Array(length) as HostArray<D>;
    case "f16":
      return new Float16Array(length) as HostArray<D>;
    case "u32":
      return new Uint32Array(length) as HostArray<D>;
  }
  throw new Error(`unknown dtype ${dtype}`);
}

/** Number of elements of a shape (1 for a scalar shape `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new RangeError(`invalid shape [${shape.join(", ")}]: dims must be integers >= 0`);
    }
    n *= d;
  }
  return n;
}
