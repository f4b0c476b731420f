/**
 * A gated mixture of Kronecker products, ΔW = Σᵢ cᵢ·(Aᵢ ⊗ Bᵢ) with cᵢ = s·softmax(g)ᵢ, in a
 * handful of dispatches for all components together: two for the forward, three for the backward
 * (plus one for the gate's gradient). Where a layer's work is small (a decoding step, a small
 * model) the cost of a step is the number of dispatches, not FLOPs; the matmul route of
 * `models/adapters/kron_gpu.ts` records 3 dispatches per component forward and 8 backward.
 *
 * The same vec-trick as that route, so ΔW is never formed. Per token t, X = reshape(x[t], na, nb),
 * dY = reshape(dy[t], ma, mb):
 *   forward   W = A·X                [ma, nb]   (kernel 1, every component)
 *             y += Σᵢ cᵢ·W·Bᵀ         [ma, mb]   (kernel 2)
 *   backward  K = Aᵀ·dY              [na, mb]   and, when dA is wanted, U = dY·B [ma, nb] (kernel 3)
 *             dx = Σᵢ cᵢ·K·B                                    (kernel 4)
 *             dB = cᵢ·Σ_t Kᵀ·X;  dA = cᵢ·Σ_t U·Xᵀ                (kernel 5, every factor)
 *             dg_j = u_j − α_j·Σ uᵢ, uᵢ = ⟨Bᵢ, dBᵢ⟩  (kernel 6, one workgroup)
 * An identity A (MoKA_s) skips kernel 1 and K (X and dY are used directly) and has no dA.
 *
 * Every shader is generated for its layer's shapes (sizes and per-token offsets are literals;
 * only the factors' offsets in the parameter buffer come from the uniform descriptor), and the
 * products are register-tiled: an invocation computes a block of outputs (4×4 of a factor's
 * gradient; TT tokens × TO outputs of y and dx, TO dividing every component's width), loading
 * TM + TN values per step of the reduction for TM·TN multiply-adds instead of two loads per
 * multiply-add (what bounds a kernel on a CPU rasteriser and, less so, on a GPU).
 *
 * All of a layer's factors live in one parameter buffer and all its gradients in one gradient
 * buffer (a `TensorArena` group), so a kernel binds them once whatever the number of components;
 * a uniform descriptor gives each factor's offset and shape.
 */
import type { Batch, Binding } from "../runtime/batch.ts";
import { type ProductEpilogue, vec4ElementWgsl } from "../runtime/epilogue.ts";
import { flatIndexWgsl, grid1d, uniformLayout } from "../runtime/launch.ts";
import { memoWgsl } from "../runtime/memo.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";

/** One component: factor shapes and tensors (A null for the identity; gradients null: frozen). */
export interface FusedKronComponent {
  /** Rows/columns of A and B. */
  shape: { ma: number; na: number; mb: number; nb: number };
  /** A [ma, na] (null: identity). */
  a: GpuTensor | null;
  /** B [mb, nb]. */
  b: GpuTensor;
  /** ∂L/∂A destination, or null. */
  da: GpuTensor | null;
  /** ∂L/∂B destination. */
  db: GpuTensor;
}

const NONE = 0xffffffff;
const HEADER = 8; // words before the components
const FIELDS = 16; // words per component

/**
 * The descriptor's layout for other kernels reading it: words before the components, words per
 * component, and the "absent" marker. Per component: ma, na, mb, nb, identity A; offsets of A, B,
 * dA, dB (fields 5–8); dB's and dA's positions among the gradient elements (12, 13).
 */
export const KRON_DESC = { header: HEADER, fields: FIELDS, none: NONE } as const;
const WG = 64;

/**
 * The static description of one layer's mixture: offsets into the parameter and gradient
 * buffers, and the per-token scratch layout. Build once per layer with {@link fusedKronPlan}.
 */
export interface FusedKronPlan {
  /** Components. */
  r: number;
  /** Input width of the layer. */
  dIn: number;
  /** Output width of the layer. */
  dOut: number;
  /** The descriptor words (uniform). */
  desc: Uint32Array;
  /** Forward scratch floats per token (W of every component with an A). */
  forwardPerToken: number;
  /** Backward scratch floats per token (K and U). */
  backwardPerToken: number;
  /** Gradient elements of every factor. */
  gradElements: number;
  /** The buffer holding every factor. */
  params: GPUBuffer;
  /** The buffer holding every factor's gradient (and the gate's). */
  grads: GPUBuffer;
}

/**
 * The plan for `comps` (and the gate's gradient `dgate`, when learned), or null when their
 * factors are not in one buffer, their gradients (and dgate) not in another, or their shapes do
 * not tile dIn → dOut.
 */
