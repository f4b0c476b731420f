/**
 * The Kronecker mixture on GPUs with the per-token intermediates kept on chip: ΔW = Σᵢ cᵢ·(Aᵢ ⊗ Bᵢ),
 * cᵢ = s·softmax(g)ᵢ, all components in one dispatch per product, nothing per token written to
 * memory. The matmul route writes W = A'·X, K = A'ᵀ·dY and Zt = B·Xᵀ (each as large as x, per
 * component) and reads them back; here each workgroup computes the rows of them it needs into
 * workgroup memory and consumes them at once.
 *
 * Apply (forward y and backward dx, one generator): out[t] = Σᵢ cᵢ·(Mᵢ ⊗ Nᵢ)·v[t], with (M, N) =
 * (A, B) for y and (Aᵀ, Bᵀ) for dx. Viewing v[t] as V [n1, n2] and out[t] as O [m1, m2],
 * O[p, :] = (M[p, :]·V)·Nᵀ: an output row needs only its own row of the intermediate. A workgroup
 * owns TB tokens × L consecutive outputs (L a multiple of every component's m2, so it owns whole
 * rows of every component), and per component computes those rows of M·V into workgroup memory,
 * then multiplies them by Nᵀ into registers, summing the components before one store. No FLOP is
 * repeated: each intermediate row is computed by exactly one workgroup. The forward first writes
 * every Bᵀ (the size of the factors) so that neighbouring invocations read neighbouring words of
 * it; dx reads B as stored, which already has that order.
 *
 * Register tiles (unrolled into scalars): 4 rows × 4 tokens of the intermediate, 4 tokens × 4
 * outputs of the product, 4 × 4 of a gradient, so each step loads 8 values for 16 multiply-adds
 * (smaller edges where a size is not a multiple of 4).
 *
 * Gradients (one dispatch for every factor of every component): per (component, role, block of
 * RB gradient rows, token slot), for each token of the slot,
 *   dB[r, c] += Σ_q S[r, q]·X[q, c],  S[r, q] = (dYᵀ·A')[r, q] = Kᵀ          (K recomputed)
 *   dA[p, q] += Σ_j S[p, j]·X[q, j],  S[p, j] = (dY·B)[p, j] = U
 *   dB[r, c] += Σ_p dY[p, r]·X[p, c]                                       (identity A)
 * with S in workgroup memory; the gate weight cᵢ scales the result. Each slot writes its own
 * partial sum and a second dispatch adds the slots in index order into the gradients: no
 * atomics, the same bits every run. Then `fusedKronGateGrad` gives the gate's gradient.
 *
 * Memory: no token-sized scratch at all; the partials are slots × (factor gradient elements),
 * Bᵀ one set of B's. Dispatches: 2 forward, 3 backward (plus the gate's), whatever the number of
 * components or tokens.
 */
