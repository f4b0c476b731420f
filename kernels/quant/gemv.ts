/**
 * GPU variant of the frozen-weight product for a few tokens (decoding: 1 token, or one per beam):
 * y[t, o] = α·Σᵢ x[t, i]·W[o, i] + e(t, o) + β·y[t, o], a matrix–vector product bound by reading W.
 *
 * A workgroup owns R output rows and all T tokens. Its invocations stride along the rows' columns a
 * group of 8 at a time (one u32 of 4-bit codes, a vec4 of 16-bit pairs, two vec4 of f32), so
 * consecutive invocations read consecutive words of each row: every load of the workgroup is one
 * contiguous run per row, the coalesced access a GPU's memory wants. Each invocation keeps R·T
 * partial dot products; the x values of a group are loaded once for all R rows. The partial sums
 * are then reduced across the workgroup: with subgroup operations, `subgroupAdd` within each
 * subgroup and one slot per subgroup in workgroup memory (any subgroup width); without, a tree in
 * workgroup memory. The order of the sums is fixed, so results are the same run to run.
 */
import { memoWgsl } from "../runtime/memo.ts";
import {
  epilogueWgsl,
  QUANT_PARAMS_WGSL,
  type QuantKernelFormat,
  quantScaleFns,
  quantStoreFn,
} from "./wgsl.ts";
import { quantGroupFn, quantWeightBinding } from "./tiled.ts";

/** Shape of the GPU matrix–vector kernel. */
export interface QuantGemvConfig {
  /** Output rows per workgroup. */
  rows: number;
  /** Invocations per workgroup (a power of two). */
  wg: number;
  /** Reduce with subgroup operations (needs `rt.variants.subgroups`). */
  subgroups: boolean;
}

/** Most tokens the matrix–vector kernel takes (more go to the tiled kernel). */
export const GEMV_MAX_TOKENS = 7;

/** The kernel for `tokens` rows of activations: fewer rows per workgroup as tokens grow. */
export function chooseGemv(tokens: number, subgroups: boolean): QuantGemvConfig {
  if (subgroups) return { rows: tokens <= 2 ? 8 : 4, wg: 128, subgroups };
  return { rows: 4, wg: 64, subgroups };
}

/** A short name for labels, e.g. `r8-wg128-sg`. */
export function gemvName(cfg: QuantGemvConfig): string {
  return `r${cfg.rows}-wg${cfg.wg}${cfg.subgroups ? "-sg" : ""}`;
}