export function fusedKronPlan(
  comps: FusedKronComponent[],
  dgate: GpuTensor | null = null,
): FusedKronPlan | null {
  if (comps.length === 0) return null;
  const params = comps[0].b.buffer;
  const grads = comps[0].db.buffer;
  const dIn = comps[0].shape.na * comps[0].shape.nb;
  const dOut = comps[0].shape.ma * comps[0].shape.mb;
  const desc = new Uint32Array(HEADER + FIELDS * comps.length);
  let w = 0;
  let ku = 0;
  let g = 0;
  for (const [i, c] of comps.entries()) {
    const { ma, na, mb, nb } = c.shape;
    if (na * nb !== dIn || ma * mb !== dOut) return null;
    if (c.b.buffer !== params || c.db.buffer !== grads) return null;
    if (c.a && c.a.buffer !== params) return null;
    if (c.da && c.da.buffer !== grads) return null;
    if (!c.a && (ma !== na || c.da)) return null;
    const f = desc.subarray(HEADER + FIELDS * i, HEADER + FIELDS * (i + 1));
    f.set([ma, na, mb, nb, c.a ? 0 : 1]);
    f[5] = c.a ? c.a.byteOffset / 4 : NONE;
    f[6] = c.b.byteOffset / 4;
    f[7] = c.da ? c.da.byteOffset / 4 : NONE;
    f[8] = c.db.byteOffset / 4;
    f[9] = c.a ? w : NONE; // W in the forward scratch
    f[10] = c.a ? ku : NONE; // K in the backward scratch
    if (c.a) {
      w += ma * nb;
      ku += na * mb;
    }
    f[11] = c.da ? ku : NONE; // U
    if (c.da) ku += ma * nb;
    f[12] = g; // dB's gradient job
    g += mb * nb;
    f[13] = c.da ? g : NONE; // dA's
    if (c.da) g += ma * na;
  }
  if (dgate && (dgate.buffer !== grads || dgate.size !== comps.length)) return null;
  desc.set([comps.length, dIn, dOut, w, ku, g, dgate ? dgate.byteOffset / 4 : NONE]);
  return {
    r: comps.length,
    dIn,
    dOut,
    desc,
    forwardPerToken: w,
    backwardPerToken: ku,
    gradElements: g,
    params,
    grads,
  };
}

/** The shapes a kernel is specialised for: every size and per-token/gradient offset a literal. */
interface Geometry {
  dIn: number;
  dOut: number;
  /** Forward scratch floats per token. */
  w: number;
  /** Backward scratch floats per token. */
  ku: number;
  /** Gradient elements. */
  g: number;
  comps: {
    ma: number;
    na: number;
    mb: number;
    nb: number;
    /** W's offset in the forward scratch (A only). */
    wOff: number | null;
    /** K's and U's offsets in the backward scratch (A only; U when dA is wanted). */
    kOff: number | null;
    uOff: number | null;
    /** dB's and dA's positions among the gradient elements. */
    gB: number;
    gA: number | null;
  }[];
}

const geometries = new WeakMap<FusedKronPlan, Geometry>();

/** A plan's geometry, built once per plan. */
function geometryOf(plan: FusedKronPlan): Geometry {
  let g = geometries.get(plan);
  if (!g) geometries.set(plan, g = geometry(plan.desc));
  return g;
}

/** The geometry in a plan's descriptor (what the kernels are compiled for). */
function geometry(desc: Uint32Array): Geometry {
  const field = (i: number, f: number) => {
    const v = desc[HEADER + FIELDS * i + f];
    return v === NONE ? null : v;
  };
  return {
    dIn: desc[1],
    dOut: desc[2],
    w: desc[3],
    ku: desc[4],
    g: desc[5],
    comps: Array.from({ length: desc[0] }, (_, i) => ({
      ma: desc[HEADER + FIELDS * i],
      na: desc[HEADER + FIELDS * i + 1],
      mb: desc[HEADER + FIELDS * i + 2],
      nb: desc[HEADER + FIELDS * i + 3],
      wOff: field(i, 9),
      kOff: field(i, 10),
      uOff: field(i, 11),
      gB: field(i, 12)!,
      gA: field(i, 13),
    })),
  };
}

const PARAMS = uniformLayout(
  "P",
  [["tokens", "u32"], ["beta", "u32"], ["scale", "f32"], ["n", "u32"]] as const,
);

// The factors' absolute offsets (fields 5–8 of a component, word 6 for dgate) differ per layer,
// so they stay in the uniform descriptor; everything else is a literal, which lets the compiler
// turn divisions into multiplies and unroll the short loops.
const common = (g: Geometry) => /* wgsl */ `
${PARAMS.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> desc: array<vec4<u32>, ${
  (HEADER + FIELDS * g.comps.length) / 4
}>;
${flatIndexWgsl(WG)}
fn word(w: u32) -> u32 { return desc[w / 4u][w % 4u]; }
fn field(i: u32, f: u32) -> u32 { return word(${HEADER}u + ${FIELDS}u * i + f); }
const R = ${g.comps.length}u;
const DIN = ${g.dIn}u;
const DOUT = ${g.dOut}u;`;

// cᵢ = s·softmax(gate)ᵢ, once per invocation (r is small); \`r\` a literal or the kernels' R.
const coefsWgsl = (name: string, gate: string, scale: string, r: number | "R" = "R") => {
  const n = r === "R" ? "R" : `${r}u`;
  return /* wgsl */ `
fn ${name}() -> array<f32, ${n}> {
  var c: array<f32, ${n}>;
  var mx = ${gate}[0];
  for (var j = 1u; j < ${n}; j++) { mx = max(mx, ${gate}[j]); }
  var sum = 0.0;
  for (var j = 0u; j < ${n}; j++) { c[j] = exp(${gate}[j] - mx); sum += c[j]; }
  for (var j = 0u; j < ${n}; j++) { c[j] = ${scale} * c[j] / sum; }
  return c;
}`;
};
const COEFS = coefsWgsl("coefs", "gate", "p.scale");

/** Storage bindings from 2 on, in order. */
function storage(list: StorageBinding[]): string {
  return list.map(([name, access], i) =>
    `@group(0) @binding(${i + 2}) var<storage, ${access}> ${name}: array<f32>;`
  ).join("\n");
}

type StorageBinding = [name: string, access: "read" | "read_write"];

