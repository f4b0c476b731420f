/**
 * Small element-wise and reduction kernels the adapters need around the matmuls: the softmax gate
 * of MoKA applied on the GPU (so the gate never round-trips to the host), batched transposes,
 * dropout, and DoRA's row norms (from factors, never the dense matrix) and column scalings. Each has a CPU twin in `ops_cpu.ts` that the
 * tests compare it with.
 *
 * All kernels are 1-D over elements with 256 invocations per workgroup; large launches fold into
 * a 2-D grid (x · 65535 limit) and recover the flat index.
 */
import type { Batch } from "../runtime/batch.ts";
import type { GpuRuntime } from "../runtime/runtime.ts";
import type { GpuTensor } from "../runtime/tensor.ts";
import { FLAT_INDEX_WGSL, launch, uniformLayout } from "../runtime/launch.ts";

export { grid1d } from "../runtime/launch.ts";

const WG = 256;

const INDEX = FLAT_INDEX_WGSL;

// softmax(gate)[i], stable: subtract the max. r is small (≤ 64), so every invocation recomputes.
const GATE = /* wgsl */ `
fn gateWeight(i: u32, r: u32) -> f32 {
  var mx = gate[0];
  for (var j = 1u; j < r; j++) { mx = max(mx, gate[j]); }
  var sum = 0.0;
  for (var j = 0u; j < r; j++) { sum += exp(gate[j] - mx); }
  return exp(gate[i] - mx) / sum;
}`;

const GATED_AXPY_P = uniformLayout(
  "P",
  [["n", "u32"], ["comp", "u32"], ["r", "u32"], ["scale", "f32"], ["beta", "f32"]] as const,
);

const GATED_AXPY_WGSL = /* wgsl */ `
${GATED_AXPY_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
${INDEX}
${GATE}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let a = p.scale * gateWeight(p.comp, p.r);
  var prev = 0.0;
  if (p.beta != 0.0) { prev = p.beta * dst[i]; }
  dst[i] = prev + a * src[i];
}`;

/**
 * dst = beta·dst + scale·softmax(gate)[comp]·src over `n` elements. MoKA uses it to add a
 * component's output with its gate weight (beta = 1) and to scale dy per component (beta = 0).
 */
export async function gatedAxpy(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    dst: GpuTensor;
    src: GpuTensor;
    gate: GpuTensor;
    comp: number;
    scale: number;
    beta: number;
  },
): Promise<void> {
  const { dst, src, gate, comp, scale, beta } = args;
  const n = dst.size;
  if (src.size !== n) throw new RangeError(`gatedAxpy: src ${src.size} vs dst ${n} elements`);
  if (comp >= gate.size) throw new RangeError(`gatedAxpy: component ${comp} of ${gate.size}`);
  await launch(
    rt,
    batch,
    { code: GATED_AXPY_WGSL, label: "adapter/gated-axpy" },
    GATED_AXPY_P.pack({ n, comp, r: gate.size, scale, beta }),
    [gate, src, dst],
    n,
  );
}

const TRANSPOSE_P = uniformLayout("P", [["n", "u32"], ["rows", "u32"], ["cols", "u32"]] as const);

const TRANSPOSE_WGSL = /* wgsl */ `
${TRANSPOSE_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  // i indexes dst [batch, cols, rows]; read src [batch, rows, cols].
  let per = p.rows * p.cols;
  let b = i / per;
  let rem = i - b * per;
  let c = rem / p.rows;
  let r = rem - c * p.rows;
  dst[i] = src[b * per + r * p.cols + c];
}`;

/** dst[b] = src[b]ᵀ for a batch of rows×cols matrices. */
export async function transposeBatched(
  rt: GpuRuntime,
  batch: Batch,
  args: { dst: GpuTensor; src: GpuTensor; rows: number; cols: number },
): Promise<void> {
  const { dst, src, rows, cols } = args;
  const n = src.size;
  if (dst.size !== n || n % (rows * cols) !== 0) {
    throw new RangeError(`transpose: ${n} → ${dst.size} elements, matrices ${rows}×${cols}`);
  }
  await launch(
    rt,
    batch,
    { code: TRANSPOSE_WGSL, label: "adapter/transpose" },
    TRANSPOSE_P.pack({ n, rows, cols }),
    [src, dst],
    n,
  );
}

