/**
 * WGSL for matmuls against a frozen 4-bit weight W (rows × cols = [out, in]), dequantized in
 * registers, never materialised:
 *
 * - forward  y[t, o] = α·Σᵢ x[t, i]·W[o, i] + β·y[t, o]   (decode when M = 1, prefill/training)
 * - backward dx[t, i] = α·Σₒ dy[t, o]·W[o, i] + β·dx[t, i] (gradient through the frozen layer)
 *
 * One u32 word holds 8 consecutive codes of a row, so the kernels walk K a word at a time; a word
 * never straddles a scale block (block sizes are multiples of 8). Format `f32` is the same kernel
 * reading an f32 weight (two vec4 per step): the fp32 baseline every 4-bit ratio is measured
 * against, with identical tiling. Formats `bf16` and `f16` read a vec4 of words (8 values) per
 * step, rows padded with zeros to a multiple of 8 columns: lossless storage of 16-bit checkpoints.
 *
 * The output-side tensor (y forward, dy backward) may be a column window of a wider one: row
 * stride `ldo`, first column `oOff` — a weight stored in row blocks writes (reads) its columns.
 */
import { vec4ElementWgsl } from "../runtime/epilogue.ts";
import { NF4_LEVELS } from "./nf4.ts";
import { memoWgsl } from "../runtime/memo.ts";
import { uniformLayout } from "../runtime/launch.ts";

/** Storage format of W as the kernels see it (`nf4dq`: NF4 with double-quantized absmax). */
export type QuantKernelFormat = "nf4" | "nf4dq" | "int4" | "f32" | "bf16" | "f16";

/** Formats holding one 16-bit value per half word (8 values per vec4 of words). */
export function isHalfFormat(format: QuantKernelFormat): format is "bf16" | "f16" {
  return format === "bf16" || format === "f16";
}

/** Register tile of the forward kernel: TM tokens × TN output rows per invocation. */
export interface QuantForwardConfig {
  /** Tokens per invocation. */
  tm: number;
  /** Output rows per invocation. */
  tn: number;
  /** Workgroup width (over output rows). */
  wx: number;
  /** Workgroup height (over tokens). */
  wy: number;
  /**
   * Read four words per row and step ({@link quantForwardWideWgsl}) when the shape allows it
   * (default true); false keeps the one-word kernel.
   */
  wide?: boolean;
}

/** Register tile of the backward kernel: TM tokens × TW words (8·TW input columns). */
export interface QuantBackwardConfig {
  /** Tokens per invocation. */
  tm: number;
  /** Packed words (8 input columns each) per invocation. */
  tw: number;
  /** Workgroup width (over words). */
  wx: number;
  /** Workgroup height (over tokens). */
  wy: number;
}

/**
 * The uniform block of the quantized matmuls, declared once for WGSL and the host: M tokens, N
 * weight rows, K columns, words / blocks / zero-point words per row, the block size, the
 * double-quantization group and offset, α, β, the output's leading dimension and first row.
 */
export const QUANT_PARAMS = uniformLayout(
  "Params",
  [
    ["M", "u32"],
    ["N", "u32"],
    ["K", "u32"],
    ["wpr", "u32"],
    ["bpr", "u32"],
    ["blockSize", "u32"],
    ["zpr", "u32"],
    ["dqGroup", "u32"],
    ["dqOffset", "f32"],
    ["alpha", "f32"],
    ["beta", "f32"],
    ["ldo", "u32"],
    ["oOff", "u32"],
  ] as const,
);

/** The WGSL struct of {@link QUANT_PARAMS}. */
export const QUANT_PARAMS_WGSL: string = QUANT_PARAMS.wgsl;

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** NF4 level of a 4-bit code as a tree of 15 selects: no memory access, no private array. */
function nf4LevelFn(): string {
  const lit = (v: number) => {
    const s = v.toPrecision(9);
    return s.includes(".") || s.includes("e") ? s : `${s}.0`;
  };
  let level = NF4_LEVELS.map(lit);
  const lines: string[] = [];
  for (let bit = 0; bit < 4; bit++) {
    const next: string[] = [];
    for (let i = 0; i < level.length; i += 2) {
      const name = `l${bit}_${i / 2}`;
      lines.push(`  let ${name} = select(${level[i]}, ${level[i + 1]}, (q & ${1 << bit}u) != 0u);`);
      next.push(name);
    }
    level = next;
  }
  return `fn nf4Level(q: u32) -> f32 {\n${lines.join("\n")}\n  return ${level[0]};\n}`;
}