// X is bound only with an identity A, W only with an A.
function forwardRightBindings(g: Geometry): StorageBinding[] {
  const x: StorageBinding[] = g.comps.some((c) => c.wOff === null) ? [["x", "read"]] : [];
  const w: StorageBinding[] = g.w > 0 ? [["w", "read"]] : [];
  return [["prm", "read"], ["gate", "read"], ...x, ...w, ["y", "read_write"]];
}

// dY is bound only with an identity A, K/U only with an A; the factors (B) only for dx, X and the
// gradients only for the factors' gradients.
function backwardBindings(g: Geometry, part: "dx" | "grad"): StorageBinding[] {
  const dy: StorageBinding[] = g.comps.some((c) => c.kOff === null) ? [["dy", "read"]] : [];
  const ku: StorageBinding[] = g.ku > 0 ? [["ku", "read"]] : [];
  return part === "dx"
    ? [["prm", "read"], ["gate", "read"], ...dy, ...ku, ["dx", "read_write"]]
    : [["gate", "read"], ["x", "read"], ...dy, ...ku, ["grd", "read_write"]];
}

/** `if (e < end₀) { … } else if (e < end₁) { … }` over regions sorted by start. */
function regions(list: { start: number; size: number; body: string }[]): string {
  return [...list].sort((a, b) => a.start - b.start)
    .map((r) => `if (e < ${r.start + r.size}u) {\n    let l = e - ${r.start}u;\n${r.body}\n  }`)
    .join(" else ");
}

// Kernel 1: W[t, o1, j2] = Σ_j1 A[o1, j1]·X[t, j1, j2] for every component with an A.
const forwardLeft = memoWgsl((g: Geometry) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> w: array<f32>;
${common(g)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let t = idx / ${g.w}u;
  let e = idx % ${g.w}u;
  var s = 0.0;
  ${
  regions(g.comps.flatMap((c, i) =>
    c.wOff === null ? [] : [{
      start: c.wOff,
      size: c.ma * c.nb,
      body: `    let a0 = field(${i}u, 5u) + (l / ${c.nb}u) * ${c.na}u;
    let x0 = t * DIN + l % ${c.nb}u;
    for (var j1 = 0u; j1 < ${c.na}u; j1++) { s += prm[a0 + j1] * x[x0 + j1 * ${c.nb}u]; }`,
    }]
  ))
}
  w[idx] = s;
}`);

// The forward in one dispatch for small problems (a decoding step): per output,
// y[t, o] += Σᵢ cᵢ·Σ_j1 A[o1, j1]·(Σ_j2 B[o2, j2]·X[t, j1, j2]), dIn multiply-adds per component
// (Σ_j2 X[t, o1, j2]·B[o2, j2] for an identity A). The same terms serve the direct kernel and the
// product epilogue, which differ in names only.
interface DirectNames {
  /** The factors' buffer, the descriptor's field accessor and the coefficients' array. */
  prm: string;
  field: string;
  coefs: string;
  /** Element k of token t's input. */
  input: (t: string, k: string) => string;
}

/** WGSL adding output o of token t's mixture term into \`acc\`. */
function directTerms(g: Geometry, n: DirectNames): string {
  return g.comps.map((c, i) =>
    c.wOff === null
      ? `  {
    let b0 = ${n.field}(${i}u, 6u) + (o % ${c.mb}u) * ${c.nb}u;
    let k0 = (o / ${c.mb}u) * ${c.nb}u;
    var s = 0.0;
    for (var j2 = 0u; j2 < ${c.nb}u; j2++) { s += ${n.input("t", "k0 + j2")} * ${n.prm}[b0 + j2]; }
    acc += ${n.coefs}[${i}] * s;
  }`
      : `  {
    let b0 = ${n.field}(${i}u, 6u) + (o % ${c.mb}u) * ${c.nb}u;
    let a0 = ${n.field}(${i}u, 5u) + (o / ${c.mb}u) * ${c.na}u;
    var s = 0.0;
    for (var j1 = 0u; j1 < ${c.na}u; j1++) {
      var inner = 0.0;
      for (var j2 = 0u; j2 < ${c.nb}u; j2++) {
        inner += ${n.input("t", `j1 * ${c.nb}u + j2`)} * ${n.prm}[b0 + j2];
      }
      s += ${n.prm}[a0 + j1] * inner;
    }
    acc += ${n.coefs}[${i}] * s;
  }`
  ).join("\n");
}

const forwardDirect = memoWgsl((g: Geometry) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
${common(g)}
${COEFS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let t = idx / DOUT;
  let o = idx % DOUT;
  let c = coefs();
  var acc = 0.0;
${
  directTerms(g, {
    prm: "prm",
    field: "field",
    coefs: "c",
    input: (t, k) => `x[${t} * DIN + ${k}]`,
  })
}
  y[idx] += acc;
}`);

/**
 * The same terms reading four elements per load: B's rows and X as vec4s, A through the same
 * vec4 view (\`e_prmAt\`). Needs every nb % 4 = 0, B's offsets % 4 = 0 and a vec4 input.
 */
