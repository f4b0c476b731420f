/**
 * Many small tensors packed into few buffers. A model's adapters have hundreds of small
 * parameter tensors; packed, the optimizer updates all of them in one dispatch per buffer, the
 * gradient norm is one reduction, and a layer's fused kernel reaches all of its factors through
 * one binding. Each tensor is a view at a bindable offset (a multiple of
 * {@link STORAGE_OFFSET_ALIGNMENT}), so kernels that take one tensor still bind it alone.
 *
 * Tensors come in groups (one layer's); a group never spans two buffers, and a buffer never
 * exceeds the device's binding limit. Two arenas built from the same group shapes have the same
 * layout, which is what lets parameters, gradients and optimizer moments be updated elementwise
 * buffer by buffer. Buffers start zeroed, so padding between tensors stays zero.
 */
import type { GpuRuntime } from "./runtime.ts";
import { GpuTensor, STORAGE_OFFSET_ALIGNMENT } from "./tensor.ts";

const ALIGN_FLOATS = STORAGE_OFFSET_ALIGNMENT / 4;
const align = (n: number) => Math.ceil(n / ALIGN_FLOATS) * ALIGN_FLOATS;

/** Where a tensor lives: buffer index and element offset. */
export interface ArenaSlot {
  /** Index of the buffer. */
  buffer: number;
  /** Offset in f32 elements (a multiple of 64). */
  offset: number;
  /** Shape of the tensor. */
  shape: number[];
}

/** The placement of groups of tensors into buffers (no GPU memory yet). */
export function planArena(groups: number[][][], maxFloats: number): {
  slots: ArenaSlot[][];
  bufferFloats: number[];
} {
  const bufferFloats: number[] = [];
  const slots = groups.map((shapes, g) => {
    const need = shapes.reduce((n, s) => n + align(s.reduce((a, b) => a * b, 1)), 0);
    if (need > maxFloats) {
      throw new RangeError(`arena: group ${g} needs ${need * 4} bytes, over ${maxFloats * 4}`);
    }
    if (bufferFloats.length === 0 || bufferFloats.at(-1)! + need > maxFloats) bufferFloats.push(0);
    const buffer = bufferFloats.length - 1;
    return shapes.map((shape) => {
      const offset = bufferFloats[buffer];
      bufferFloats[buffer] += align(shape.reduce((a, b) => a * b, 1));
      return { buffer, offset, shape: [...shape] };
    });
  });
  return { slots, bufferFloats: bufferFloats.map((n) => Math.max(n, ALIGN_FLOATS)) };
}

/** f32 buffers holding groups of tensors; see the module doc. */
export class TensorArena {
  /** The whole buffers as flat f32 tensors (the optimizer's view). */
  readonly buffers: GpuTensor[];
  /** Per group, its tensors (views into {@link TensorArena.buffers}). */
  readonly groups: GpuTensor[][];
  /** Where each tensor lives. */
  readonly slots: ArenaSlot[][];

  /** Zeroed buffers for `groups` (per group, the shapes of its tensors). */
  constructor(rt: GpuRuntime, groups: number[][][], maxBytes?: number) {
    const limit = Math.min(
      maxBytes ?? Infinity,
      rt.device.limits.maxStorageBufferBindingSize,
      rt.device.limits.maxBufferSize,
    );
    const plan = planArena(groups, Math.floor(limit / 4 / ALIGN_FLOATS) * ALIGN_FLOATS);
    this.slots = plan.slots;
    this.buffers = plan.bufferFloats.map((n) => rt.upload(new Float32Array(n), [n]));
    this.groups = plan.slots.map((group) =>
      group.map((s) =>
        new GpuTensor(s.shape, "f32", this.buffers[s.buffer].buffer, null, true, s.offset * 4)
      )
    );
  }

  /** Bytes held. */
  get bytes(): number {
    return this.buffers.reduce((n, b) => n + b.byteLength, 0);
  }

  /** Free the buffers (the views die with them). */
  release(): void {
    for (const b of this.buffers) b.release();
  }
}