function bindings(
  format: QuantKernelFormat,
  xName: string,
  yName: string,
  xVec4: boolean,
  wideWords = false,
): string {
  const w = format === "f32"
    ? "array<vec4<f32>>"
    : wideWords || isHalfFormat(format)
    ? "array<vec4<u32>>"
    : "array<u32>";
  return `@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: ${w};
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;
@group(0) @binding(4) var<storage, read> ${xName}: array<${xVec4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(5) var<storage, read_write> ${yName}: array<f32>;`;
}

/** Helpers every format needs: block scale (and int4 zero point) of (row, word). */
export function quantScaleFns(format: QuantKernelFormat): string {
  switch (format) {
    case "nf4":
      return `${nf4LevelFn()}
fn blockScale(row: u32, blk: u32) -> f32 {
  return scales[row * p.bpr + blk];
}`;
    case "nf4dq":
      return `${nf4LevelFn()}
fn blockScale(row: u32, blk: u32) -> f32 {
  let i = row * p.bpr + blk;
  let code = extractBits(bitcast<i32>(aux[i >> 2u]), (i & 3u) * 8u, 8u); // sign-extended int8
  return f32(code) * scales[i / p.dqGroup] + p.dqOffset;
}`;
    case "int4":
      return `fn blockScale(row: u32, blk: u32) -> f32 {
  return scales[row * p.bpr + blk];
}
fn blockZero(row: u32, g: u32) -> f32 {
  return f32((aux[row * p.zpr + (g >> 3u)] >> ((g & 7u) * 4u)) & 15u);
}`;
    case "f32":
      return "";
    case "bf16":
      // bf16 is the top half of an f32: the low half-word widens by a shift, the high by a mask.
      return `fn halves(q: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(q << 16u), bitcast<f32>(q & 0xffff0000u));
}`;
    case "f16":
      return `fn halves(q: u32) -> vec2<f32> { return unpack2x16float(q); }`;
  }
}

/**
 * Backward-kernel decode: WGSL lines that define `w{tag}_{e}` (e = 0..7), the 8 dequantized
 * weights of word `wordExpr` of row `rowExpr`, whose block index the caller holds in `blk{tag}`.
 * Rows change every step, so the scale is loaded each time.
 */
function decodeWord(
  format: QuantKernelFormat,
  tag: string,
  rowExpr: string,
  wordExpr: string,
): string[] {
  const out: string[] = [];
  if (format === "f32" || isHalfFormat(format)) {
    if (format === "f32") {
      out.push(`    let lo${tag} = wq[(${rowExpr} * p.K) / 4u + ${wordExpr} * 2u];`);
      out.push(`    let hi${tag} = wq[(${rowExpr} * p.K) / 4u + ${wordExpr} * 2u + 1u];`);
    } else {
      out.push(`    let q${tag} = wq[${rowExpr} * p.wpr + ${wordExpr}];`);
      out.push(`    let lo${tag} = vec4<f32>(halves(q${tag}.x), halves(q${tag}.y));`);
      out.push(`    let hi${tag} = vec4<f32>(halves(q${tag}.z), halves(q${tag}.w));`);
    }
    for (const e of range(8)) {
      out.push(`    let w${tag}_${e} = ${e < 4 ? "lo" : "hi"}${tag}.${"xyzw"[e % 4]};`);
    }
    return out;
  }
  out.push(`    let word${tag} = wq[${rowExpr} * p.wpr + ${wordExpr}];`);
  out.push(`    let s${tag} = blockScale(${rowExpr}, blk${tag});`);
  if (format === "int4") {
    out.push(`    let zs${tag} = blockZero(${rowExpr}, blk${tag}) * s${tag};`);
  }
  for (const e of range(8)) {
    const code = `((word${tag} >> ${4 * e}u) & 15u)`;
    out.push(
      format === "int4"
        ? `    let w${tag}_${e} = fma(f32${code}, s${tag}, -zs${tag});`
        : `    let w${tag}_${e} = nf4Level${code} * s${tag};`,
    );
  }
  return out;
}

/**
 * Forward-kernel decode of word `w` of row `rowExpr` into two vec4 `lo{tag}`, `hi{tag}` (codes or
 * levels, unscaled), with the block scale `s{tag}` (and `zs{tag}` = zero·scale) reloaded only at a
 * block's first word: the caller declares them as `var` before a loop that starts at word 0.
 */
