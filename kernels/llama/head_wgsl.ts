/**
 * How the GPU attention kernels (`attention_gpu.ts`, `attention_decode.ts`) lay a head of `hs`
 * floats over invocations: its vec4 columns, split among up to 8 lanes, each lane owning a few.
 */

/** vec4 columns of a head of `hs` floats. */
export const vecCols = (hs: number): number => Math.ceil(hs / 4);

/** Invocations sharing one head row: 8, fewer for tiny heads. */
export const lanesOf = (hs: number): number => Math.min(8, 2 ** Math.ceil(Math.log2(vecCols(hs))));

/** vec4 columns each of those invocations owns. */
export const colsPer = (hs: number): number => Math.ceil(vecCols(hs) / lanesOf(hs));

/**
 * Statements for each owned vec4 column k (literal indices keep the arrays in registers), guarded
 * where the lanes do not divide the head's vec4 columns. The shader names its lane `lane` and
 * declares `HV` (the head's vec4 columns).
 */
export const unrollCols = (hs: number, f: (k: number) => string, indent = 4): string =>
  Array.from({ length: colsPer(hs) }, (_, k) => {
    const s = f(k);
    const guarded = vecCols(hs) % lanesOf(hs) === 0
      ? s
      : `if (lane + ${k * lanesOf(hs)}u < HV) { ${s} }`;
    return " ".repeat(indent) + guarded;
  }).join("\n");

/**
 * `ld_<name>(o, cv)` or `st_<name>(o, cv, x)`: one vec4 column `cv` of a head row starting at
 * float offset `o` of tensor `name` (zeros past the head): 16-byte accesses where the head size is
 * a multiple of 4, guarded scalars otherwise. The shader declares `HS` (the head size).
 */
export function headAccessWgsl(hs: number, name: string, write: boolean): string {
  if (hs % 4 === 0) {
    return write
      ? `fn st_${name}(o: u32, cv: u32, x: vec4<f32>) { ${name}[o / 4u + cv] = x; }`
      : `fn ld_${name}(o: u32, cv: u32) -> vec4<f32> { return ${name}[o / 4u + cv]; }`;
  }
  return write
    ? `fn st_${name}(o: u32, cv: u32, x: vec4<f32>) {
  for (var m = 0u; m < 4u; m++) { if (cv * 4u + m < HS) { ${name}[o + cv * 4u + m] = x[m]; } }
}`
    : `fn ld_${name}(o: u32, cv: u32) -> vec4<f32> {
  var x = vec4<f32>();
  for (var m = 0u; m < 4u; m++) { if (cv * 4u + m < HS) { x[m] = ${name}[o + cv * 4u + m]; } }
  return x;
}`;
}