import type { Batch, Binding } from "../runtime/batch.ts";
import { flatIndexWgsl, grid1d, uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import type { KernelVariants } from "../runtime/variants.ts";
import { type FusedKronLayer, type FusedKronPlan, KRON_DESC } from "./kron_fused.ts";

/** Invocations per workgroup of the tiled kernels. */
const WG = 128;
/** Tokens per apply workgroup: each load of N serves TB tokens. */
const TB = 4;
/** Most outputs one apply workgroup owns (TB·L/WG accumulators per invocation). */
const L_MAX = 512;
/** Most gradient outputs per invocation of the gradient kernel. */
const ACC_MAX = 16;
/** Workgroups the gradient dispatch aims for (a large GPU's resident workgroups). */
const FILL = 1024;

const P = uniformLayout(
  "P",
  [["tokens", "u32"], ["slots", "u32"], ["scale", "f32"], ["beta", "u32"]] as const,
);

interface Comp {
  ma: number;
  na: number;
  mb: number;
  nb: number;
  identity: boolean;
  hasDa: boolean;
  /** dB's and dA's positions among the gradient elements. */
  gB: number;
  gA: number;
}

interface Shape {
  dIn: number;
  dOut: number;
  /** Factor gradient elements (one slot). */
  g: number;
  comps: Comp[];
}

function shapeOf(plan: FusedKronPlan): Shape {
  const { header, fields, none } = KRON_DESC;
  const f = (i: number, k: number) => plan.desc[header + fields * i + k];
  return {
    dIn: plan.dIn,
    dOut: plan.dOut,
    g: plan.gradElements,
    comps: Array.from({ length: plan.r }, (_, i) => ({
      ma: f(i, 0),
      na: f(i, 1),
      mb: f(i, 2),
      nb: f(i, 3),
      identity: f(i, 4) === 1,
      hasDa: f(i, 7) !== none,
      gB: f(i, 12),
      gA: f(i, 13) === none ? -1 : f(i, 13),
    })),
  };
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Floats of workgroup memory the tiled kernels may use: half the limit, at most 16 KiB. */
function sharedFloats(v: KernelVariants): number {
  return Math.min(16384, v.workgroupStorageBytes / 2) / 4;
}

/** One apply direction: M is m1×n1, N is m2×n2 per component. */
type Dir = "y" | "dx";

function dims(c: Comp, dir: Dir) {
  return dir === "y"
    ? { m1: c.ma, n1: c.na, m2: c.mb, n2: c.nb }
    : { m1: c.na, n1: c.ma, m2: c.nb, n2: c.mb };
}

/** The apply tiling: L outputs per workgroup and the workgroup memory it needs, or null. */
function applyTiling(s: Shape, dir: Dir, floats: number) {
  const out = dir === "y" ? s.dOut : s.dIn;
  const step = s.comps.reduce((l, c) => {
    const m2 = dims(c, dir).m2;
    return (l * m2) / gcd(l, m2);
  }, 1);
  const need = (l: number) =>
    Math.max(...s.comps.map((c) => {
      const d = dims(c, dir);
      return TB * (l / d.m2) * d.n2;
    }));
  let l = step;
  while (l + step <= Math.min(L_MAX, out) && need(l + step) <= floats) l += step;
  if (need(l) > floats) return null;
  return { l, shared: need(l), chunks: Math.ceil(out / l) };
}

/** Gradient jobs: (component, role, block of rows), each with its shape. */
interface GradJob {
  comp: number;
  role: "dB" | "dA" | "dBI";
  /** Gradient rows and columns, rows per block, inner length of S, length of S's product. */
  rows: number;
  cols: number;
  rb: number;
  j: number;
  k: number;
  blocks: number;
  gPos: number;
}

function gradJobs(s: Shape, floats: number): GradJob[] {
  const jobs: GradJob[] = [];
  for (const [i, c] of s.comps.entries()) {
    const roles: Omit<GradJob, "rb" | "blocks">[] = c.identity
      ? [{ comp: i, role: "dBI", rows: c.mb, cols: c.nb, j: c.ma, k: 0, gPos: c.gB }]
      : [{ comp: i, role: "dB", rows: c.mb, cols: c.nb, j: c.na, k: c.ma, gPos: c.gB }];
    if (c.hasDa) {
      roles.push({ comp: i, role: "dA", rows: c.ma, cols: c.na, j: c.nb, k: c.mb, gPos: c.gA });
    }
    for (const r of roles) {
      const rb = Math.max(
        1,
        Math.min(r.rows, Math.floor(floats / r.j), Math.floor((WG * ACC_MAX) / r.cols)),
      );
      jobs.push({ ...r, rb, blocks: Math.ceil(r.rows / rb) });
    }
  }
  return jobs;
}

/** Whether the tiled kernels fit this plan's shapes in workgroup memory on `v`. */
export function tiledKronSupported(v: KernelVariants, plan: FusedKronPlan): boolean {
  const s = shapeOf(plan);
  const floats = sharedFloats(v);
  return applyTiling(s, "y", floats) !== null && applyTiling(s, "dx", floats) !== null &&
    gradJobs(s, floats).every((j) => j.rb * j.j <= floats);
}

/**
 * Partial-sum slots for the gradients of `tokens` tokens: enough that slots × jobs fills a large
 * GPU, at most one per token, and slots × gradient elements within `maxFloats`.
 */
export function tiledKronSlots(
  v: KernelVariants,
  plan: FusedKronPlan,
  tokens: number,
  maxFloats: number,
): number {
  const jobs = gradJobs(shapeOf(plan), sharedFloats(v)).reduce((n, j) => n + j.blocks, 0);
  const want = Math.ceil(FILL / jobs);
  return Math.max(1, Math.min(want, tokens, Math.floor(maxFloats / plan.gradElements)));
}

// Bindings 0 and 1: the uniform block and the descriptor (left out, with the field accessor, by
// a kernel that reads no factor: its layout would not have it).
const HEAD = (s: Shape, desc = true) => /* wgsl */ `
${P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
${
  desc
    ? `@group(0) @binding(1) var<uniform> desc: array<vec4<u32>, ${
      (KRON_DESC.header + KRON_DESC.fields * s.comps.length) / 4
    }>;
fn field(i: u32, f: u32) -> u32 {
  let w = ${KRON_DESC.header}u + ${KRON_DESC.fields}u * i + f;
  return desc[w / 4u][w % 4u];
}`
    : ""
}
const R = ${s.comps.length}u;
// cᵢ = s·softmax(gate)ᵢ with the max subtracted (r is small: once per invocation).
fn coefs() -> array<f32, R> {
  var c: array<f32, R>;
  var mx = gate[0];
  for (var j = 1u; j < R; j++) { mx = max(mx, gate[j]); }
  var sum = 0.0;
  for (var j = 0u; j < R; j++) { c[j] = exp(gate[j] - mx); sum += c[j]; }
  for (var j = 0u; j < R; j++) { c[j] = p.scale * c[j] / sum; }
  return c;
}`;

/**
 * The apply kernel's storage bindings from 2 on. The forward reads B through Bᵀ, so with only
 * identity A's it reads no factor and binds none (an auto layout would not have the binding).
 */
function applyBindings(s: Shape, dir: Dir): [string, "read" | "read_write"][] {
  const prm = dir === "dx" || s.comps.some((c) => !c.identity);
  return [
    ...(prm ? [["prm", "read"] as [string, "read"]] : []),
    ["gate", "read"],
    ["v", "read"],
    ["out", "read_write"],
    ...(dir === "y" ? [["bt", "read"] as [string, "read"]] : []),
  ];
}

/** 0, 1, …, n − 1. */
const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The largest of 4, 2, 1 dividing every n (the register-tile edge that fits them all). */
const tileEdge = (...ns: number[]) => [4, 2, 1].find((e) => ns.every((n) => n % e === 0))!;

// out[t, o] (=, or += with p.beta) Σᵢ cᵢ·((Mᵢ ⊗ Nᵢ)·v[t])[o] for TB tokens × L outputs.
// Register tiles: stage 1 gives an invocation RP rows × TB tokens of M·V for one column (RP + TB
// loads per RP·TB multiply-adds), stage 2 TB tokens × OC outputs of one row (TB + OC loads per
// TB·OC), OC dividing every component's row length.
const applyWgsl = memoWgsl((s: Shape, dir: Dir, l: number, shared: number) => {
  const vin = dir === "y" ? s.dIn : s.dOut;
  const vout = dir === "y" ? s.dOut : s.dIn;
  const oc = tileEdge(...s.comps.map((c) => dims(c, dir).m2));
  const opi = Math.ceil(l / oc / WG);
  // The register tiles are unrolled into scalars (a private array indexed in a loop may live in
  // memory, which costs a load per multiply-add again).
  const tbs = seq(TB);
  const ocs = seq(oc);
  const comps = s.comps.map((c, i) => {
    const { m1, n1, m2, n2 } = dims(c, dir);
    const pr = l / m2;
    const rps = seq(tileEdge(pr));
    const rp = rps.length;
    // M[row, k] and N[cc, j] in A's and B's row-major storage.
    const mAt = (row: string) =>
      dir === "y" ? `prm[a0 + (${row}) * ${c.na}u + k]` : `prm[a0 + k * ${c.na}u + ${row}]`;
    // y reads Bᵀ (transposed by tiledKronForward), so that neighbouring invocations, which own
    // neighbouring outputs, read neighbouring words.
    const nAt = (cc: string) =>
      dir === "y" ? `bt[${c.gB}u + j * ${c.mb}u + ${cc}]` : `prm[b0 + j * ${c.nb}u + ${cc}]`;
    // Rows past M's (the last chunk's padding) and tokens past the count are zero.
    const rowOk = (a: number) => `r0 + ${a}u < ${m1}u`;
    const rowAt = (a: number) => `min(r0 + ${a}u, ${m1 - 1}u)`;
    const left = c.identity
      ? rps.flatMap((a) =>
        tbs.map((t) =>
          `s${a}_${t} = select(0.0, v[tv${t} + ${rowAt(a)} * ${n2}u + j], ${rowOk(a)} && ok${t});`
        )
      ).join("\n        ")
      : `for (var k = 0u; k < ${n1}u; k++) {
          ${tbs.map((t) => `let v${t} = v[tv${t} + k * ${n2}u + j];`).join(" ")}
          ${
        rps.map((a) => `let m${a} = select(0.0, ${mAt(rowAt(a))}, ${rowOk(a)});`).join(
          "\n          ",
        )
      }
          ${
        rps.flatMap((a) => tbs.map((t) => `s${a}_${t} = fma(m${a}, v${t}, s${a}_${t});`)).join(" ")
      }
        }`;
    const stage2 = seq(opi).map((q) => /* wgsl */ `
    {
      let ol = (li + ${q * WG}u) * ${oc}u;
      if (ol < ${l}u) {
        let pp = ol / ${m2}u;
        let cc = ol % ${m2}u;
        ${tbs.flatMap((t) => ocs.map((u) => `var s${t}_${u} = 0.0;`)).join(" ")}
        for (var j = 0u; j < ${n2}u; j++) {
          ${ocs.map((u) => `let n${u} = ${nAt(`cc + ${u}u`)};`).join(" ")}
          ${tbs.map((t) => `let w${t} = wsh[${t * pr * n2}u + pp * ${n2}u + j];`).join(" ")}
          ${
      tbs.flatMap((t) => ocs.map((u) => `s${t}_${u} = fma(w${t}, n${u}, s${t}_${u});`)).join(" ")
    }
        }
        ${
      tbs.flatMap((t) =>
        ocs.map((u) => `acc${q}_${t}_${u} = fma(c[${i}], s${t}_${u}, acc${q}_${t}_${u});`)
      ).join(" ")
    }
      }
    }`).join("");
    return /* wgsl */ `
  { // component ${i}: rows of M·V into workgroup memory, then times Nᵀ
    let a0 = field(${i}u, 5u);
    let b0 = field(${i}u, 6u);
    let p0 = o0 / ${m2}u;
    for (var e = li; e < ${(pr / rp) * n2}u; e += ${WG}u) {
      let pg = e / ${n2}u;
      let j = e % ${n2}u;
      let r0 = p0 + pg * ${rp}u;
      ${rps.flatMap((a) => tbs.map((t) => `var s${a}_${t} = 0.0;`)).join(" ")}
      ${left}
      ${
      rps.flatMap((a) =>
        tbs.map((t) => `wsh[${t * pr * n2}u + (pg * ${rp}u + ${a}u) * ${n2}u + j] = s${a}_${t};`)
      ).join("\n      ")
    }
    }
    workgroupBarrier();${stage2}
    workgroupBarrier();
  }`;
  }).join("");
  // dx is overwritten without reading it (y adds onto the base product's output).
  const put = (v: string) =>
    `if (p.beta != 0u) { out[at] = out[at] + ${v}; } else { out[at] = ${v}; }`;
  const store = seq(opi).map((q) =>
    ocs.map((u) => /* wgsl */ `
  {
    let ol = (li + ${q * WG}u) * ${oc}u;
    let o = o0 + ol + ${u}u;
    if (ol < ${l}u && o < ${vout}u) {
      ${
      tbs.map((t) =>
        `if (ok${t}) { let at = (t0 + ${t}u) * ${vout}u + o; ${put(`acc${q}_${t}_${u}`)} }`
      ).join("\n      ")
    }
    }
  }`).join("")
  ).join("");
  return /* wgsl */ `
${
    applyBindings(s, dir).map(([n, access], i) =>
      `@group(0) @binding(${i + 2}) var<storage, ${access}> ${n}: array<f32>;`
    ).join("\n")
  }
${HEAD(s)}
var<workgroup> wsh: array<f32, ${shared}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let o0 = wid.x * ${l}u;
  let t0 = wid.y * ${TB}u;
  let c = coefs();
  // Each token's first input element, clamped (a token past the count reads a real one, and
  // its inputs are zeroed or its outputs dropped).
  ${tbs.map((t) => `let ok${t} = t0 + ${t}u < p.tokens;`).join(" ")}
  ${tbs.map((t) => `let tv${t} = min(t0 + ${t}u, p.tokens - 1u) * ${vin}u;`).join(" ")}
  ${
    seq(opi).flatMap((q) => tbs.flatMap((t) => ocs.map((u) => `var acc${q}_${t}_${u} = 0.0;`)))
      .join(" ")
  }
${comps}
${store}
}`;
});

// One function per gradient job: its slot's tokens, S per token into workgroup memory, the
// product into registers, cᵢ times the sum into the slot. Register tiles: stage 1 gives an
// invocation RP rows × JQ columns of S, stage 2 RR rows × CC columns of the gradient (each
// RP + JQ or RR + CC loads per product of the two); rows past the gradient's are zero.
function gradJobWgsl(s: Shape, job: GradJob, n: number): string {
  const c = s.comps[job.comp];
  const { rb, j: jn, cols, rows } = job;
  const [rp, jq] = [tileEdge(rb), tileEdge(jn)];
  const [rr, cq] = [tileEdge(rb), tileEdge(cols)];
  const tiles1 = (rb / rp) * (jn / jq);
  const tiles2 = (rb / rr) * (cols / cq);
  const opi = Math.ceil(tiles2 / WG);
  const last = rows - 1;
  const [rps, jqs, rrs, cqs] = [seq(rp), seq(jq), seq(rr), seq(cq)];
  const lAt = (row: string, k: string) =>
    job.role === "dA" ? `dy[dt + ${row} * ${c.mb}u + ${k}]` : `dy[dt + ${k} * ${c.mb}u + ${row}]`;
  const rowOk = (a: number) => `q0 + ${a}u < ${rows}u`;
  const rowAt = (a: number) => `min(q0 + ${a}u, ${last}u)`;
  // Tiles unrolled into scalars, as in the apply kernel.
  const stage1 = job.role === "dBI"
    ? rps.flatMap((a) =>
      jqs.map((b) => `s${a}_${b} = select(0.0, ${lAt(rowAt(a), `(j0 + ${b}u)`)}, ${rowOk(a)});`)
    ).join("\n    ")
    : `for (var k = 0u; k < ${job.k}u; k++) {
      ${
      rps.map((a) => `let l${a} = select(0.0, ${lAt(rowAt(a), "k")}, ${rowOk(a)});`).join(
        "\n      ",
      )
    }
      ${
      jqs.map((b) => `let g${b} = prm[f0 + k * ${job.role === "dA" ? c.nb : c.na}u + j0 + ${b}u];`)
        .join(" ")
    }
      ${rps.flatMap((a) => jqs.map((b) => `s${a}_${b} = fma(l${a}, g${b}, s${a}_${b});`)).join(" ")}
    }`;
  const xAt = (j: string, cc: string) =>
    job.role === "dA" ? `x[xt + (${cc}) * ${c.nb}u + ${j}]` : `x[xt + ${j} * ${c.nb}u + ${cc}]`;
  const tile2 = (q: number) =>
    `let e = li + ${q * WG}u;
    let a0 = (e / ${cols / cq}u) * ${rr}u;
    let c0 = (e % ${cols / cq}u) * ${cq}u;`;
  const accAt = (q: number, a: number, b: number) => `(*acc)[${q * rr * cq + a * cq + b}]`;
  // Three functions per job: S of token t, its product into the accumulators, the store. The
  // token loop and its barriers live in main (uniform control flow for every workgroup).
  return /* wgsl */ `
fn left${n}(blk: u32, t: u32, li: u32) {
  let r0 = blk * ${rb}u;
  ${job.role === "dBI" ? "" : `let f0 = field(${job.comp}u, ${job.role === "dA" ? 6 : 5}u);`}
  let dt = t * ${s.dOut}u;
  for (var e = li; e < ${tiles1}u; e += ${WG}u) {
    let q0 = r0 + (e / ${jn / jq}u) * ${rp}u;
    let j0 = (e % ${jn / jq}u) * ${jq}u;
    ${rps.flatMap((a) => jqs.map((b) => `var s${a}_${b} = 0.0;`)).join(" ")}
    ${stage1}
    ${
    rps.flatMap((a) => jqs.map((b) => `ssh[(q0 - r0 + ${a}u) * ${jn}u + j0 + ${b}u] = s${a}_${b};`))
      .join("\n    ")
  }
  }
}
fn right${n}(t: u32, li: u32, acc: ptr<function, array<f32, ACC>>) {
  let xt = t * ${s.dIn}u;
  ${
    seq(opi).map((q) =>
      `if (li + ${q * WG}u < ${tiles2}u) {
    ${tile2(q)}
    ${rrs.flatMap((a) => cqs.map((b) => `var s${a}_${b} = 0.0;`)).join(" ")}
    for (var j = 0u; j < ${jn}u; j++) {
      ${cqs.map((b) => `let x${b} = ${xAt("j", `c0 + ${b}u`)};`).join(" ")}
      ${rrs.map((a) => `let w${a} = ssh[(a0 + ${a}u) * ${jn}u + j];`).join(" ")}
      ${rrs.flatMap((a) => cqs.map((b) => `s${a}_${b} = fma(w${a}, x${b}, s${a}_${b});`)).join(" ")}
    }
    ${rrs.flatMap((a) => cqs.map((b) => `${accAt(q, a, b)} += s${a}_${b};`)).join(" ")}
  }`
    ).join("\n  ")
  }
}
fn store${n}(blk: u32, li: u32, slot: u32, ci: f32, acc: ptr<function, array<f32, ACC>>) {
  let r0 = blk * ${rb}u;
  ${
    seq(opi).map((q) =>
      `if (li + ${q * WG}u < ${tiles2}u) {
    ${tile2(q)}
    ${
        rrs.map((a) =>
          `if (r0 + a0 + ${a}u < ${rows}u) {
      let g = ${s.g}u * slot + ${job.gPos}u + (r0 + a0 + ${a}u) * ${cols}u + c0;
      ${cqs.map((b) => `part[g + ${b}u] = ci * ${accAt(q, a, b)};`).join(" ")}
    }`
        ).join("\n    ")
      }
  }`
    ).join("\n  ")
  }
}`;
}

/** Accumulators per invocation of a job: the largest over the kernel's jobs. */
function jobAccumulators(job: GradJob): number {
  const [rr, cq] = [tileEdge(job.rb), tileEdge(job.cols)];
  return Math.ceil((job.rb / rr) * (job.cols / cq) / WG) * rr * cq;
}

const factorsRead = (jobs: GradJob[]) => jobs.some((j) => j.role !== "dBI");

const gradWgsl = memoWgsl((s: Shape, jobs: GradJob[], shared: number) => {
  const branch = (call: (n: number, blk: string, job: GradJob) => string) => {
    let start = 0;
    return jobs.map((job, n) => {
      const b = `if (job < ${start + job.blocks}u) { ${call(n, `job - ${start}u`, job)}; }`;
      start += job.blocks;
      return b;
    }).join(" else ");
  };
  // The factors (and descriptor) are bound only where a job reads them: not for identity-A
  // components alone.
  const read = factorsRead(jobs);
  const names = [
    ...(factorsRead(jobs) ? [["prm", "read"]] : []),
    ["gate", "read"],
    ["x", "read"],
    ["dy", "read"],
    ["part", "read_write"],
  ];
  return /* wgsl */ `
${
    names.map(([n, access], i) =>
      `@group(0) @binding(${i + (read ? 2 : 1)}) var<storage, ${access}> ${n}: array<f32>;`
    ).join("\n")
  }
${HEAD(s, read)}
var<workgroup> ssh: array<f32, ${shared}>;
const ACC = ${Math.max(...jobs.map(jobAccumulators))}u;
${jobs.map((j, n) => gradJobWgsl(s, j, n)).join("\n")}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let job = wid.x;
  let slot = wid.y;
  // Slot k takes tokens [k·T/S, (k+1)·T/S): every token in exactly one slot.
  let ta = (slot * p.tokens) / p.slots;
  let tb = ((slot + 1u) * p.tokens) / p.slots;
  let c = coefs();
  var acc: array<f32, ACC>;
  for (var t = ta; t < tb; t++) {
    ${branch((n, blk) => `left${n}(${blk}, t, li)`)}
    workgroupBarrier();
    ${branch((n) => `right${n}(t, li, &acc)`)}
    workgroupBarrier();
  }
  ${branch((n, blk, job) => `store${n}(${blk}, li, slot, c[${job.comp}], &acc)`)}
}`;
});

// bt[gB + j·mb + o] = B[o, j] for every component's B, at dB's position among the gradients.
const transposeWgsl = memoWgsl((s: Shape) => {
  const regions = s.comps.map((c, i) =>
    `if (e >= ${c.gB}u && e < ${c.gB + c.mb * c.nb}u) {
    let l = e - ${c.gB}u;
    bt[e] = prm[field(${i}u, 6u) + (l % ${c.mb}u) * ${c.nb}u + l / ${c.mb}u];
  }`
  ).join("\n  ");
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> desc: array<vec4<u32>, ${
    (KRON_DESC.header + KRON_DESC.fields * s.comps.length) / 4
  }>;
@group(0) @binding(1) var<storage, read> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> bt: array<f32>;
fn field(i: u32, f: u32) -> u32 {
  let w = ${KRON_DESC.header}u + ${KRON_DESC.fields}u * i + f;
  return desc[w / 4u][w % 4u];
}
${flatIndexWgsl(256)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = flat(gid, nwg);
  if (e >= ${s.g}u) { return; }
  ${regions}
}`;
});

// grad[dst(e)] = Σ_k part[k·G + e], the slots in index order.
const sumWgsl = memoWgsl((s: Shape) => {
  const regions = s.comps.flatMap((c, i) => {
    const list = [{ start: c.gB, size: c.mb * c.nb, field: 8 }];
    if (c.hasDa) list.push({ start: c.gA, size: c.ma * c.na, field: 7 });
    return list.map((r) => ({ ...r, comp: i }));
  }).sort((a, b) => a.start - b.start)
    .map((r) =>
      `if (e < ${
        r.start + r.size
      }u) { grd[field(${r.comp}u, ${r.field}u) + e - ${r.start}u] = sum; }`
    ).join(" else ");
  return /* wgsl */ `
${P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> desc: array<vec4<u32>, ${
    (KRON_DESC.header + KRON_DESC.fields * s.comps.length) / 4
  }>;
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> grd: array<f32>;
fn field(i: u32, f: u32) -> u32 {
  let w = ${KRON_DESC.header}u + ${KRON_DESC.fields}u * i + f;
  return desc[w / 4u][w % 4u];
}
${flatIndexWgsl(256)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = flat(gid, nwg);
  if (e >= ${s.g}u) { return; }
  var sum = 0.0;
  for (var k = 0u; k < p.slots; k++) { sum += part[k * ${s.g}u + e]; }
  ${regions}
}`;
});

async function record(
  rt: GpuRuntime,
  batch: Batch,
  code: string,
  label: string,
  b: FusedKronLayer,
  fields: { tokens: number; slots?: number; beta?: number } | null,
  buffers: Binding[],
  groups: [number, number?],
  desc = true,
): Promise<void> {
  const pipeline = await rt.pipelines.get(code, label);
  // The P block (fields null: none) and the descriptor come first where the shader uses them:
  // auto layouts leave out what a shader does not use, so the bindings must match it.
  const params = fields && batch.uniform(P.pack({
    tokens: fields.tokens,
    slots: fields.slots ?? 1,
    scale: b.scale,
    beta: fields.beta ?? 0,
  }));
  batch.dispatch(
    pipeline,
    [
      ...(params ? [params] : []),
      ...(desc ? [batch.uniform(b.plan.desc)] : []),
      ...buffers,
    ],
    groups,
  );
}

function tokenBlocks(rt: GpuRuntime, tokens: number): number {
  const n = Math.ceil(tokens / TB);
  if (n > rt.device.limits.maxComputeWorkgroupsPerDimension) {
    throw new RangeError(`tiled Kronecker kernels: ${tokens} tokens in one call`);
  }
  return n;
}

/**
 * y [tokens, dOut] += ΔW·x (every component, W on chip): Bᵀ of every component into `bt`
 * (scratch of at least gradElements floats), then one dispatch. Two dispatches.
 */
export async function tiledKronForward(
  rt: GpuRuntime,
  batch: Batch,
  b: FusedKronLayer,
  a: { x: GpuTensor; y: GpuTensor; tokens: number; bt: GpuTensor },
): Promise<void> {
  const s = shapeOf(b.plan);
  const { x, y, tokens, bt } = a;
  if (x.size !== tokens * s.dIn || y.size !== tokens * s.dOut || bt.size < s.g) {
    throw new RangeError("tiledKronForward: x, y or bt shape");
  }
  const t = applyTiling(s, "y", sharedFloats(rt.variants))!;
  const prm = { buffer: b.plan.params };
  await record(
    rt,
    batch,
    transposeWgsl(s),
    "adapter/kron-tiled-bt",
    b,
    null,
    [prm, bt.binding],
    grid1d(rt, s.g, 256),
  );
  await record(
    rt,
    batch,
    applyWgsl(s, "y", t.l, t.shared),
    "adapter/kron-tiled-fwd",
    b,
    { tokens, beta: 1 },
    [
      ...(applyBindings(s, "y")[0][0] === "prm" ? [prm] : []),
      b.gate.binding,
      x.binding,
      y.binding,
      bt.binding,
    ],
    [t.chunks, tokenBlocks(rt, tokens)],
  );
}

/**
 * dx [tokens, dIn] = ΔWᵀ·dy (overwritten, K on chip), then every factor's gradient (overwritten):
 * token slots into `partial` (at least slots × gradElements floats), summed in slot order. The
 * gate's gradient is the caller's (`fusedKronGateGrad`). Three dispatches.
 */
export async function tiledKronBackward(
  rt: GpuRuntime,
  batch: Batch,
  b: FusedKronLayer,
  a: {
    x: GpuTensor;
    dy: GpuTensor;
    dx: GpuTensor;
    tokens: number;
    partial: GpuTensor;
    slots: number;
  },
): Promise<void> {
  const s = shapeOf(b.plan);
  const { x, dy, dx, tokens, partial, slots } = a;
  if (x.size !== tokens * s.dIn || dx.size !== x.size || dy.size !== tokens * s.dOut) {
    throw new RangeError("tiledKronBackward: shapes");
  }
  if (partial.size < slots * s.g || slots < 1 || slots > Math.max(1, tokens)) {
    throw new RangeError(`tiledKronBackward: ${slots} slots, partial of ${partial.size}`);
  }
  const floats = sharedFloats(rt.variants);
  const t = applyTiling(s, "dx", floats)!;
  const prm = { buffer: b.plan.params };
  await record(
    rt,
    batch,
    applyWgsl(s, "dx", t.l, t.shared),
    "adapter/kron-tiled-dx",
    b,
    { tokens },
    [prm, b.gate.binding, dy.binding, dx.binding],
    [t.chunks, tokenBlocks(rt, tokens)],
  );
  const jobs = gradJobs(s, floats);
  const shared = Math.max(...jobs.map((j) => j.rb * j.j));
  const blocks = jobs.reduce((n, j) => n + j.blocks, 0);
  await record(
    rt,
    batch,
    gradWgsl(s, jobs, shared),
    "adapter/kron-tiled-grad",
    b,
    { tokens, slots },
    [...(factorsRead(jobs) ? [prm] : []), b.gate.binding, x.binding, dy.binding, partial.binding],
    [blocks, slots],
    factorsRead(jobs),
  );
  await record(
    rt,
    batch,
    sumWgsl(s),
    "adapter/kron-tiled-sum",
    b,
    { tokens, slots },
    [partial.binding, { buffer: b.plan.grads }],
    grid1d(rt, s.g, 256),
  );
}

/**
 * Exact work of one forward + backward of `tokens` tokens on the tiled route (gate gradient
 * excluded: r² operations): multiply-add FLOPs (2 per multiply-add), bytes each kernel must read
 * or write at least once (x, dy read; y read and written; dx written; the factors per workgroup
 * counted once, as they stay in cache; partial slots written and read; gradients written), and
 * dispatches (forward 2, backward 3, plus the gate's).
 */
export function tiledKronWork(
  plan: FusedKronPlan,
  tokens: number,
  slots: number,
): { flops: number; bytes: number; dispatches: number } {
  const s = shapeOf(plan);
  let macs = 0;
  let factors = 0;
  for (const c of s.comps) {
    const { ma, na, mb, nb } = c;
    const left = c.identity ? 0 : 1;
    macs += left * ma * na * nb + ma * nb * mb; // y: W rows, times Bᵀ
    macs += left * na * ma * mb + na * mb * nb; // dx: K rows, times B
    macs += left * mb * na * ma + mb * na * nb; // dB: Kᵀ again, times X (or dYᵀ·X)
    if (c.hasDa) macs += ma * nb * mb + ma * nb * na; // dA: U = dY·B, times Xᵀ
    factors += (c.identity ? 0 : ma * na) + mb * nb;
  }
  const f = 4;
  const bytes = f * tokens * (s.dIn + 2 * s.dOut) + // forward: x, y read + written
    f * tokens * (s.dOut + s.dIn) + // dx: dy, dx
    f * tokens * (s.dIn + s.dOut) + // gradients: x, dy
    f * 2 * slots * s.g + f * s.g + // partials written and read, gradients written
    f * 2 * s.g + // Bᵀ written and read
    f * 4 * factors; // read by bt, fwd, dx, gradients
  return {
    flops: 2 * tokens * macs,
    bytes,
    dispatches: 5 + (plan.desc[6] !== KRON_DESC.none ? 1 : 0),
  };
}