function decodeWordVec4(format: QuantKernelFormat, tag: string, rowExpr: string): string[] {
  if (format === "f32") {
    return [
      `    let lo${tag} = wq[(${rowExpr} * p.K) / 4u + w * 2u];`,
      `    let hi${tag} = wq[(${rowExpr} * p.K) / 4u + w * 2u + 1u];`,
    ];
  }
  if (isHalfFormat(format)) {
    return [
      `    let q${tag} = wq[${rowExpr} * p.wpr + w];`,
      `    let lo${tag} = vec4<f32>(halves(q${tag}.x), halves(q${tag}.y));`,
      `    let hi${tag} = vec4<f32>(halves(q${tag}.z), halves(q${tag}.w));`,
    ];
  }
  const out = [`    let word${tag} = wq[${rowExpr} * p.wpr + w];`];
  // Uniform branch (every invocation is at the same word), and no integer division in the loop:
  // llvmpipe divides lane by lane.
  out.push(`    if (left == 0u) {`);
  out.push(`      s${tag} = blockScale(${rowExpr}, blk);`);
  if (format === "int4") out.push(`      zs${tag} = blockZero(${rowExpr}, blk) * s${tag};`);
  out.push(`    }`);
  // Shift and mask, not extractBits: naga clamps extractBits' offset and count on every call.
  const code = (
    e: number,
  ) => (e === 7 ? `(word${tag} >> 28u)` : `((word${tag} >> ${4 * e}u) & 15u)`);
  const value = (e: number) => (format === "int4" ? `f32(${code(e)})` : `nf4Level(${code(e)})`);
  out.push(`    let lo${tag} = vec4<f32>(${[0, 1, 2, 3].map(value).join(", ")});`);
  out.push(`    let hi${tag} = vec4<f32>(${[4, 5, 6, 7].map(value).join(", ")});`);
  return out;
}

/**
 * `fn store(idx, acc, extra)`: out[idx] = α·acc + extra + β·out[idx], where `extra` is an
 * epilogue's term (kernels/runtime/epilogue.ts), added after the scaling by α.
 */
export const quantStoreFn = (name: string): string =>
  `fn store(idx: u32, acc: f32, extra: f32) {
  var v = fma(p.alpha, acc, extra);
  if (p.beta != 0.0) { v = fma(p.beta, ${name}[idx], v); }
  ${name}[idx] = v;
}`;

// The product's input as the epilogue reads it: elements of x [M, K], and its vec4s where x is
// read as vec4 (K % 4 = 0).
const INPUT_AT = (xVec4: boolean) =>
  xVec4
    ? `fn inputVec4(t: u32, k4: u32) -> vec4<f32> { return x[t * (p.K / 4u) + k4]; }
fn inputAt(t: u32, k: u32) -> f32 {
  let v = inputVec4(t, k / 4u);
  let m = k % 4u;
  return ${vec4ElementWgsl("v", "m")};
}`
    : `fn inputAt(t: u32, k: u32) -> f32 { return x[t * p.K + k]; }`;

/** The epilogue's code, numbered after the forward kernels' six bindings. */
export function epilogueWgsl(epilogue: string, xVec4: boolean): string {
  return epilogue === "" ? "" : `${INPUT_AT(xVec4)}\n${epilogue}`;
}

/** First binding an epilogue of a forward kernel may use. */
export const EPILOGUE_FIRST_BINDING = 6;

/**
 * Forward kernel. `aligned` (K % 8 = 0) reads x as vec4 and has no tail; otherwise x is read per
 * element and the last, partial word of each row is masked.
 */
