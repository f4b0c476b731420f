/**
 * GPU variants of the frozen-weight matmuls for many tokens (prefill and training), tiled through
 * workgroup memory:
 *
 * - forward  y[t, o] = α·Σᵢ x[t, i]·W[o, i] + e(t, o) + β·y[t, o]
 * - backward dx[t, i] = α·Σₒ dy[t, o]·W[o, i] + β·dx[t, i]
 *
 * A workgroup owns a BM × BN block of the output. It walks the reduction in steps of BK: each step
 * stages a BM × BK tile of the activations (x forward, dy backward) and a BK-deep tile of W into
 * workgroup memory, W dequantized once there from its storage format, then every invocation
 * multiplies a TM × TN block of the output out of workgroup memory with vec4 reads. Each weight is
 * thus decoded once per workgroup and reused by all BM tokens of the block, where the CPU-adapter
 * kernels (`wgsl.ts`) decode it again for every few tokens.
 *
 * Both tiles are stored reduction-major (`As[r][m]`, `Bs[r][n]`), so an invocation reads four
 * consecutive rows or columns as one vec4. An invocation's rows and columns come in chunks of four
 * spread across the tile (chunk c starts at c·4·WY, resp. c·4·WX): neighbouring invocations read
 * neighbouring vec4s, which keeps workgroup-memory reads free of bank conflicts.
 *
 * The loads are coalesced along each row of the global tensors: activations as vec4s where the
 * layout allows (transposed into the tile in registers, a 4 × 4 block per invocation), weights a
 * group of 8 columns (one u32 of 4-bit codes, a vec4 of 16-bit pairs, two vec4 of f32) per load.
 * Accumulation is f32 throughout.
 */
import { chunkedBlock } from "../matmul/wgsl.ts";
import { memoWgsl } from "../runtime/memo.ts";
import {
  epilogueWgsl,
  isHalfFormat,
  QUANT_PARAMS_WGSL,
  type QuantKernelFormat,
  quantScaleFns,
  quantStoreFn,
} from "./wgsl.ts";

/** Workgroup tile of the GPU frozen matmuls. */
export interface QuantTileConfig {
  /** Tokens per workgroup, a multiple of TM. */
  bm: number;
  /** Output features per workgroup (W rows forward, W columns backward); a multiple of 8. */
  bn: number;
  /** Reduction step (W columns forward, W rows backward); a multiple of 8. */
  bk: number;
  /** Tokens per invocation, a multiple of 4. */
  tm: number;
  /** Outputs per invocation, a multiple of 4. */
  tn: number;
}

/** Which product a tiled kernel computes. */
export type QuantTileMode = "forward" | "backward";

/** Invocations per workgroup along outputs (x) and tokens (y). */
export function tileWorkgroup(cfg: QuantTileConfig): { wx: number; wy: number } {
  return { wx: cfg.bn / cfg.tn, wy: cfg.bm / cfg.tm };
}

/** Bytes of workgroup memory a tile uses: both tiles in f32. */
export function tileStorageBytes(cfg: QuantTileConfig): number {
  return 4 * cfg.bk * (cfg.bm + cfg.bn);
}

/** Throws unless the tile's sizes fit together (whole vec4 chunks, whole weight groups). */
export function checkTile(cfg: QuantTileConfig): void {
  const { bm, bn, bk, tm, tn } = cfg;
  const ok = [bm, bn, bk, tm, tn].every((v) => Number.isInteger(v) && v > 0) &&
    tm % 4 === 0 && tn % 4 === 0 && bm % tm === 0 && bn % tn === 0 && bk % 8 === 0 &&
    bn % 8 === 0;
  if (!ok) {
    throw new RangeError(
      `tile ${tileName(cfg)}: TM and TN must be multiples of 4 dividing BM and BN; BN and BK ` +
        `multiples of 8`,
    );
  }
}