function directTermsVec4(g: Geometry): string {
  return g.comps.map((c, i) => {
    const nb4 = c.nb / 4;
    const b0 = `let b0 = e_field(${i}u, 6u) / 4u + (o % ${c.mb}u) * ${nb4}u;`;
    return c.wOff === null
      ? `  {
    ${b0}
    let k0 = (o / ${c.mb}u) * ${nb4}u;
    var s = vec4<f32>(0.0);
    for (var j2 = 0u; j2 < ${nb4}u; j2++) { s = fma(inputVec4(t, k0 + j2), e_prm[b0 + j2], s); }
    acc += e_c[${i}] * (s.x + s.y + s.z + s.w);
  }`
      : `  {
    ${b0}
    let a0 = e_field(${i}u, 5u) + (o / ${c.mb}u) * ${c.na}u;
    var s = 0.0;
    for (var j1 = 0u; j1 < ${c.na}u; j1++) {
      var inner = vec4<f32>(0.0);
      for (var j2 = 0u; j2 < ${nb4}u; j2++) {
        inner = fma(inputVec4(t, j1 * ${nb4}u + j2), e_prm[b0 + j2], inner);
      }
      s += e_prmAt(a0 + j1) * (inner.x + inner.y + inner.z + inner.w);
    }
    acc += e_c[${i}] * s;
  }`;
  }).join("\n");
}

const EPILOGUE_PARAMS = uniformLayout("E_KronParams", [["scale", "f32"]] as const);

// The direct forward as a product epilogue (kernels/runtime/epilogue.ts): the base product's
// dispatch adds the mixture's term to each output it stores. \`vec4\`: directTermsVec4's terms.
const epilogueWgsl = memoWgsl((g: Geometry, first: number, vec4: boolean) => /* wgsl */ `
${EPILOGUE_PARAMS.wgsl}
@group(0) @binding(${first}) var<uniform> e_p: E_KronParams;
@group(0) @binding(${first + 1}) var<uniform> e_desc: array<vec4<u32>, ${
  (HEADER + FIELDS * g.comps.length) / 4
}>;
@group(0) @binding(${first + 2}) var<storage, read> e_prm: array<${vec4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(${first + 3}) var<storage, read> e_gate: array<f32>;
fn e_field(i: u32, f: u32) -> u32 {
  let w = ${HEADER}u + ${FIELDS}u * i + f;
  return e_desc[w / 4u][w % 4u];
}
${
  vec4
    ? `fn e_prmAt(i: u32) -> f32 {
  let v = e_prm[i / 4u];
  let m = i % 4u;
  return ${vec4ElementWgsl("v", "m")};
}`
    : ""
}
${coefsWgsl("e_coefs", "e_gate", "e_p.scale", g.comps.length)}
fn epilogue(t: u32, o: u32) -> f32 {
  let e_c = e_coefs();
  var acc = 0.0;
${
  vec4 ? directTermsVec4(g) : directTerms(g, {
    prm: "e_prm",
    field: "e_field",
    coefs: "e_c",
    input: (t, k) => `inputAt(${t}, ${k})`,
  })
}
  return acc;
}`);

// Register tiling. On every GPU (and most on a CPU rasteriser) a kernel whose every multiply-add
// loads two values from memory runs at load speed; an invocation that computes a TM×TN block
// of a small product loads TM + TN values per step of the reduction for TM·TN multiply-adds.

/** The largest of 4, 2, 1 dividing every `n`. */
function commonTile(...ns: number[]): number {
  return [4, 2, 1].find((t) => ns.every((n) => n % t === 0))!;
}

/** One TM×TN block of a product whose rows/columns may end inside the block (clamped). */
interface Tile {
  tm: number;
  tn: number;
  /** First row/column of the block. */
  row0: string;
  col0: string;
  /** Rows/columns of the product (a literal or an expression). */
  rows: string;
  cols: string;
  /** Whether the block can pass the last row/column (then loads clamp and stores are guarded). */
  rowEdge: boolean;
  colEdge: boolean;
  /** Reduction loops, outermost first. */
  loops: { v: string; n: string }[];
  /** The left factor at row `r` and the right at column `c`, for the current loop indices. */
  left: (r: string) => string;
  right: (c: string) => string;
  /** The statement storing `value` at (r, c). */
  store: (r: string, c: string, value: string, i: number, j: number) => string;
}

/** The WGSL block computing and storing one tile. */
function tile(t: Tile, indent = "  "): string {
  const rs = Array.from({ length: t.tm }, (_, i) => i);
  const cs = Array.from({ length: t.tn }, (_, j) => j);
  const lines: string[] = ["{"];
  for (const i of rs) {
    const r = i === 0 ? t.row0 : `${t.row0} + ${i}u`;
    lines.push(`  let r${i} = ${t.rowEdge ? `min(${r}, ${t.rows} - 1u)` : r};`);
  }
  for (const j of cs) {
    const c = j === 0 ? t.col0 : `${t.col0} + ${j}u`;
    lines.push(`  let c${j} = ${t.colEdge ? `min(${c}, ${t.cols} - 1u)` : c};`);
  }
  for (const i of rs) lines.push(`  var acc${i} = array<f32, ${t.tn}>();`);
  let depth = "  ";
  for (const l of t.loops) {
    lines.push(`${depth}for (var ${l.v} = 0u; ${l.v} < ${l.n}; ${l.v}++) {`);
    depth += "  ";
  }
  for (const i of rs) lines.push(`${depth}let l${i} = ${t.left(`r${i}`)};`);
  for (const j of cs) lines.push(`${depth}let q${j} = ${t.right(`c${j}`)};`);
  for (const i of rs) {
    for (const j of cs) lines.push(`${depth}acc${i}[${j}] += l${i} * q${j};`);
  }
  for (const _ of t.loops) {
    depth = depth.slice(2);
    lines.push(`${depth}}`);
  }
  for (const i of rs) {
    for (const j of cs) {
      const guards = [
        ...(t.rowEdge && i > 0 ? [`${t.row0} + ${i}u < ${t.rows}`] : []),
        ...(t.colEdge && j > 0 ? [`${t.col0} + ${j}u < ${t.cols}`] : []),
      ];
      const store = t.store(`r${i}`, `c${j}`, `acc${i}[${j}]`, i, j);
      lines.push(guards.length ? `  if (${guards.join(" && ")}) { ${store} }` : `  ${store}`);
    }
  }
  lines.push("}");
  return lines.map((l) => indent + l).join("\n");
}