function quantForwardWgslUncached(
  format: QuantKernelFormat,
  cfg: QuantForwardConfig,
  aligned: boolean,
  epilogue: string,
): string {
  if (format === "f32" && !aligned) throw new RangeError("f32 weights need K % 8 = 0");
  const { tm, tn } = cfg;
  const body = (guarded: boolean): string[] => {
    const lines: string[] = [];
    lines.push(`    let col = w * 8u;`);
    for (const i of range(tm)) {
      if (aligned) {
        lines.push(`    let xv${i}_0 = x[(xr${i} + col) / 4u];`);
        lines.push(`    let xv${i}_1 = x[(xr${i} + col) / 4u + 1u];`);
      } else {
        for (const e of range(8)) {
          const idx = `xr${i} + col + ${e}u`;
          lines.push(
            guarded
              ? `    let x${i}_${e} = select(0.0, x[min(${idx}, xLast)], col + ${e}u < p.K);`
              : `    let x${i}_${e} = x[${idx}];`,
          );
        }
      }
    }
    if (!aligned) {
      for (const i of range(tm)) {
        lines.push(`    let xv${i}_0 = vec4<f32>(x${i}_0, x${i}_1, x${i}_2, x${i}_3);`);
        lines.push(`    let xv${i}_1 = vec4<f32>(x${i}_4, x${i}_5, x${i}_6, x${i}_7);`);
      }
    }
    if (format === "int4") {
      // Σ (q − z)·s·x = s·(q·x) − z·s·Σx: the zero point costs one term per word, not per element.
      for (const i of range(tm)) {
        lines.push(`    let xs${i} = dot(xv${i}_0 + xv${i}_1, vec4<f32>(1.0));`);
      }
    }
    for (const j of range(tn)) lines.push(...decodeWordVec4(format, `${j}`, `r${j}`));
    lines.push(`    if (left == 0u) { left = wpb; blk += 1u; }`);
    lines.push(`    left -= 1u;`);
    for (const i of range(tm)) {
      for (const j of range(tn)) {
        const dots = `dot(lo${j}, xv${i}_0) + dot(hi${j}, xv${i}_1)`;
        if (format === "f32" || isHalfFormat(format)) lines.push(`    acc${i}_${j} += ${dots};`);
        else if (format === "int4") {
          lines.push(`    acc${i}_${j} += fma(s${j}, ${dots}, -zs${j} * xs${i});`);
        } else lines.push(`    acc${i}_${j} = fma(s${j}, ${dots}, acc${i}_${j});`);
      }
    }
    return lines;
  };
  const tail = aligned ? "" : `  if (fullWords < p.wpr) {
    let w = fullWords;
    let xLast = p.M * p.K - 1u;
${body(true).join("\n")}
  }`;
  // Block bookkeeping by counting words: blk is the block of the current word, left the words
  // remaining in it before the scale must be reloaded.
  const state = range(tn).map((j) => `  var s${j} = 0.0;\n  var zs${j} = 0.0;`);
  state.push(`  let wpb = p.blockSize / 8u;\n  var blk = 0u;\n  var left = 0u;`);
  return forwardKernel(
    cfg,
    bindings(format, "x", "y", aligned),
    format,
    "p.K",
    state,
    `
  let fullWords = p.K / 8u;
  for (var w = 0u; w < fullWords; w++) {
${body(false).join("\n")}
  }
${tail}`,
    epilogueWgsl(epilogue, aligned),
  );
}

/**
 * What both forward kernels share: the entry point, output rows `r{j}` and x offsets `xr{i}`
 * (`xRow` elements per token), the accumulators, the kernel's own state lines, its loop, and the
 * guarded store.
 */
function forwardKernel(
  cfg: QuantForwardConfig,
  bindingLines: string,
  format: QuantKernelFormat,
  xRow: string,
  state: string[],
  loop: string,
  epilogue: string,
): string {
  const { tm, tn } = cfg;
  const pre: string[] = [];
  for (const j of range(tn)) pre.push(`  let r${j} = min(o0 + ${j}u, p.N - 1u);`);
  for (const i of range(tm)) pre.push(`  let xr${i} = min(t0 + ${i}u, p.M - 1u) * ${xRow};`);
  for (const i of range(tm)) for (const j of range(tn)) pre.push(`  var acc${i}_${j} = 0.0;`);
  const store: string[] = [];
  for (const j of range(tn)) store.push(`  let col${j} = p.oOff + o0 + ${j}u;`);
  for (const i of range(tm)) {
    store.push(`  if (t0 + ${i}u < p.M) {`);
    for (const j of range(tn)) {
      store.push(
        `    if (o0 + ${j}u < p.N) { store((t0 + ${i}u) * p.ldo + col${j}, acc${i}_${j}, ${
          epilogue === "" ? "0.0" : `epilogue(t0 + ${i}u, col${j})`
        }); }`,
      );
    }
    store.push(`  }`);
  }
  return `${QUANT_PARAMS_WGSL}
${bindingLines}
${quantScaleFns(format)}
${quantStoreFn("y")}
${epilogue}

@compute @workgroup_size(${cfg.wx}, ${cfg.wy})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  // Every format binds the same six buffers; keep unused ones in the "auto" layout.
  _ = &scales;
  _ = &aux;
  let o0 = gid.x * ${tn}u;
  let t0 = gid.y * ${tm}u;
  if (o0 >= p.N || t0 >= p.M) { return; }
${pre.join("\n")}
${state.join("\n")}
${loop}
${store.join("\n")}
}
`;
}

