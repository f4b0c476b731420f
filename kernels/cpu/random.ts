/**
 * Seeded random numbers for parameter init, dropout and data order: same seed, same stream, on
 * every platform (no Math.random anywhere a result must be reproducible).
 */

/** Deterministic 32-bit PRNG (mulberry32) returning floats in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [-bound, bound) from `seed`. */
export function uniformArray(n: number, bound: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = bound * (2 * next() - 1);
  return out;
}

/** `n` standard normal values (Box–Muller) from `seed`. */
export function gaussianArray(n: number, seed: number, std = 1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - next(); // (0, 1]: log stays finite
    const v = next();
    const r = std * Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * PyTorch's `kaiming_uniform_(w, a=√5)` for a weight with `fanIn` inputs, the default init of
 * `nn.Linear` and of LoRA's A: uniform in ±1/√fanIn.
 */
export function kaimingUniform(n: number, fanIn: number, seed: number): Float32Array {
  return uniformArray(n, 1 / Math.sqrt(fanIn), seed);
}

/** 32-bit integer hash (PCG output permutation); the WGSL dropout kernel computes the same. */
export function hash32(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** Keep-decision of inverted dropout for element `index` under `seed` (same as the WGSL kernel). */
export function dropoutKeep(seed: number, index: number, p: number): boolean {
  // Integer comparison on 24 bits, exactly as the kernel does it (no f32 rounding of a u32).
  return hash32((hash32(seed) ^ index) >>> 0) >>> 8 >= p * 16777216;
}