const DOT_P = uniformLayout("P", [["n", "u32"], ["index", "u32"]] as const);

const DOT_WGSL = /* wgsl */ `
${DOT_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> partial: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i += ${WG}u) { s += a[i] * b[i]; }
  partial[lid] = s;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w >>= 1u) {
    if (lid < w) { partial[lid] += partial[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[p.index] = partial[0]; }
}`;

/** out[index] = Σ a·b (one workgroup: meant for factor-sized vectors, not activations). */
export async function dotInto(
  rt: GpuRuntime,
  batch: Batch,
  args: { out: GpuTensor; index: number; a: GpuTensor; b: GpuTensor },
): Promise<void> {
  const { out, index, a, b } = args;
  if (a.size !== b.size) throw new RangeError(`dot: ${a.size} vs ${b.size} elements`);
  if (index >= out.size) throw new RangeError(`dot: index ${index} of ${out.size}`);
  await launch(
    rt,
    batch,
    { code: DOT_WGSL, label: "adapter/dot" },
    DOT_P.pack({ n: a.size, index }),
    [a, b, out],
    "one",
  );
}

const GATE_GRAD_P = uniformLayout("P", [["r", "u32"]] as const);

const GATE_GRAD_WGSL = /* wgsl */ `
${GATE_GRAD_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> dg: array<f32>;
${GATE}
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  for (var i = 0u; i < p.r; i++) { total += u[i]; }
  for (var j = 0u; j < p.r; j++) { dg[j] = u[j] - gateWeight(j, p.r) * total; }
}`;

/**
 * Softmax backward for the gate: given u_i = α_i·∂L/∂α_i, dg_j = u_j − α_j·Σ_i u_i.
 * (u_i is ⟨B_i, dB_i⟩: the component output is linear in B_i, see `kron_gpu.ts`.)
 */
export async function gateBackward(
  rt: GpuRuntime,
  batch: Batch,
  args: { dg: GpuTensor; gate: GpuTensor; u: GpuTensor },
): Promise<void> {
  const { dg, gate, u } = args;
  if (dg.size !== gate.size || u.size !== gate.size) {
    throw new RangeError(`gateBackward: sizes ${dg.size}, ${gate.size}, ${u.size}`);
  }
  await launch(
    rt,
    batch,
    { code: GATE_GRAD_WGSL, label: "adapter/gate-grad" },
    GATE_GRAD_P.pack({ r: gate.size }),
    [gate, u, dg],
    "one",
  );
}

const DROPOUT_P = uniformLayout(
  "P",
  [["n", "u32"], ["seed", "u32"], ["p", "f32"], ["scale", "f32"]] as const,
);

const DROPOUT_WGSL = /* wgsl */ `
${DROPOUT_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
${INDEX}
fn hash32(x: u32) -> u32 {
  let state = x * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  // Compare in integers: the f32 of a u32 rounds, the CPU twin divides in float64.
  let h = hash32(hash32(p.seed) ^ i);
  let keep = f32(h >> 8u) >= p.p * 16777216.0;
  dst[i] = select(0.0, src[i] * p.scale, keep);
}`;

/**
 * Inverted dropout: dst = keep ? src/(1−p) : 0, the keep mask a hash of (seed, index) so the
 * backward pass and the CPU reference regenerate it instead of storing it.
 */