/**
 * Whether the forward kernel can read four words (32 codes) of a row at once: rows must be whole
 * vec4s of words (K % 32 = 0) and a 32-column step must never straddle a scale block.
 */
export function wideForwardEligible(
  format: QuantKernelFormat,
  k: number,
  blockSize: number,
): boolean {
  return format !== "f32" && !isHalfFormat(format) && k % 32 === 0 && blockSize % 32 === 0;
}

/**
 * Forward kernel reading W a vec4 of words (32 codes per row) per step. On llvmpipe a storage load
 * costs about the same whether it fetches one u32 or a vec4 (each is a bounds-checked per-lane
 * gather), so this quarters the weight loads of {@link quantForwardWgsl}; int4 codes are unpacked
 * four at a time with vector shifts. Needs {@link wideForwardEligible}.
 */
function quantForwardWideWgslUncached(
  format: QuantKernelFormat,
  cfg: QuantForwardConfig,
  epilogue: string,
): string {
  if (format === "f32" || isHalfFormat(format)) {
    throw new RangeError("the four-words kernel is for 4-bit weights");
  }
  const { tm, tn } = cfg;
  const lines: string[] = [];
  for (const i of range(tm)) {
    for (const c of range(8)) lines.push(`    let x${i}_${c} = x[xr${i} + v * 8u + ${c}u];`);
  }
  if (format === "int4") {
    // Σ (q − z)·s·x = s·(Σ q·x − z·Σx): the zero point costs one term per row and step.
    for (const i of range(tm)) {
      const sum = range(4).map((c) => `x${i}_${2 * c} + x${i}_${2 * c + 1}`).join(" + ");
      lines.push(`    let xs${i} = dot(${sum}, vec4<f32>(1.0));`);
    }
  }
  for (const j of range(tn)) {
    lines.push(`    let q${j} = wq[r${j} * wpr4 + v];`);
    lines.push(`    if (left == 0u) {`);
    lines.push(`      s${j} = blockScale(r${j}, blk);`);
    if (format === "int4") lines.push(`      z${j} = blockZero(r${j}, blk);`);
    lines.push(`    }`);
    // The eight vec4s of (unscaled) codes or levels of the 32 columns of this step.
    for (const c of range(4)) {
      const word = `q${j}.${"xyzw"[c]}`;
      for (const h of range(2)) {
        const name = `d${j}_${2 * c + h}`;
        if (format === "int4") {
          const shifts = range(4).map((e) => `${4 * (4 * h + e)}u`).join(", ");
          lines.push(
            `    let ${name} = vec4<f32>((vec4<u32>(${word}) >> vec4<u32>(${shifts})) & vec4<u32>(15u));`,
          );
        } else {
          const levels = range(4).map((e) => {
            const shift = 4 * (4 * h + e);
            return shift === 28
              ? `nf4Level(${word} >> 28u)`
              : `nf4Level((${word} >> ${shift}u) & 15u)`;
          });
          lines.push(`    let ${name} = vec4<f32>(${levels.join(", ")});`);
        }
      }
    }
  }
  lines.push(`    if (left == 0u) { left = vpb; blk += 1u; }`);
  lines.push(`    left -= 1u;`);
  for (const i of range(tm)) {
    for (const j of range(tn)) {
      const dots = range(8).map((c) => `dot(d${j}_${c}, x${i}_${c})`).join(" + ");
      lines.push(
        format === "int4"
          ? `    acc${i}_${j} = fma(s${j}, ${dots} - z${j} * xs${i}, acc${i}_${j});`
          : `    acc${i}_${j} = fma(s${j}, ${dots}, acc${i}_${j});`,
      );
    }
  }
  // As in the one-word kernel, but counting steps of four words; z{j} is the zero point itself.
  const state = range(tn).map((j) => `  var s${j} = 0.0;\n  var z${j} = 0.0;`);
  state.push(
    `  let wpr4 = p.wpr / 4u;\n  let vpb = p.blockSize / 32u;\n  var blk = 0u;\n  var left = 0u;`,
  );
  return forwardKernel(
    cfg,
    bindings(format, "x", "y", true, true),
    format,
    "(p.K / 4u)",
    state,
    `
  for (var v = 0u; v < wpr4; v++) {
${lines.join("\n")}
  }`,
    epilogueWgsl(epilogue, true),
  );
}

