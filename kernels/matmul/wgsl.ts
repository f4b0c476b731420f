/**
 * WGSL generators for C = alpha·op(A)·op(B) + beta·C, batched, any sizes.
 *
 * Three families, all parameterised by their tile shape so that each device can get its own:
 * - `naive`: one output per invocation; the baseline every benchmark ratio is measured against.
 * - `register`: each invocation keeps a TM×TN block of C in registers and never touches workgroup
 *   memory, so there are no barriers. On llvmpipe (Mesa's CPU Vulkan) a barrier switches every
 *   SIMD chunk of the workgroup in and out of a coroutine, and loads are per-lane gathers; a large
 *   register block amortises each gathered element over TM (or TN) multiply-adds.
 * - `shared`: the classic GPU kernel: the workgroup stages BM×BK and BK×BN tiles of A and B in
 *   workgroup memory behind two barriers per K-chunk, then each invocation does TM×TN outer
 *   products from there. This is what a real GPU wants. Where TM and TN are multiples of 4, an
 *   invocation's rows and columns come in vec4 chunks spread across the tile (chunk c at c·4·WY),
 *   so neighbouring invocations read neighbouring vec4s of workgroup memory (no bank conflicts),
 *   and the tiles are staged with consecutive invocations on consecutive addresses of each
 *   operand's contiguous dimension, whatever the transposes (coalesced global loads).
 *
 * Transposes are baked into the source (they change the index arithmetic); sizes, batch strides,
 * alpha and beta come from a uniform buffer so one compiled pipeline serves every problem size.
 */

/** Tile shapes of the kernel families; every field is a tuning parameter. */
export type MatmulKernelConfig =
  | { kind: "naive"; wx: number; wy: number }
  | { kind: "register"; tm: number; tn: number; wx: number; wy: number }
  | { kind: "shared"; tm: number; tn: number; wx: number; wy: number; bk: number };

/** Transposes (and, for the register kernel, vec4 reads) baked into a generated kernel. */
export interface MatmulLayout {
  /** A is stored k×m. */
  transA: boolean;
  /** B is stored n×k. */
  transB: boolean;
  /**
   * Read A as vec4: along K when A is m×k (needs K % 4 = 0), along M when transposed
   * (needs M % 4 = 0 and tm % 4 = 0). {@link vec4Layout} decides when it is valid.
   */
  vecA?: boolean;
  /** Read B as vec4: along N when B is k×n (needs N % 4 = 0, tn % 4 = 0), along K when transposed. */
  vecB?: boolean;
  /** Batch-reduce: sum `p.reduce` consecutive batch entries into each output (a loop around K). */
  reduce?: boolean;
}

/**
 * Which operands the register kernel may read as vec4 for this problem. On llvmpipe every
 * storage load is a per-lane gather, and one vec4 gather costs far less than four scalar ones.
 */
export function vec4Layout(
  cfg: MatmulKernelConfig,
  spec: { m: number; n: number; k: number; transA: boolean; transB: boolean },
): MatmulLayout {
  const { m, n, k, transA, transB } = spec;
  if (cfg.kind !== "register") return { transA, transB };
  const vecA = transA ? m % 4 === 0 && cfg.tm % 4 === 0 : k % 4 === 0;
  const vecB = transB ? k % 4 === 0 : n % 4 === 0 && cfg.tn % 4 === 0;
  return { transA, transB, vecA, vecB };
}

/** Layout of the uniform parameter block (9 × 4 bytes, sent as 48), shared with the host code. */
export const MATMUL_PARAMS_WGSL = `struct Params {
  M: u32, N: u32, K: u32,
  batchStrideA: u32, batchStrideB: u32, batchStrideC: u32,
  alpha: f32, beta: f32,
  reduce: u32,
}`;

/**
 * Start of the operand-offset scope for output batch `z`: the offsets of A and B, and for a
 * batch-reduce kernel the opening of the loop over the entries summed into this output (closed by
 * {@link batchClose}).
 */