/** A short name for labels, e.g. `128x128x16-8x8`. */
export function tileName(cfg: QuantTileConfig): string {
  return `${cfg.bm}x${cfg.bn}x${cfg.bk}-${cfg.tm}x${cfg.tn}`;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * `struct G8` and `fn group(row, g) -> G8`: the 8 dequantized weights W[row, 8g .. 8g+7], zero
 * outside the matrix (rows ≥ N, groups ≥ wpr), so edge tiles need no branch in the multiply loop.
 * Binding 1 (`wq`) must be declared as {@link quantWeightBinding} gives.
 */
export function quantGroupFn(format: QuantKernelFormat): string {
  const head = `struct G8 { lo: vec4<f32>, hi: vec4<f32> }
fn group(row: u32, g: u32) -> G8 {
  if (row >= p.N || g >= p.wpr) { return G8(vec4<f32>(0.0), vec4<f32>(0.0)); }`;
  if (format === "f32") {
    return `${head}
  let i = (row * p.K) / 4u + g * 2u;
  return G8(wq[i], wq[i + 1u]);
}`;
  }
  if (isHalfFormat(format)) {
    return `${head}
  let q = wq[row * p.wpr + g];
  return G8(vec4<f32>(halves(q.x), halves(q.y)), vec4<f32>(halves(q.z), halves(q.w)));
}`;
  }
  const code = (e: number) => (e === 7 ? "(word >> 28u)" : `((word >> ${4 * e}u) & 15u)`);
  const blk = "(g * 8u) / p.blockSize";
  if (format === "int4") {
    const v = (h: number) =>
      `vec4<f32>(${range(4).map((e) => `f32${code(4 * h + e)}`).join(", ")})`;
    return `${head}
  let word = wq[row * p.wpr + g];
  let s = blockScale(row, ${blk});
  let z = vec4<f32>(blockZero(row, ${blk}));
  return G8((${v(0)} - z) * s, (${v(1)} - z) * s);
}`;
  }
  const v = (h: number) =>
    `vec4<f32>(${range(4).map((e) => `nf4Level${code(4 * h + e)}`).join(", ")})`;
  return `${head}
  let word = wq[row * p.wpr + g];
  let s = blockScale(row, ${blk});
  return G8(${v(0)} * s, ${v(1)} * s);
}`;
}

/** The WGSL array type `quantGroupFn` reads W through: one group of 8 columns per load. */
export function quantWeightBinding(format: QuantKernelFormat): string {
  if (format === "f32") return "array<vec4<f32>>";
  return isHalfFormat(format) ? "array<vec4<u32>>" : "array<u32>";
}

function tiledWgslUncached(
  format: QuantKernelFormat,
  mode: QuantTileMode,
  cfg: QuantTileConfig,
  vecA: boolean,
  epilogue: string,
): string {
  checkTile(cfg);
  if (mode === "backward" && epilogue !== "") {
    throw new RangeError("the backward takes no epilogue");
  }
  const { bm, bn, bk, tm, tn } = cfg;
  const { wx, wy } = tileWorkgroup(cfg);
  const threads = wx * wy;
  const fwd = mode === "forward";
  const aName = fwd ? "x" : "dy";
  const outName = fwd ? "y" : "dx";
  // The reduction's length R and the output's width; the activations' row base of token t.
  const reduceLen = fwd ? "p.K" : "p.N";
  const outWidth = fwd ? "p.N" : "p.K";
  const aBase = (t: string) => (fwd ? `${t} * p.K` : `${t} * p.ldo + p.oOff`);

  // One 4-wide run of activations of token t at reduction index r (r % 4 = 0), zero outside.
  const loadA4 = vecA
    ? `fn loadA4(t: u32, r: u32) -> vec4<f32> {
  let ok = t < p.M && r < ${reduceLen};
  let tc = min(t, p.M - 1u);
  return select(vec4<f32>(0.0), ${aName}[(${aBase("tc")} + min(r, ${reduceLen} - 4u)) / 4u], ok);
}`
    : `fn loadA4(t: u32, r: u32) -> vec4<f32> {
  let tc = min(t, p.M - 1u);
  let base = ${aBase("tc")};
  let last = ${reduceLen} - 1u;
  var v = vec4<f32>(0.0);
  if (t < p.M) {
${
      range(4).map((e) =>
        `    v[${e}] = select(0.0, ${aName}[base + min(r + ${e}u, last)], r + ${e}u < ${reduceLen});`
      ).join("\n")
    }
  }
  return v;
}`;

  // Stage the activation tile: 4 × 4 blocks (4 tokens × 4 reduction indices), transposed in
  // registers into As[r][m..m+3].
  const aBlocks = (bm * bk) / 16;
  const loadATile = `  for (var b = li; b < ${aBlocks}u; b += ${threads}u) {
    let m = (b / ${bk / 4}u) * 4u;
    let r = (b % ${bk / 4}u) * 4u;
${range(4).map((i) => `    let v${i} = loadA4(m0 + m + ${i}u, k0 + r);`).join("\n")}
${
    range(4).map((e) =>
      `    As[((r + ${e}u) * ${bm}u + m) / 4u] = vec4<f32>(v0[${e}], v1[${e}], v2[${e}], v3[${e}]);`
    ).join("\n")
  }
  }`;

  // Stage the weight tile, one group of 8 columns per load. Forward: W rows are outputs (n),
  // columns the reduction, so the 8 values go to 8 rows of Bs. Backward: W rows are the reduction,
  // columns the outputs, so they are two vec4s of one row of Bs.
  const loadBTile = fwd
    ? `  for (var b = li; b < ${(bn * bk) / 8}u; b += ${threads}u) {
    let n = b / ${bk / 8}u;
    let g = b % ${bk / 8}u;
    let w = group(n0 + n, k0 / 8u + g);
${
      range(8).map((e) =>
        `    Bs[((g * 8u + ${e}u) * ${bn}u + n) / 4u][n % 4u] = w.${e < 4 ? "lo" : "hi"}[${e % 4}];`
      ).join("\n")
    }
  }`
    : `  for (var b = li; b < ${(bn * bk) / 8}u; b += ${threads}u) {
    let r = b / ${bn / 8}u;
    let g = b % ${bn / 8}u;
    let w = group(k0 + r, n0 / 8u + g);
    Bs[(r * ${bn}u + g * 8u) / 4u] = w.lo;
    Bs[(r * ${bn}u + g * 8u) / 4u + 1u] = w.hi;
  }`;

  const block = chunkedBlock(tm, tn, wx, wy);
  const step = block.step(
    (c) => `As[(kk * ${bm}u + ty4 + ${c * 4 * wy}u) / 4u]`,
    (d) => `Bs[(kk * ${bn}u + tx4 + ${d * 4 * wx}u) / 4u]`,
  );
  const term = epilogue === "" ? "0.0" : "epilogue(t, col)";
  const store = block.store(
    "t",
    "m0 + ty4",
    "p.M",
    "n0 + tx4",
    fwd
      ? (n, v) =>
        `if (${n} < ${outWidth}) { let col = p.oOff + ${n}; store(t * p.ldo + col, ${v}, ${term}); }`
      : (n, v) => `if (${n} < ${outWidth}) { store(t * p.K + ${n}, ${v}, 0.0); }`,
  );

  return `${QUANT_PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: ${quantWeightBinding(format)};
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;
@group(0) @binding(4) var<storage, read> ${aName}: array<${vecA ? "vec4<f32>" : "f32"}>;
@group(0) @binding(5) var<storage, read_write> ${outName}: array<f32>;
${quantScaleFns(format)}
${quantGroupFn(format)}
${loadA4}
${quantStoreFn(outName)}
${fwd ? epilogueWgsl(epilogue, vecA) : ""}

var<workgroup> As: array<vec4<f32>, ${(bk * bm) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(bk * bn) / 4}>;

@compute @workgroup_size(${wx}, ${wy})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  _ = &scales;
  _ = &aux;
  let n0 = wid.x * ${bn}u;
  let m0 = wid.y * ${bm}u;
  let tx4 = lid.x * 4u;
  let ty4 = lid.y * 4u;
${block.decl.join("\n")}
  for (var k0 = 0u; k0 < ${reduceLen}; k0 += ${bk}u) {
${loadATile}
${loadBTile}
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
${step.join("\n")}
    }
    workgroupBarrier();
  }
${store.join("\n")}
}
`;
}

/**
 * The tiled kernel's WGSL (memoised). `vecA`: the activations are read as vec4 (forward K % 4 = 0;
 * backward N, the row stride and the window offset multiples of 4). `epilogue` as for the
 * CPU-adapter forward kernels (`ProductEpilogue.wgsl(EPILOGUE_FIRST_BINDING, vecA)`), "" for none.
 */
export const quantTiledWgsl: (
  format: QuantKernelFormat,
  mode: QuantTileMode,
  cfg: QuantTileConfig,
  vecA: boolean,
  epilogue: string,
) => string = memoWgsl(tiledWgslUncached);

/** Large products (training at 4096 wide): 128 × 128 per workgroup, 8 × 8 per invocation. */
export const TILE_LARGE: QuantTileConfig = { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 };
/** Medium products: 64 × 64 per workgroup, 4 × 4 per invocation. */
export const TILE_MEDIUM: QuantTileConfig = { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4 };
/** Few tokens (8–63): 16 tokens × 64 outputs per workgroup. */
export const TILE_FEW: QuantTileConfig = { bm: 16, bn: 64, bk: 32, tm: 4, tn: 4 };

/**
 * The tile for `tokens` × `outputs` on a device with `storageBytes` of workgroup memory, or null
 * where the CPU-adapter kernel serves better (fewer than 8 tokens: a matrix-vector product).
 * Large tiles need enough workgroups to fill a GPU; smaller ones keep edge waste low.
 */
export function chooseTile(
  tokens: number,
  outputs: number,
  storageBytes: number,
): QuantTileConfig | null {
  if (tokens < 8) return null;
  const fits = (c: QuantTileConfig) => tileStorageBytes(c) <= storageBytes;
  if (tokens >= 256 && outputs >= 512 && fits(TILE_LARGE)) return TILE_LARGE;
  if (tokens >= 32 && fits(TILE_MEDIUM)) return TILE_MEDIUM;
  if (fits(TILE_FEW)) return TILE_FEW;
  return null;
}