/** Backward kernel dx = α·dy·W + β·dx: each invocation owns TM tokens × 8·TW input columns. */
function quantBackwardWgslUncached(format: QuantKernelFormat, cfg: QuantBackwardConfig): string {
  const { tm, tw } = cfg;
  const pre: string[] = [];
  for (const q of range(tw)) pre.push(`  let wc${q} = min(c0 + ${q}u, p.wpr - 1u);`);
  for (const q of range(tw)) pre.push(`  let blk${q} = (wc${q} * 8u) / p.blockSize;`);
  for (const i of range(tm)) pre.push(`  let dr${i} = min(t0 + ${i}u, p.M - 1u) * p.ldo + p.oOff;`);
  for (const i of range(tm)) {
    for (const q of range(tw)) for (const e of range(8)) pre.push(`  var acc${i}_${q}_${e} = 0.0;`);
  }
  const loop: string[] = [];
  for (const i of range(tm)) loop.push(`    let g${i} = dy[dr${i} + o];`);
  for (const q of range(tw)) loop.push(...decodeWord(format, `${q}`, "o", `wc${q}`));
  for (const i of range(tm)) {
    for (const q of range(tw)) {
      for (const e of range(8)) {
        loop.push(`    acc${i}_${q}_${e} = fma(g${i}, w${q}_${e}, acc${i}_${q}_${e});`);
      }
    }
  }
  const store: string[] = [];
  for (const i of range(tm)) {
    store.push(`  if (t0 + ${i}u < p.M) {`);
    for (const q of range(tw)) {
      for (const e of range(8)) {
        const col = `(c0 + ${q}u) * 8u + ${e}u`;
        store.push(
          `    if (${col} < p.K) { store((t0 + ${i}u) * p.K + ${col}, acc${i}_${q}_${e}, 0.0); }`,
        );
      }
    }
    store.push(`  }`);
  }
  return `${QUANT_PARAMS_WGSL}
${bindings(format, "dy", "dx", false)}
${quantScaleFns(format)}
${quantStoreFn("dx")}

@compute @workgroup_size(${cfg.wx}, ${cfg.wy})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  _ = &scales;
  _ = &aux;
  let c0 = gid.x * ${tw}u;
  let t0 = gid.y * ${tm}u;
  if (c0 >= p.wpr || t0 >= p.M) { return; }
${pre.join("\n")}
  for (var o = 0u; o < p.N; o++) {
${loop.join("\n")}
  }
${store.join("\n")}
}
`;
}

/**
 * Bindings and `fn weightAt(row, col) -> f32` (the dequantized element) for kernels that read
 * single elements of a frozen weight: embedding gathers, dequantized copies, row norms. Binding 4
 * is `ids` (u32) and binding 5 `out` (f32).
 */
export function weightAtWgsl(format: QuantKernelFormat): string {
  const w = format === "f32" ? "array<f32>" : "array<u32>";
  let body: string;
  if (format === "f32") body = "return wq[row * p.K + col];";
  else if (isHalfFormat(format)) {
    body = "return halves(wq[row * p.wpr * 4u + col / 2u])[col & 1u];";
  } else {
    const code = "(wq[row * p.wpr + col / 8u] >> (4u * (col & 7u))) & 15u";
    const blk = "col / p.blockSize";
    body = format === "int4"
      ? `return (f32(${code}) - blockZero(row, ${blk})) * blockScale(row, ${blk});`
      : `return nf4Level(${code}) * blockScale(row, ${blk});`;
  }
  return `${QUANT_PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: ${w};
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;
@group(0) @binding(4) var<storage, read> ids: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
${quantScaleFns(format)}
fn weightAt(row: u32, col: u32) -> f32 {
  ${body}
}`;
}

/**
 * The forward kernel's WGSL (memoised: recording must not rebuild the text), with an epilogue's
 * code (`ProductEpilogue.wgsl(EPILOGUE_FIRST_BINDING)`, or "" for none).
 */
export const quantForwardWgsl: (
  format: QuantKernelFormat,
  cfg: QuantForwardConfig,
  aligned: boolean,
  epilogue: string,
) => string = memoWgsl(quantForwardWgslUncached);

/** The wide (four words per step) forward kernel's WGSL, memoised; epilogue as above. */
export const quantForwardWideWgsl: (
  format: QuantKernelFormat,
  cfg: QuantForwardConfig,
  epilogue: string,
) => string = memoWgsl(quantForwardWideWgslUncached);

/** The backward kernel's WGSL, memoised. */
export const quantBackwardWgsl: (format: QuantKernelFormat, cfg: QuantBackwardConfig) => string =
  memoWgsl(quantBackwardWgslUncached);