/** Rows or columns of a block along a side of n (4, or n itself when shorter). */
const side = (n: number) => Math.min(4, n);
const blocks = (n: number) => Math.ceil(n / side(n));

/** The per-token (or per-layer) tiles of a product region: where it starts among the tiles. */
interface TileRegion {
  start: number;
  size: number;
  /** Blocks along the columns (the block index is l / across, l % across). */
  across: number;
}

/** How the tiled kernels split their work (all from the geometry). */
interface Tiling {
  /** y and dx blocks: TT tokens × TO (TJ) contiguous outputs sharing o1 (j1) in every component. */
  outTT: number;
  outTO: number;
  inTT: number;
  inTJ: number;
  /** Kernel 3's blocks per token, and each K/U region. */
  leftPerToken: number;
  kRegion: (TileRegion | null)[];
  uRegion: (TileRegion | null)[];
  /** Kernel 4's gradient blocks, and each dB/dA region. */
  gradTiles: number;
  bRegion: TileRegion[];
  aRegion: (TileRegion | null)[];
}

function tiling(g: Geometry): Tiling {
  const outTO = commonTile(g.dOut, ...g.comps.map((c) => c.mb));
  const inTJ = commonTile(g.dIn, ...g.comps.map((c) => c.nb));
  let left = 0;
  let grad = 0;
  const region = (rows: number, cols: number, at: number): TileRegion => ({
    start: at,
    size: blocks(rows) * blocks(cols),
    across: blocks(cols),
  });
  const kRegion: (TileRegion | null)[] = [];
  const uRegion: (TileRegion | null)[] = [];
  const bRegion: TileRegion[] = [];
  const aRegion: (TileRegion | null)[] = [];
  for (const c of g.comps) {
    const k = c.kOff === null ? null : region(c.na, c.mb, left);
    left += k?.size ?? 0;
    const u = c.uOff === null ? null : region(c.ma, c.nb, left);
    left += u?.size ?? 0;
    kRegion.push(k);
    uRegion.push(u);
    const b = region(c.mb, c.nb, grad);
    grad += b.size;
    const a = c.gA === null ? null : region(c.ma, c.na, grad);
    grad += a?.size ?? 0;
    bRegion.push(b);
    aRegion.push(a);
  }
  return {
    outTT: 16 / outTO,
    outTO,
    inTT: 16 / inTJ,
    inTJ,
    leftPerToken: left,
    kRegion,
    uRegion,
    gradTiles: grad,
    bRegion,
    aRegion,
  };
}

const tilings = new WeakMap<Geometry, Tiling>();
function tilingOf(g: Geometry): Tiling {
  let t = tilings.get(g);
  if (!t) tilings.set(g, t = tiling(g));
  return t;
}

/** The block's row and column starts for region-local block index `l`. */
const blockStart = (r: TileRegion, rows: number, cols: number) =>
  `let br = (l / ${r.across}u) * ${side(rows)}u;\n    let bc = (l % ${r.across}u) * ${
    side(cols)
  }u;`;

/** A tile over region r of a rows × cols product. */
function regionTile(
  r: TileRegion,
  rows: number,
  cols: number,
  rest: Pick<Tile, "loops" | "left" | "right" | "store">,
): { start: number; size: number; body: string } {
  return {
    start: r.start,
    size: r.size,
    body: `    ${blockStart(r, rows, cols)}\n` + tile({
      tm: side(rows),
      tn: side(cols),
      row0: "br",
      col0: "bc",
      rows: `${rows}u`,
      cols: `${cols}u`,
      rowEdge: rows % side(rows) !== 0,
      colEdge: cols % side(cols) !== 0,
      ...rest,
    }, "    "),
  };
}

/**
 * Output blocks of TT tokens × TO contiguous outputs (kernel 2's y, kernel 4's dx): per component,
 * Σ_k src[t, row(o), k]·prm[…] accumulated as cᵢ·s into o{i}_{j}; the caller writes them.
 */
function outputBlocks(
  tt: number,
  to: number,
  comps: {
    i: number;
    span: number; // mb (y) or nb (dx): outputs o = o1·span + o2
    inner: number; // the reduction length
    left: (t: string) => string; // at token t, given o1 and k
    right: (o2: string) => string; // at column o2 of the component, given k
  }[],
): string {
  const lines = [];
  for (let i = 0; i < tt; i++) {
    for (let j = 0; j < to; j++) lines.push(`  var o${i}_${j} = 0.0;`);
  }
  for (const c of comps) {
    lines.push(`  {\n    let o1 = o0 / ${c.span}u;\n    let o20 = o0 % ${c.span}u;`);
    lines.push(tile({
      tm: tt,
      tn: to,
      row0: "t0",
      col0: "o20",
      rows: "p.tokens",
      cols: `${c.span}u`,
      rowEdge: true,
      colEdge: false,
      loops: [{ v: "k", n: `${c.inner}u` }],
      left: c.left,
      right: c.right,
      store: (_r, _c, v, i, j) => `o${i}_${j} += cf[${c.i}] * ${v};`,
    }, "    "));
    lines.push("  }");
  }
  return lines.join("\n");
}