function batchOpen(layout: MatmulLayout, z: string): string {
  if (!layout.reduce) {
    return `  let aOff = ${z} * p.batchStrideA;\n  let bOff = ${z} * p.batchStrideB;`;
  }
  return `  for (var rb = ${z} * p.reduce; rb < (${z} + 1u) * p.reduce; rb++) {
  let aOff = rb * p.batchStrideA;
  let bOff = rb * p.batchStrideB;`;
}

function batchClose(layout: MatmulLayout): string {
  return layout.reduce ? "  }" : "";
}

/** Bindings: uniform params, A, B (each as f32 or vec4<f32> elements), C. */
function bindings(vecA = false, vecB = false): string {
  const elem = (v: boolean) => (v ? "vec4<f32>" : "f32");
  return `@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${elem(vecA)}>;
@group(0) @binding(2) var<storage, read> b: array<${elem(vecB)}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;`;
}

// Store one result, reading C only when beta ≠ 0 so that garbage (or NaN poison) in an
// overwritten C never leaks into the output.
const STORE_FN = `fn storeC(idx: u32, acc: f32) {
  var v = p.alpha * acc;
  if (p.beta != 0.0) { v = fma(p.beta, c[idx], v); }
  c[idx] = v;
}`;

/** Index of A's element (row m, inner k), relative to the batch offset. */
function aIndex(layout: MatmulLayout, m: string, k: string): string {
  return layout.transA ? `${k} * p.M + ${m}` : `${m} * p.K + ${k}`;
}

/** Index of B's element (inner k, column n), relative to the batch offset. */
function bIndex(layout: MatmulLayout, k: string, n: string): string {
  return layout.transB ? `${n} * p.K + ${k}` : `${k} * p.N + ${n}`;
}

function checkConfig(cfg: MatmulKernelConfig): void {
  const positive = (name: string, v: number, max: number) => {
    if (!Number.isInteger(v) || v < 1 || v > max) {
      throw new RangeError(
        `matmul kernel ${cfg.kind}: ${name}=${v} must be an integer in [1, ${max}]`,
      );
    }
  };
  positive("wx", cfg.wx, 256);
  positive("wy", cfg.wy, 256);
  if (cfg.wx * cfg.wy > 256) {
    throw new RangeError(`matmul kernel ${cfg.kind}: workgroup ${cfg.wx}×${cfg.wy} exceeds 256`);
  }
  if (cfg.kind !== "naive") {
    positive("tm", cfg.tm, 16);
    positive("tn", cfg.tn, 16);
  }
  if (cfg.kind === "shared") positive("bk", cfg.bk, 64);
}

/** Outputs (rows, cols) one workgroup computes, for the dispatch grid. */
export function workgroupTile(cfg: MatmulKernelConfig): { rows: number; cols: number } {
  if (cfg.kind === "naive") return { rows: cfg.wy, cols: cfg.wx };
  return { rows: cfg.wy * cfg.tm, cols: cfg.wx * cfg.tn };
}

/** A short name for labels and benchmark tables, e.g. `register-8x8-wg8x8`. */
export function kernelName(cfg: MatmulKernelConfig): string {
  switch (cfg.kind) {
    case "naive":
      return `naive-wg${cfg.wx}x${cfg.wy}`;
    case "register":
      return `register-${cfg.tm}x${cfg.tn}-wg${cfg.wx}x${cfg.wy}`;
    case "shared":
      return `shared-${cfg.tm}x${cfg.tn}-wg${cfg.wx}x${cfg.wy}-bk${cfg.bk}`;
  }
}

/** Generate the WGSL of a matmul kernel (entry point `main`). */
export function matmulWgsl(cfg: MatmulKernelConfig, layout: MatmulLayout): string {
  // Memoised: a training step records thousands of matmuls, and generating the text is most of
  // the host's cost of recording one.
  const key = JSON.stringify([cfg, layout]);
  let code = generated.get(key);
  if (code === undefined) {
    code = generateMatmulWgsl(cfg, layout);
    generated.set(key, code);
  }
  return code;
}