export async function dropout(
  rt: GpuRuntime,
  batch: Batch,
  args: { dst: GpuTensor; src: GpuTensor; p: number; seed: number },
): Promise<void> {
  const { dst, src, p, seed } = args;
  if (dst.size !== src.size) throw new RangeError(`dropout: ${src.size} vs ${dst.size}`);
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p=${p} must be in [0, 1)`);
  await launch(
    rt,
    batch,
    { code: DROPOUT_WGSL, label: "adapter/dropout" },
    DROPOUT_P.pack({ n: src.size, seed: seed >>> 0, p, scale: 1 / (1 - p) }),
    [src, dst],
    src.size,
  );
}

// n_o = ‖W_o + s·(B·A)_o‖ from ‖W_o‖², C = A·Wᵀ [r, dOut] and G = A·Aᵀ [r, r]:
// ‖W_o‖² + 2s·Σ_k B_ok·C_ko + s²·Σ_jk B_oj·G_jk·B_ok — the norm of V without forming V.
const DORA_NORMS_P = uniformLayout("P", [["rows", "u32"], ["r", "u32"], ["scale", "f32"]] as const);

const DORA_NORMS_WGSL = /* wgsl */ `
${DORA_NORMS_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> wsq: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> norm: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat(gid, nwg);
  if (o >= p.rows) { return; }
  var cross = 0.0;
  var quad = 0.0;
  for (var k = 0u; k < p.r; k++) {
    let bk = b[o * p.r + k];
    cross = fma(bk, c[k * p.rows + o], cross);
    var gb = 0.0;
    for (var j = 0u; j < p.r; j++) { gb = fma(g[k * p.r + j], b[o * p.r + j], gb); }
    quad = fma(bk, gb, quad);
  }
  norm[o] = sqrt(max(0.0, wsq[o] + 2.0 * p.scale * cross + p.scale * p.scale * quad));
}`;

/**
 * DoRA's row norms ‖W + s·B·A‖ without the dense matrix: from the base's squared row norms
 * `wsq` [dOut], B [dOut, r], C = A·Wᵀ [r, dOut] and G = A·Aᵀ [r, r].
 */
export async function doraNorms(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    norm: GpuTensor;
    wsq: GpuTensor;
    b: GpuTensor;
    c: GpuTensor;
    g: GpuTensor;
    scale: number;
  },
): Promise<void> {
  const { norm, wsq, b, c, g, scale } = args;
  const rows = norm.size;
  const r = b.size / rows;
  if (wsq.size !== rows || !Number.isInteger(r) || c.size !== r * rows || g.size !== r * r) {
    throw new RangeError(`doraNorms: mismatched sizes`);
  }
  await launch(
    rt,
    batch,
    { code: DORA_NORMS_WGSL, label: "dora/norms" },
    DORA_NORMS_P.pack({ rows, r, scale }),
    [wsq, b, c, g, norm],
    rows,
  );
}

// y = W·x + (c − 1)·W·xd + c·s·(B·A·xd), c = m/‖W + s·B·A‖ per column (NVlabs/DoRA's form; it is
// c·(W·x + s·B·A·x) without dropout, where xd = x). y holds W·x on entry; with dropout `pre` holds
// W·xd, without it pre's content is unused. pre = W·xd + s·lora is kept for the magnitude's gradient.
const DORA_FORWARD_P = uniformLayout(
  "P",
  [["n", "u32"], ["cols", "u32"], ["scale", "f32"], ["dropped", "u32"]] as const,
);

const DORA_FORWARD_WGSL = /* wgsl */ `
${DORA_FORWARD_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> lora: array<f32>;
@group(0) @binding(2) var<storage, read> magnitude: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> pre: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let o = i % p.cols;
  let c = magnitude[o] / norm[o];
  var wd = y[i];
  if (p.dropped != 0u) { wd = pre[i]; }
  let v = wd + p.scale * lora[i];
  y[i] = y[i] + (c - 1.0) * wd + c * p.scale * lora[i];
  pre[i] = v;
}`;

/**
 * DoRA's output: y (holding W·x) becomes c·(W·x + s·lora) with c = m/‖W+ΔW‖ per output column, and
 * pre = W·x + s·lora. With `dropped` (training dropout, NVlabs/DoRA's form) lora = B·A·xd and pre
 * holds W·xd on entry: y = W·x + (c − 1)·W·xd + c·s·lora, pre = W·xd + s·lora.
 */
export async function doraForward(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    y: GpuTensor;
    lora: GpuTensor;
    magnitude: GpuTensor;
    norm: GpuTensor;
    pre: GpuTensor;
    scale: number;
    dropped?: boolean;
  },
): Promise<void> {
  const { y, lora, magnitude, norm, pre, scale } = args;
  const cols = magnitude.size;
  if (lora.size !== y.size || pre.size !== y.size || norm.size !== cols || y.size % cols) {
    throw new RangeError(`doraForward: mismatched sizes`);
  }
  await launch(
    rt,
    batch,
    { code: DORA_FORWARD_WGSL, label: "dora/forward" },
    DORA_FORWARD_P.pack({ n: y.size, cols, scale, dropped: args.dropped ? 1 : 0 }),
    [lora, magnitude, norm, pre, y],
    y.size,
  );
}

const DORA_BACKWARD_P = uniformLayout("P", [["tokens", "u32"], ["cols", "u32"]] as const);

const DORA_BACKWARD_WGSL = /* wgsl */ `
${DORA_BACKWARD_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> pre: array<f32>;
@group(0) @binding(3) var<storage, read> magnitude: array<f32>;
@group(0) @binding(4) var<storage, read> norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> dm: array<f32>;
@group(0) @binding(6) var<storage, read_write> dyScaled: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat(gid, nwg);
  if (o >= p.cols) { return; }
  let inv = 1.0 / norm[o];
  let s = magnitude[o] * inv;
  var acc = 0.0;
  for (var t = 0u; t < p.tokens; t++) {
    let i = t * p.cols + o;
    acc += dy[i] * pre[i];
    dyScaled[i] = s * dy[i];
  }
  dm[o] = acc * inv;
}`;

/** DoRA backward, per output column o: dm_o = Σ_t dy·pre/‖·‖_o and dyScaled = dy·m_o/‖·‖_o. */
export async function doraBackward(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    dy: GpuTensor;
    pre: GpuTensor;
    magnitude: GpuTensor;
    norm: GpuTensor;
    dm: GpuTensor;
    dyScaled: GpuTensor;
  },
): Promise<void> {
  const { dy, pre, magnitude, norm, dm, dyScaled } = args;
  const cols = magnitude.size;
  if (pre.size !== dy.size || dyScaled.size !== dy.size || dm.size !== cols || dy.size % cols) {
    throw new RangeError(`doraBackward: mismatched sizes`);
  }
  await launch(
    rt,
    batch,
    { code: DORA_BACKWARD_WGSL, label: "dora/backward" },
    DORA_BACKWARD_P.pack({ tokens: dy.size / cols, cols }),
    [dy, pre, magnitude, norm, dm, dyScaled],
    cols,
  );
}

// Through a non-detached norm, dV = c ⊙ V per row with c_o = −m_o·dm_o/n_o². With V = W + s·B·A
// never formed: dB += s·dV·Aᵀ = s·c_o·(Cᵀ + s·B·G)[o, k], and for dA the caller needs
// E = s·(c ⊙ B)ᵀ [r, dOut] (dA += E·W + s·(E·B)·A).
const DORA_NORM_GRAD_P = uniformLayout(
  "P",
  [["rows", "u32"], ["r", "u32"], ["scale", "f32"]] as const,
);

const DORA_NORM_GRAD_WGSL = /* wgsl */ `
${DORA_NORM_GRAD_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read> coef: array<f32>; // magnitude, norm, dm: [3, rows]
@group(0) @binding(5) var<storage, read_write> db: array<f32>;
@group(0) @binding(6) var<storage, read_write> e: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.rows * p.r) { return; }
  let o = i / p.r;
  let k = i - o * p.r;
  let n = coef[p.rows + o];
  let cs = -coef[o] * coef[2u * p.rows + o] / (n * n) * p.scale;
  var bg = 0.0;
  for (var j = 0u; j < p.r; j++) { bg = fma(b[o * p.r + j], g[j * p.r + k], bg); }
  db[i] += cs * (c[k * p.rows + o] + p.scale * bg);
  e[k * p.rows + o] = cs * b[i];
}`;

/**
 * The part of DoRA's gradient that flows through a non-detached norm, without dense matrices:
 * adds it to dB [dOut, r] and writes E = s·(c ⊙ B)ᵀ [r, dOut] for the caller's dA += E·W +
 * s·(E·B)·A. `coef` packs magnitude, norm and dm as [3, dOut].
 */
export async function doraNormGrad(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    db: GpuTensor;
    e: GpuTensor;
    b: GpuTensor;
    c: GpuTensor;
    g: GpuTensor;
    coef: GpuTensor;
    scale: number;
  },
): Promise<void> {
  const { db, e, b, c, g, coef, scale } = args;
  const rows = coef.size / 3;
  const r = b.size / rows;
  if (
    !Number.isInteger(r) || db.size !== b.size || e.size !== b.size || c.size !== b.size ||
    g.size !== r * r
  ) {
    throw new RangeError(`doraNormGrad: mismatched sizes`);
  }
  await launch(
    rt,
    batch,
    { code: DORA_NORM_GRAD_WGSL, label: "dora/norm-grad" },
    DORA_NORM_GRAD_P.pack({ rows, r, scale }),
    [b, c, g, coef, db, e],
    rows * r,
  );
}

const KRON_EXPAND_P = uniformLayout(
  "P",
  [
    ["rows", "u32"],
    ["cols", "u32"],
    ["mb", "u32"],
    ["nb", "u32"],
    ["comp", "u32"],
    ["r", "u32"],
    ["scale", "f32"],
    ["beta", "f32"],
  ] as const,
);

const KRON_EXPAND_WGSL = /* wgsl */ `
${KRON_EXPAND_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> w: array<f32>;
${INDEX}
${GATE}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.rows * p.cols) { return; }
  let o = i / p.cols;
  let c = i - o * p.cols;
  let na = p.cols / p.nb;
  let av = a[(o / p.mb) * na + c / p.nb];
  let bv = b[(o % p.mb) * p.nb + c % p.nb];
  var prev = 0.0;
  if (p.beta != 0.0) { prev = p.beta * w[i]; }
  w[i] = prev + p.scale * gateWeight(p.comp, p.r) * av * bv;
}`;

/**
 * w = beta·w + scale·softmax(gate)[comp]·(A ⊗ B): materialises one Kronecker component, for
 * merging and for the dense baseline of the benchmarks (training never calls it).
 */
export async function kronExpand(
  rt: GpuRuntime,
  batch: Batch,
  args: {
    w: GpuTensor;
    a: GpuTensor;
    b: GpuTensor;
    mb: number;
    nb: number;
    rows: number;
    cols: number;
    gate: GpuTensor;
    comp: number;
    scale: number;
    beta: number;
  },
): Promise<void> {
  const { w, a, b, mb, nb, rows, cols, gate, comp, scale, beta } = args;
  if (
    w.size !== rows * cols || rows % mb || cols % nb || b.size !== mb * nb ||
    a.size !== (rows / mb) * (cols / nb)
  ) {
    throw new RangeError(`kronExpand: shapes do not compose to ${rows}×${cols}`);
  }
  await launch(
    rt,
    batch,
    { code: KRON_EXPAND_WGSL, label: "kron/expand" },
    KRON_EXPAND_P.pack({ rows, cols, mb, nb, comp, r: gate.size, scale, beta }),
    [gate, a, b, w],
    rows * cols,
  );
}

const SUM_SLICES_P = uniformLayout(
  "P",
  [["n", "u32"], ["slices", "u32"], ["beta", "f32"]] as const,
);

const SUM_SLICES_WGSL = /* wgsl */ `
${SUM_SLICES_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.slices; k++) { s += src[k * p.n + i]; }
  var prev = 0.0;
  if (p.beta != 0.0) { prev = p.beta * dst[i]; }
  dst[i] = prev + s;
}`;

/** dst = beta·dst + Σ_k src[k] over `slices` stacked copies of dst's shape (split-K epilogue). */
export async function sumSlices(
  rt: GpuRuntime,
  batch: Batch,
  args: { dst: GpuTensor; src: GpuTensor; slices: number; beta?: number },
): Promise<void> {
  const { dst, src, slices, beta = 0 } = args;
  if (src.size !== dst.size * slices) {
    throw new RangeError(`sumSlices: ${src.size} ≠ ${slices}×${dst.size}`);
  }
  await launch(
    rt,
    batch,
    { code: SUM_SLICES_WGSL, label: "adapter/sum-slices" },
    SUM_SLICES_P.pack({ n: dst.size, slices, beta }),
    [src, dst],
    dst.size,
  );
}

const DIFFERENCE_P = uniformLayout("P", [["n", "u32"]] as const);

const DIFFERENCE_WGSL = /* wgsl */ `
${DIFFERENCE_P.wgsl}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
${INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  dst[i] = a[i] - b[i];
}`;

/** dst = a − b (e.g. the gradient of ½‖y − target‖²). */
export async function difference(
  rt: GpuRuntime,
  batch: Batch,
  args: { dst: GpuTensor; a: GpuTensor; b: GpuTensor },
): Promise<void> {
  const { dst, a, b } = args;
  if (a.size !== dst.size || b.size !== dst.size) {
    throw new RangeError(`difference: ${a.size} − ${b.size} → ${dst.size}`);
  }
  await launch(
    rt,
    batch,
    { code: DIFFERENCE_WGSL, label: "adapter/difference" },
    DIFFERENCE_P.pack({ n: dst.size }),
    [a, b, dst],
    dst.size,
  );
}