/** Write the output blocks: `dst[(t0 + i)·width + o0 + j] (op)= o{i}_{j}` for tokens in range. */
function writeBlocks(tt: number, to: number, dst: string, width: string, op: string): string {
  const lines = [];
  for (let i = 0; i < tt; i++) {
    const w = Array.from(
      { length: to },
      (_, j) => `${dst}[(t0 + ${i}u) * ${width} + o0 + ${j}u] ${op} o${i}_${j};`,
    ).join(" ");
    lines.push(i === 0 ? `  ${w}` : `  if (t0 + ${i}u < p.tokens) { ${w} }`);
  }
  return lines.join("\n");
}

/** `let a{i} = …; let b{i} = …;` (and the gradients' offsets) for every component. */
function factorOffsets(g: Geometry, fields: { name: string; field: number }[]): string {
  return g.comps.flatMap((_, i) =>
    fields.map((f) => `  let ${f.name}${i} = field(${i}u, ${f.field}u);`)
  ).join("\n");
}

// Kernel 2: y[t, o] += Σᵢ cᵢ·Σ_j2 W[t, o1, j2]·B[o2, j2] (X for an identity A), in blocks of
// TT tokens × TO outputs.
const forwardRight = memoWgsl((g: Geometry) => {
  const T = tilingOf(g);
  return /* wgsl */ `
${storage(forwardRightBindings(g))}
${common(g)}
${COEFS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let t0 = (idx / ${g.dOut / T.outTO}u) * ${T.outTT}u;
  let o0 = (idx % ${g.dOut / T.outTO}u) * ${T.outTO}u;
  let cf = coefs();
${factorOffsets(g, [{ name: "b", field: 6 }])}
${
    outputBlocks(
      T.outTT,
      T.outTO,
      g.comps.map((c, i) => ({
        i,
        span: c.mb,
        inner: c.nb,
        left: (t) =>
          c.wOff === null
            ? `x[${t} * DIN + o1 * ${c.nb}u + k]`
            : `w[${t} * ${g.w}u + ${c.wOff}u + o1 * ${c.nb}u + k]`,
        right: (o2) => `prm[b${i} + ${o2} * ${c.nb}u + k]`,
      })),
    )
  }
${writeBlocks(T.outTT, T.outTO, "y", "DOUT", "+=")}
}`;
});