const generated = new Map<string, string>();

function generateMatmulWgsl(cfg: MatmulKernelConfig, layout: MatmulLayout): string {
  checkConfig(cfg);
  switch (cfg.kind) {
    case "naive":
      return naiveWgsl(cfg, layout);
    case "register":
      return registerWgsl(cfg, layout);
    case "shared":
      return cfg.tm % 4 === 0 && cfg.tn % 4 === 0
        ? sharedChunkedWgsl(cfg, layout)
        : sharedWgsl(cfg, layout);
  }
}

function naiveWgsl(cfg: { wx: number; wy: number }, layout: MatmulLayout): string {
  return `${MATMUL_PARAMS_WGSL}
${bindings()}
${STORE_FN}

@compute @workgroup_size(${cfg.wx}, ${cfg.wy})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.y;
  let col = gid.x;
  if (row >= p.M || col >= p.N) { return; }
  var acc = 0.0;
${batchOpen(layout, "gid.z")}
  for (var k = 0u; k < p.K; k++) {
    acc = fma(a[aOff + ${aIndex(layout, "row", "k")}], b[bOff + ${
    bIndex(layout, "k", "col")
  }], acc);
  }
${batchClose(layout)}
  storeC(gid.z * p.batchStrideC + row * p.N + col, acc);
}
`;
}

/**
 * The register block of an invocation in a chunked tile: TM × TN outputs as (TM/4)·4·(TN/4) vec4
 * accumulators `acc{c}_{i}_{d}`, where row chunk c covers rows c·4·WY + 4·y … + 3 of the tile and
 * column chunk d columns d·4·WX + 4·x … + 3 (x, y: the invocation's place in the workgroup).
 * Neighbouring invocations thus read neighbouring vec4s of workgroup memory. Shared by the dense
 * `shared` kernel and the GPU frozen matmuls (`kernels/quant/tiled.ts`).
 */
export interface ChunkedBlock {
  /** `var acc… = vec4<f32>(0.0);` lines. */
  decl: string[];
  /**
   * One reduction step: the vec4 reads of row chunk c (`aAt(c)`) and column chunk d (`bAt(d)`),
   * then every accumulator's multiply-add.
   */
  step(aAt: (c: number) => string, bAt: (d: number) => string): string[];
  /**
   * The guarded stores: for each of the block's rows, `let ${row} = ${rowBase} + offset;` inside
   * `if (${row} < ${rows})`, then `storeCol(column expression, accumulator element)` for each of
   * its columns (`${colBase} + offset`).
   */
  store(
    row: string,
    rowBase: string,
    rows: string,
    colBase: string,
    storeCol: (col: string, acc: string) => string,
  ): string[];
}

/** The {@link ChunkedBlock} of a TM × TN register block (multiples of 4) in a WX × WY workgroup. */
export function chunkedBlock(tm: number, tn: number, wx: number, wy: number): ChunkedBlock {
  const ac = tm / 4;
  const bc = tn / 4;
  const decl: string[] = [];
  for (const c of range(ac)) {
    for (const i of range(4)) {
      for (const d of range(bc)) decl.push(`  var acc${c}_${i}_${d} = vec4<f32>(0.0);`);
    }
  }
  return {
    decl,
    step(aAt, bAt) {
      const lines: string[] = [];
      for (const c of range(ac)) lines.push(`      let a${c} = ${aAt(c)};`);
      for (const d of range(bc)) lines.push(`      let b${d} = ${bAt(d)};`);
      for (const c of range(ac)) {
        for (const i of range(4)) {
          for (const d of range(bc)) {
            lines.push(
              `      acc${c}_${i}_${d} = fma(vec4<f32>(a${c}[${i}]), b${d}, acc${c}_${i}_${d});`,
            );
          }
        }
      }
      return lines;
    },
    store(row, rowBase, rows, colBase, storeCol) {
      const lines: string[] = [];
      for (const c of range(ac)) {
        for (const i of range(4)) {
          lines.push(`  {`);
          lines.push(`    let ${row} = ${rowBase} + ${c * 4 * wy + i}u;`);
          lines.push(`    if (${row} < ${rows}) {`);
          for (const d of range(bc)) {
            for (const e of range(4)) {
              const col = `${colBase} + ${d * 4 * wx + e}u`;
              lines.push(`      { ${storeCol(`(${col})`, `acc${c}_${i}_${d}[${e}]`)} }`);
            }
          }
          lines.push(`    }`);
          lines.push(`  }`);
        }
      }
      return lines;
    },
  };
}