/** Bytes of workgroup memory the kernel uses for `tokens`. */
export function gemvStorageBytes(cfg: QuantGemvConfig, tokens: number): number {
  // Subgroups are at least 4 wide in every API that has them: at most wg / 4 slots per value.
  return 4 * cfg.rows * tokens * (cfg.subgroups ? cfg.wg / 4 : cfg.wg);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function gemvWgslUncached(
  format: QuantKernelFormat,
  cfg: QuantGemvConfig,
  tokens: number,
  vecX: boolean,
  epilogue: string,
  prelude: string,
): string {
  const { rows, wg } = cfg;
  if (!Number.isInteger(tokens) || tokens < 1 || tokens > 16) {
    throw new RangeError(`gemv: ${tokens} tokens (1–16)`);
  }
  if (wg < 4 || (wg & (wg - 1)) !== 0 || rows < 1) {
    throw new RangeError(`gemv ${gemvName(cfg)}: wg must be a power of two ≥ 4, rows ≥ 1`);
  }
  const values = rows * tokens; // partial sums per invocation: value v = r·T + t
  const slots = cfg.subgroups ? wg / 4 : wg;
  const loadX = vecX
    ? `fn loadX(t: u32, c: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), x[(t * p.K + min(c, p.K - 4u)) / 4u], c < p.K);
}`
    : `fn loadX(t: u32, c: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
${
      range(4).map((e) =>
        `  v[${e}] = select(0.0, x[t * p.K + min(c + ${e}u, p.K - 1u)], c + ${e}u < p.K);`
      ).join("\n")
    }
  return v;
}`;
  const decl = range(values).map((v) => `  var acc${v} = 0.0;`);
  const body: string[] = [];
  for (const t of range(tokens)) {
    body.push(`    let xa${t} = loadX(${t}u, g * 8u);`);
    body.push(`    let xb${t} = loadX(${t}u, g * 8u + 4u);`);
  }
  for (const r of range(rows)) {
    body.push(`    let w${r} = group(n0 + ${r}u, g);`);
    for (const t of range(tokens)) {
      const v = r * tokens + t;
      body.push(`    acc${v} += dot(w${r}.lo, xa${t}) + dot(w${r}.hi, xb${t});`);
    }
  }
  const reduce: string[] = [];
  if (cfg.subgroups) {
    for (const v of range(values)) {
      reduce.push(`  let s${v} = subgroupAdd(acc${v});`);
      reduce.push(`  if (lane == 0u) { red[${v * slots}u + li / sgSize] = s${v}; }`);
    }
    reduce.push(`  workgroupBarrier();`);
    reduce.push(`  for (var v = li; v < ${values}u; v += ${wg}u) {`);
    reduce.push(`    var sum = 0.0;`);
    reduce.push(
      `    for (var j = 0u; j < ${wg}u / sgSize; j++) { sum += red[v * ${slots}u + j]; }`,
    );
  } else {
    for (const v of range(values)) reduce.push(`  red[${v * slots}u + li] = acc${v};`);
    reduce.push(`  workgroupBarrier();`);
    reduce.push(`  for (var stride = ${wg / 2}u; stride > 0u; stride /= 2u) {`);
    reduce.push(`    if (li < stride) {`);
    for (const v of range(values)) {
      reduce.push(`      red[${v * slots}u + li] += red[${v * slots}u + li + stride];`);
    }
    reduce.push(`    }`);
    reduce.push(`    workgroupBarrier();`);
    reduce.push(`  }`);
    reduce.push(`  for (var v = li; v < ${values}u; v += ${wg}u) {`);
    reduce.push(`    let sum = red[v * ${slots}u];`);
  }
  reduce.push(`    let r = v / ${tokens}u;`);
  reduce.push(`    let t = v % ${tokens}u;`);
  reduce.push(`    if (n0 + r < p.N) {`);
  reduce.push(`      let col = p.oOff + n0 + r;`);
  reduce.push(
    `      store(t * p.ldo + col, sum, ${epilogue === "" ? "0.0" : "epilogue(t, col)"});`,
  );
  reduce.push(`    }`);
  reduce.push(`  }`);
  const builtins = cfg.subgroups
    ? `,
  @builtin(subgroup_size) sgSize: u32,
  @builtin(subgroup_invocation_id) lane: u32,`
    : ",";
  return `${prelude}${QUANT_PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: ${quantWeightBinding(format)};
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<${vecX ? "vec4<f32>" : "f32"}>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
${quantScaleFns(format)}
${quantGroupFn(format)}
${loadX}
${quantStoreFn("y")}
${epilogueWgsl(epilogue, vecX)}

var<workgroup> red: array<f32, ${values * slots}>;

@compute @workgroup_size(${wg})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32${builtins}
) {
  _ = &scales;
  _ = &aux;
  // Rows past 65,535 workgroups fold into a second grid dimension; a whole workgroup past N returns.
  let n0 = (wid.x + wid.y * nwg.x) * ${rows}u;
  if (n0 >= p.N) { return; }
${decl.join("\n")}
  for (var g = li; g < p.wpr; g += ${wg}u) {
${body.join("\n")}
  }
${reduce.join("\n")}
}
`;
}

/**
 * The matrix–vector kernel's WGSL (memoised) for `tokens` rows of x. `vecX`: x is read as vec4
 * (K % 4 = 0). `epilogue` as for the other forward kernels; `prelude` is
 * `subgroupPrelude(rt.variants)` (the directive some compilers need before subgroup code).
 */
export const quantGemvWgsl: (
  format: QuantKernelFormat,
  cfg: QuantGemvConfig,
  tokens: number,
  vecX: boolean,
  epilogue: string,
  prelude: string,
) => string = memoWgsl(gemvWgslUncached);