// Kernel 3: K[t, j1, o2] = Σ_o1 A[o1, j1]·dY[t, o1, o2];  U[t, o1, j2] = Σ_o2 dY[t, o1, o2]·B[o2, j2],
// in 4×4 blocks per token.
const backwardLeft = memoWgsl((g: Geometry) => {
  const T = tilingOf(g);
  return /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> ku: array<f32>;
${common(g)}
const PER = ${g.ku}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let t = idx / ${T.leftPerToken}u;
  let e = idx % ${T.leftPerToken}u;
${factorOffsets(g, [{ name: "a", field: 5 }, { name: "b", field: 6 }])}
  ${
    regions(g.comps.flatMap((c, i) => [
      ...(T.kRegion[i] === null ? [] : [regionTile(T.kRegion[i]!, c.na, c.mb, {
        loops: [{ v: "o1", n: `${c.ma}u` }],
        left: (r) => `prm[a${i} + o1 * ${c.na}u + ${r}]`,
        right: (col) => `dy[t * DOUT + o1 * ${c.mb}u + ${col}]`,
        store: (r, col, v) => `ku[t * PER + ${c.kOff}u + ${r} * ${c.mb}u + ${col}] = ${v};`,
      })]),
      ...(T.uRegion[i] === null ? [] : [regionTile(T.uRegion[i]!, c.ma, c.nb, {
        loops: [{ v: "o2", n: `${c.mb}u` }],
        left: (r) => `dy[t * DOUT + ${r} * ${c.mb}u + o2]`,
        right: (col) => `prm[b${i} + o2 * ${c.nb}u + ${col}]`,
        store: (r, col, v) => `ku[t * PER + ${c.uOff}u + ${r} * ${c.nb}u + ${col}] = ${v};`,
      })]),
    ]))
  }
}`;
});

/** Kernel 4's dx blocks for `tokens`. */
function dxBlocks(g: Geometry, tokens: number): number {
  const T = tilingOf(g);
  return Math.ceil(tokens / T.inTT) * (g.dIn / T.inTJ);
}

/** K[t, row, k] of component c: dY for an identity A. */
const kAt = (c: Geometry["comps"][number], t: string, row: string, k: string) =>
  c.kOff === null
    ? `dy[${t} * DOUT + ${row} * ${c.mb}u + ${k}]`
    : `ku[${t} * PER + ${c.kOff}u + ${row} * ${c.mb}u + ${k}]`;

// Kernel 4: dx[t, j1, j2] = Σᵢ cᵢ·Σ_o2 K[t, j1, o2]·B[o2, j2], in blocks of TT tokens × TJ inputs.
const backwardInput = memoWgsl((g: Geometry) => {
  const T = tilingOf(g);
  return /* wgsl */ `
${storage(backwardBindings(g, "dx"))}
${common(g)}
const PER = ${g.ku}u;
${COEFS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let cf = coefs();
${factorOffsets(g, [{ name: "b", field: 6 }])}
  let t0 = (idx / ${g.dIn / T.inTJ}u) * ${T.inTT}u;
  let o0 = (idx % ${g.dIn / T.inTJ}u) * ${T.inTJ}u;
${
    outputBlocks(
      T.inTT,
      T.inTJ,
      g.comps.map((c, i) => ({
        i,
        span: c.nb,
        inner: c.mb,
        left: (t) => kAt(c, t, "o1", "k"),
        right: (j2) => `prm[b${i} + k * ${c.nb}u + ${j2}]`,
      })),
    )
  }
${writeBlocks(T.inTT, T.inTJ, "dx", "DIN", "=")}
}`;
});

// Kernel 5: every factor's gradient in 4×4 blocks, summed over the tokens (overwritten, or added
// when p.beta: token chunks). A separate dispatch from dx: on a CPU rasteriser the long token
// loops in the same shader as the dx blocks slowed those down several times.
const backwardFactors = memoWgsl((g: Geometry) => {
  const T = tilingOf(g);
  const accumulate = (at: string, i: number, v: string) =>
    `{ let at = ${at}; var prev = 0.0; if (p.beta != 0u) { prev = grd[at]; } ` +
    `grd[at] = prev + cf[${i}] * ${v}; }`;
  return /* wgsl */ `
${storage(backwardBindings(g, "grad"))}
${common(g)}
const PER = ${g.ku}u;
${COEFS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = flat(gid, nwg);
  if (e >= p.n) { return; }
  let cf = coefs();
${factorOffsets(g, [{ name: "da", field: 7 }, { name: "db", field: 8 }])}
  ${
    regions(g.comps.flatMap((c, i) => [
      // dB[o2, j2] = cᵢ·Σ_t Σ_j1 K[t, j1, o2]·X[t, j1, j2]
      regionTile(T.bRegion[i], c.mb, c.nb, {
        loops: [{ v: "t", n: "p.tokens" }, { v: "j1", n: `${c.na}u` }],
        left: (r) => kAt(c, "t", "j1", r),
        right: (col) => `x[t * DIN + j1 * ${c.nb}u + ${col}]`,
        store: (r, col, v) => accumulate(`db${i} + ${r} * ${c.nb}u + ${col}`, i, v),
      }),
      // dA[o1, j1] = cᵢ·Σ_t Σ_j2 U[t, o1, j2]·X[t, j1, j2]
      ...(T.aRegion[i] === null ? [] : [regionTile(T.aRegion[i]!, c.ma, c.na, {
        loops: [{ v: "t", n: "p.tokens" }, { v: "j2", n: `${c.nb}u` }],
        left: (r) => `ku[t * PER + ${c.uOff}u + ${r} * ${c.nb}u + j2]`,
        right: (col) => `x[t * DIN + ${col} * ${c.nb}u + j2]`,
        store: (r, col, v) => accumulate(`da${i} + ${r} * ${c.na}u + ${col}`, i, v),
      })]),
    ]))
  }
}`;
});

// Kernel 6: uᵢ = ⟨Bᵢ, dBᵢ⟩ (= αᵢ·∂L/∂αᵢ), dg_j = u_j − α_j·Σ uᵢ.
const gateGrad = memoWgsl((g: Geometry) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> grd: array<f32>;
${common(g)}
${COEFS}
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> u: array<f32, R>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  for (var i = 0u; i < R; i++) {
    let n = field(i, 2u) * field(i, 3u);
    let b0 = field(i, 6u);
    let g0 = field(i, 8u);
    var s = 0.0;
    for (var k = t; k < n; k += ${WG}u) { s += prm[b0 + k] * grd[g0 + k]; }
    red[t] = s;
    workgroupBarrier();
    for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
      if (t < h) { red[t] += red[t + h]; }
      workgroupBarrier();
    }
    if (t == 0u) { u[i] = red[0]; }
    workgroupBarrier();
  }
  if (t == 0u) {
    let c = coefs();
    var total = 0.0;
    for (var i = 0u; i < R; i++) { total += u[i]; }
    let dg = word(6u);
    for (var i = 0u; i < R; i++) { grd[dg + i] = u[i] - c[i] / p.scale * total; }
  }
}`);

/** A plan with the layer's gate logits and scale s. */
export interface FusedKronLayer {
  /** Offsets and shapes. */
  plan: FusedKronPlan;
  /** Gate logits [r]. */
  gate: GpuTensor;
  /** The global scale s. */
  scale: number;
}

async function record(
  rt: GpuRuntime,
  batch: Batch,
  code: string,
  label: string,
  b: FusedKronLayer,
  fields: { tokens: number; beta?: number; n: number },
  buffers: Binding[],
  groups: [number, number?, number?] = grid1d(rt, fields.n, WG), // one invocation per n
): Promise<void> {
  const pipeline = await rt.pipelines.get(code, label);
  batch.dispatch(
    pipeline,
    [
      batch.uniform(PARAMS.pack({
        tokens: fields.tokens,
        beta: fields.beta ?? 0,
        scale: b.scale,
        n: fields.n,
      })),
      batch.uniform(b.plan.desc),
      ...buffers,
    ],
    groups,
  );
}

/**
 * y [tokens, dOut] += ΔW·x for x [tokens, dIn]; `w` is scratch [tokens·forwardPerToken] (unused,
 * may be null, when tokens·dOut·dIn·r ≤ `directMacs`: then one dispatch that never forms W does it,
 * where that costs less than a second dispatch).
 */