/**
 * The shared kernel for TM, TN multiples of 4: tiles of vec4 in workgroup memory, rows padded by
 * one vec4 (stores of a transposed stage spread over banks), chunked rows and columns per
 * invocation, and staging loops whose fastest index follows each operand's contiguous dimension.
 */
function sharedChunkedWgsl(
  cfg: { tm: number; tn: number; wx: number; wy: number; bk: number },
  layout: MatmulLayout,
): string {
  const { tm, tn, wx, wy, bk } = cfg;
  const bm = wy * tm;
  const bn = wx * tn;
  const threads = wx * wy;
  const am = bm / 4 + 1; // vec4s per row of tileA, padded
  const bnv = bn / 4 + 1;
  const block = chunkedBlock(tm, tn, wx, wy);
  const step = block.step(
    (c) => `tileA[kk * ${am}u + ly + ${c * wy}u]`,
    (d) => `tileB[kk * ${bnv}u + lx + ${d * wx}u]`,
  );
  const store = block.store(
    "row",
    "tileRow + ly * 4u",
    "p.M",
    "tileCol + lx * 4u",
    (col, acc) => `if (${col} < p.N) { storeC(cOff + row * p.N + ${col}, ${acc}); }`,
  );
  // Staging index e → (row or column, kk): the fastest-varying one is the operand's contiguous
  // dimension (k for a row-major A and a transposed B).
  const aSplit = layout.transA
    ? `let kk = e / ${bm}u;\n      let r = e % ${bm}u;`
    : `let r = e / ${bk}u;\n      let kk = e % ${bk}u;`;
  const bSplit = layout.transB
    ? `let cc = e / ${bk}u;\n      let kk = e % ${bk}u;`
    : `let kk = e / ${bn}u;\n      let cc = e % ${bn}u;`;
  return `${MATMUL_PARAMS_WGSL}
${bindings()}
${STORE_FN}

var<workgroup> tileA: array<vec4<f32>, ${bk * am}>; // [kk][row / 4]
var<workgroup> tileB: array<vec4<f32>, ${bk * bnv}>; // [kk][col / 4]

@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let lx = lid.x;
  let ly = lid.y;
  let li = ly * ${wx}u + lx;
  let tileRow = wg.y * ${bm}u;
  let tileCol = wg.x * ${bn}u;
${block.decl.join("\n")}
  // No early return: every invocation must reach the barriers.
${batchOpen(layout, "wg.z")}
  for (var k0 = 0u; k0 < p.K; k0 += ${bk}u) {
    for (var e = li; e < ${bk * bm}u; e += ${threads}u) {
      ${aSplit}
      let row = tileRow + r;
      let k = k0 + kk;
      var v = 0.0;
      if (row < p.M && k < p.K) { v = a[aOff + ${aIndex(layout, "row", "k")}]; }
      tileA[kk * ${am}u + r / 4u][r % 4u] = v;
    }
    for (var e = li; e < ${bk * bn}u; e += ${threads}u) {
      ${bSplit}
      let col = tileCol + cc;
      let k = k0 + kk;
      var v = 0.0;
      if (col < p.N && k < p.K) { v = b[bOff + ${bIndex(layout, "k", "col")}]; }
      tileB[kk * ${bnv}u + cc / 4u][cc % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
${step.join("\n")}
    }
    workgroupBarrier();
  }
${batchClose(layout)}
  let cOff = wg.z * p.batchStrideC;
${store.join("\n")}
}
`;
}