export async function fusedKronForward(
  rt: GpuRuntime,
  batch: Batch,
  b: FusedKronLayer,
  a: { x: GpuTensor; y: GpuTensor; w: GpuTensor | null; tokens: number; directMacs: number },
): Promise<void> {
  const { plan } = b;
  const { x, y, w, tokens } = a;
  if (x.size !== tokens * plan.dIn || y.size !== tokens * plan.dOut) {
    throw new RangeError("fusedKronForward: x or y shape");
  }
  const per = plan.forwardPerToken;
  const gate = b.gate.binding;
  const g = geometryOf(plan);
  if (fusedKronDirect(plan, tokens, a.directMacs)) {
    const n = tokens * plan.dOut;
    await record(
      rt,
      batch,
      forwardDirect(g),
      "adapter/kron-fused-fwd-direct",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, gate, x.binding, y.binding],
    );
    return;
  }
  if (per > 0) {
    if (!w || w.size < tokens * per) throw new RangeError("fusedKronForward: scratch");
    const n = tokens * per;
    await record(
      rt,
      batch,
      forwardLeft(g),
      "adapter/kron-fused-fwd-left",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, x.binding, w.binding],
    );
  }
  const tiles = tilingOf(g);
  const n = Math.ceil(tokens / tiles.outTT) * (plan.dOut / tiles.outTO);
  await record(
    rt,
    batch,
    forwardRight(g),
    "adapter/kron-fused-fwd-right",
    b,
    {
      tokens,
      n,
    },
    [
      { buffer: plan.params },
      gate,
      ...(g.comps.some((c) => c.wOff === null) ? [x.binding] : []),
      ...(per > 0 ? [w!.binding] : []),
      y.binding,
    ],
  );
}

/**
 * Whether {@link fusedKronForward} of `tokens` rows is the direct kernel (tokens·dOut·dIn·r ≤
 * `directMacs`): then {@link fusedKronEpilogue} can do it inside the base product instead.
 */
export function fusedKronDirect(plan: FusedKronPlan, tokens: number, directMacs: number): boolean {
  return tokens * plan.dOut * plan.dIn * plan.r <= directMacs;
}

/**
 * The direct forward (y += ΔW·x, every component) as a product epilogue: the base layer's
 * frozen-weight product adds it to each output it stores, so the adapter costs no dispatch of its
 * own. Per output, the same dIn·r multiply-adds as the direct kernel.
 */
export function fusedKronEpilogue(b: FusedKronLayer): ProductEpilogue {
  const g = geometryOf(b.plan);
  const { desc } = b.plan;
  const bAligned = g.comps.every((c, i) =>
    c.nb % 4 === 0 && desc[HEADER + FIELDS * i + 6] % 4 === 0
  );
  return {
    name: "kron",
    wgsl: (first, vectorInput) => epilogueWgsl(g, first, vectorInput && bAligned),
    bindings: (batch) => [
      batch.uniform(EPILOGUE_PARAMS.pack({ scale: b.scale })),
      batch.uniform(b.plan.desc),
      { buffer: b.plan.params },
      b.gate.binding,
    ],
  };
}

/**
 * dx [tokens, dIn] = ΔWᵀ·dy (overwritten); every component's dA/dB (overwritten, or added when
 * `accumulate`: token chunks); `ku` is scratch [tokens·backwardPerToken].
 */
export async function fusedKronBackward(
  rt: GpuRuntime,
  batch: Batch,
  b: FusedKronLayer,
  a: {
    x: GpuTensor;
    dy: GpuTensor;
    dx: GpuTensor;
    ku: GpuTensor | null;
    tokens: number;
    accumulate: boolean;
  },
): Promise<void> {
  const { plan } = b;
  const { x, dy, dx, ku, tokens } = a;
  if (
    x.size !== tokens * plan.dIn || dx.size !== x.size || dy.size !== tokens * plan.dOut
  ) throw new RangeError("fusedKronBackward: shapes");
  const per = plan.backwardPerToken;
  const gate = b.gate.binding;
  const g = geometryOf(plan);
  if (per > 0) {
    if (!ku || ku.size < tokens * per) throw new RangeError("fusedKronBackward: scratch");
    const n = tokens * tilingOf(g).leftPerToken;
    await record(
      rt,
      batch,
      backwardLeft(g),
      "adapter/kron-fused-bwd-left",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, dy.binding, ku.binding],
    );
  }
  const dyIfRead = g.comps.some((c) => c.kOff === null) ? [dy.binding] : [];
  const kuIfRead = per > 0 ? [ku!.binding] : [];
  const nx = dxBlocks(g, tokens);
  await record(
    rt,
    batch,
    backwardInput(g),
    "adapter/kron-fused-bwd-dx",
    b,
    { tokens, n: nx },
    [{ buffer: plan.params }, gate, ...dyIfRead, ...kuIfRead, dx.binding],
  );
  const ng = tilingOf(g).gradTiles;
  await record(
    rt,
    batch,
    backwardFactors(g),
    "adapter/kron-fused-bwd-factors",
    b,
    { tokens, n: ng, beta: a.accumulate ? 1 : 0 },
    [gate, x.binding, ...dyIfRead, ...kuIfRead, { buffer: plan.grads }],
  );
}

/**
 * The gate's gradient (into the plan's `dgate`) from the finished dB's: dg_j = u_j − α_j·Σ uᵢ
 * with uᵢ = ⟨Bᵢ, dBᵢ⟩.
 */
export async function fusedKronGateGrad(
  rt: GpuRuntime,
  batch: Batch,
  b: FusedKronLayer,
): Promise<void> {
  if (b.plan.desc[6] === NONE) throw new RangeError("fusedKronGateGrad: the plan has no dgate");
  await record(
    rt,
    batch,
    gateGrad(geometryOf(b.plan)),
    "adapter/kron-fused-gate-grad",
    b,
    { tokens: 0, n: b.plan.r },
    [{ buffer: b.plan.params }, b.gate.binding, { buffer: b.plan.grads }],
    [1],
  );
}