/** Store the TM×TN block `acc{i}_{j}` at (row0, col0) of batch offset `cOff`, inside bounds. */
function storeBlock(tm: number, tn: number): string[] {
  const lines: string[] = [];
  for (const i of range(tm)) {
    lines.push(`  if (row0 + ${i}u < p.M) {`);
    lines.push(`    let rc = cOff + (row0 + ${i}u) * p.N + col0;`);
    for (const j of range(tn)) {
      lines.push(`    if (col0 + ${j}u < p.N) { storeC(rc + ${j}u, acc${i}_${j}); }`);
    }
    lines.push(`  }`);
  }
  return lines;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function registerWgsl(
  cfg: { tm: number; tn: number; wx: number; wy: number },
  layout: MatmulLayout,
): string {
  const { tm, tn } = cfg;
  const vecA = layout.vecA ?? false;
  const vecB = layout.vecB ?? false;
  if (vecA && layout.transA && tm % 4 !== 0) {
    throw new RangeError("vecA with transA needs tm % 4 = 0");
  }
  if (vecB && !layout.transB && tn % 4 !== 0) throw new RangeError("vecB needs tn % 4 = 0");
  // Walk K four at a time when an operand is read as vec4 along K.
  const step = (vecA && !layout.transA) || (vecB && layout.transB) ? 4 : 1;
  // Rows/columns past the edge are clamped to the last valid one: every load stays in bounds
  // without a branch in the inner loop, and the duplicated results are simply not stored.
  const aRowStride = layout.transA ? "1u" : "p.K";
  const aKStride = layout.transA ? "p.M" : "1u";
  const bColStride = layout.transB ? "p.K" : "1u";
  const bKStride = layout.transB ? "1u" : "p.N";
  const lines: string[] = [];
  for (const i of range(tm)) {
    for (const j of range(tn)) lines.push(`  var acc${i}_${j} = 0.0;`);
  }
  lines.push(batchOpen(layout, "gid.z"));
  for (const i of range(tm)) {
    lines.push(`  let ra${i} = aOff + min(row0 + ${i}u, p.M - 1u) * ${aRowStride};`);
  }
  for (const j of range(tn)) {
    lines.push(`  let cb${j} = bOff + min(col0 + ${j}u, p.N - 1u) * ${bColStride};`);
  }
  lines.push(`  for (var k = 0u; k < p.K; k += ${step}u) {`);
  // a(i, kk) and b(kk, j): WGSL expressions for the values of this K-step.
  let aValue: (i: number, kk: number) => string;
  let bValue: (kk: number, j: number) => string;
  if (vecA && !layout.transA) {
    for (const i of range(tm)) lines.push(`    let va${i} = a[(ra${i} + k) / 4u];`);
    aValue = (i, kk) => `va${i}[${kk}]`;
  } else if (vecA) {
    for (const kk of range(step)) {
      for (const g of range(tm / 4)) {
        lines.push(
          `    let va${kk}_${g} = a[(aOff + (k + ${kk}u) * p.M + min(row0 + ${
            4 * g
          }u, p.M - 4u)) / 4u];`,
        );
      }
    }
    aValue = (i, kk) => `va${kk}_${Math.floor(i / 4)}[${i % 4}]`;
  } else {
    for (const kk of range(step)) {
      for (const i of range(tm)) {
        lines.push(`    let a${i}_${kk} = a[ra${i} + (k + ${kk}u) * ${aKStride}];`);
      }
    }
    aValue = (i, kk) => `a${i}_${kk}`;
  }
  if (vecB && layout.transB) {
    for (const j of range(tn)) lines.push(`    let vb${j} = b[(cb${j} + k) / 4u];`);
    bValue = (kk, j) => `vb${j}[${kk}]`;
  } else if (vecB) {
    for (const kk of range(step)) {
      for (const g of range(tn / 4)) {
        lines.push(
          `    let vb${kk}_${g} = b[(bOff + (k + ${kk}u) * p.N + min(col0 + ${
            4 * g
          }u, p.N - 4u)) / 4u];`,
        );
      }
    }
    bValue = (kk, j) => `vb${kk}_${Math.floor(j / 4)}[${j % 4}]`;
  } else {
    for (const kk of range(step)) {
      for (const j of range(tn)) {
        lines.push(`    let b${kk}_${j} = b[cb${j} + (k + ${kk}u) * ${bKStride}];`);
      }
    }
    bValue = (kk, j) => `b${kk}_${j}`;
  }
  for (const kk of range(step)) {
    for (const i of range(tm)) {
      for (const j of range(tn)) {
        lines.push(`    acc${i}_${j} = fma(${aValue(i, kk)}, ${bValue(kk, j)}, acc${i}_${j});`);
      }
    }
  }
  lines.push(`  }`);
  lines.push(batchClose(layout));
  lines.push(`  let cOff = gid.z * p.batchStrideC;`);
  lines.push(...storeBlock(tm, tn));
  return `${MATMUL_PARAMS_WGSL}
${bindings(vecA, vecB)}
${STORE_FN}

@compute @workgroup_size(${cfg.wx}, ${cfg.wy})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * ${tm}u;
  let col0 = gid.x * ${tn}u;
  if (row0 >= p.M || col0 >= p.N) { return; }
${lines.join("\n")}
}
`;
}

function sharedWgsl(
  cfg: { tm: number; tn: number; wx: number; wy: number; bk: number },
  layout: MatmulLayout,
): string {
  const { tm, tn, wx, wy, bk } = cfg;
  const bm = wy * tm;
  const bn = wx * tn;
  const threads = wx * wy;
  const lines: string[] = [];
  for (const i of range(tm)) for (const j of range(tn)) lines.push(`  var acc${i}_${j} = 0.0;`);
  const compute: string[] = [];
  for (const i of range(tm)) {
    compute.push(`      let a${i} = tileA[kk * ${bm}u + ly * ${tm}u + ${i}u];`);
  }
  for (const j of range(tn)) {
    compute.push(`      let b${j} = tileB[kk * ${bn}u + lx * ${tn}u + ${j}u];`);
  }
  for (const i of range(tm)) {
    for (const j of range(tn)) {
      compute.push(`      acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
    }
  }
  const store = storeBlock(tm, tn);
  return `${MATMUL_PARAMS_WGSL}
${bindings()}
${STORE_FN}

var<workgroup> tileA: array<f32, ${bk * bm}>; // [kk][row]
var<workgroup> tileB: array<f32, ${bk * bn}>; // [kk][col]

@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let lx = lid.x;
  let ly = lid.y;
  let li = ly * ${wx}u + lx;
  let tileRow = wg.y * ${bm}u;
  let tileCol = wg.x * ${bn}u;
${lines.join("\n")}
  // No early return: every invocation must reach the barriers.
${batchOpen(layout, "wg.z")}
  for (var k0 = 0u; k0 < p.K; k0 += ${bk}u) {
    for (var e = li; e < ${bk * bm}u; e += ${threads}u) {
      let kk = e / ${bm}u;
      let r = tileRow + e % ${bm}u;
      let k = k0 + kk;
      var v = 0.0;
      if (r < p.M && k < p.K) { v = a[aOff + ${aIndex(layout, "r", "k")}]; }
      tileA[e] = v;
    }
    for (var e = li; e < ${bk * bn}u; e += ${threads}u) {
      let kk = e / ${bn}u;
      let col = tileCol + e % ${bn}u;
      let k = k0 + kk;
      var v = 0.0;
      if (col < p.N && k < p.K) { v = b[bOff + ${bIndex(layout, "k", "col")}]; }
      tileB[e] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
${compute.join("\n")}
    }
    workgroupBarrier();
  }
${batchClose(layout)}
  let row0 = tileRow + ly * ${tm}u;
  let col0 = tileCol + lx * ${tn}u;
  let cOff = wg.z * p.batchStrideC;
${store.join("\n")}
}
`;
}
