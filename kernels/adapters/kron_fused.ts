/**
 * A gated mixture of Kronecker products, ΔW = Σᵢ cᵢ·(Aᵢ ⊗ Bᵢ) with cᵢ = s·softmax(g)ᵢ, in a
 * handful of dispatches for all components together: two for the forward, two for the backward
 * (plus one for the gate's gradient). Where a layer's work is small (a decoding step, a small
 * model) the cost of a step is the number of dispatches, not FLOPs; the matmul route of
 * `models/adapters/kron_gpu.ts` records 3 dispatches per component forward and 8 backward.
 *
 * The same vec-trick as that route, so ΔW is never formed. Per token t, X = reshape(x[t], na, nb),
 * dY = reshape(dy[t], ma, mb):
 *   forward   W = A·X                [ma, nb]   (kernel 1, every component)
 *             y += Σᵢ cᵢ·W·Bᵀ         [ma, mb]   (kernel 2)
 *   backward  K = Aᵀ·dY              [na, mb]   and, when dA is wanted, U = dY·B [ma, nb] (kernel 3)
 *             dx = Σᵢ cᵢ·K·B;  dB = cᵢ·Σ_t Kᵀ·X;  dA = cᵢ·Σ_t U·Xᵀ   (kernel 4: one dispatch whose
 *                                                   invocations are dx elements, then gradient
 *                                                   elements, each a dot product)
 *             dg_j = u_j − α_j·Σ uᵢ, uᵢ = ⟨Bᵢ, dBᵢ⟩  (kernel 5, one workgroup)
 * An identity A (MoKA_s) skips kernel 1 and K (X and dY are used directly) and has no dA.
 *
 * All of a layer's factors live in one parameter buffer and all its gradients in one gradient
 * buffer (a `TensorArena` group), so a kernel binds them once whatever the number of components;
 * a uniform descriptor gives each factor's offset and shape.
 */
import type { Batch, Binding } from "../runtime/batch.ts";
import { flatIndexWgsl, grid1d, packUniform } from "../runtime/launch.ts";
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
  /** Gradient elements computed by kernel 4. */
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

const common = (r: number) => /* wgsl */ `
struct P { tokens: u32, beta: u32, scale: f32, n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> desc: array<vec4<u32>, ${(HEADER + FIELDS * r) / 4}>;
${flatIndexWgsl(WG)}
fn word(w: u32) -> u32 { return desc[w / 4u][w % 4u]; }
fn field(i: u32, f: u32) -> u32 { return word(${HEADER}u + ${FIELDS}u * i + f); }
const R = ${r}u;`;

// cᵢ, for the kernels that bind the gate (auto layouts drop unused bindings).
const COEF = /* wgsl */ `
fn coef(i: u32) -> f32 {
  // s·softmax(gate)[i], recomputed per invocation (r is small).
  var mx = gate[0];
  for (var j = 1u; j < R; j++) { mx = max(mx, gate[j]); }
  var sum = 0.0;
  for (var j = 0u; j < R; j++) { sum += exp(gate[j] - mx); }
  return p.scale * exp(gate[i] - mx) / sum;
}`;

// Kernel 1: W[t, o1, j2] = Σ_j1 A[o1, j1]·X[t, j1, j2] for every component with an A.
const forwardLeft = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> w: array<f32>;
${common(r)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let per = word(3u);
  let t = idx / per;
  let e = idx % per;
  let dIn = word(1u);
  for (var i = 0u; i < R; i++) {
    let off = field(i, 9u);
    if (off == 0xffffffffu) { continue; }
    let ma = field(i, 0u); let na = field(i, 1u); let nb = field(i, 3u);
    if (e < off || e >= off + ma * nb) { continue; }
    let o1 = (e - off) / nb;
    let j2 = (e - off) % nb;
    let a0 = field(i, 5u) + o1 * na;
    var s = 0.0;
    for (var j1 = 0u; j1 < na; j1++) { s += prm[a0 + j1] * x[t * dIn + j1 * nb + j2]; }
    w[idx] = s;
    return;
  }
}`);

// Kernel 2: y[t, o] += Σᵢ cᵢ·Σ_j2 W[t, o1, j2]·B[o2, j2] (X for an identity A).
const forwardRight = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
${common(r)}
${COEF}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let dIn = word(1u);
  let dOut = word(2u);
  let per = word(3u);
  let t = idx / dOut;
  let o = idx % dOut;
  var acc = 0.0;
  for (var i = 0u; i < R; i++) {
    let mb = field(i, 2u); let nb = field(i, 3u);
    let o1 = o / mb;
    let o2 = o % mb;
    let b0 = field(i, 6u) + o2 * nb;
    let off = field(i, 9u);
    var s = 0.0;
    if (off == 0xffffffffu) {
      for (var j2 = 0u; j2 < nb; j2++) { s += x[t * dIn + o1 * nb + j2] * prm[b0 + j2]; }
    } else {
      let w0 = t * per + off + o1 * nb;
      for (var j2 = 0u; j2 < nb; j2++) { s += w[w0 + j2] * prm[b0 + j2]; }
    }
    acc += coef(i) * s;
  }
  y[idx] += acc;
}`);

// The forward in one dispatch for small problems (a decoding step): per output,
// y[t, o] += Σᵢ cᵢ·Σ_j1 A[o1, j1]·(Σ_j2 B[o2, j2]·X[t, j1, j2]), dIn multiply-adds per component.
const forwardDirect = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
${common(r)}
${COEF}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let dIn = word(1u);
  let dOut = word(2u);
  let t = idx / dOut;
  let o = idx % dOut;
  var acc = 0.0;
  for (var i = 0u; i < R; i++) {
    let na = field(i, 1u); let mb = field(i, 2u); let nb = field(i, 3u);
    let o1 = o / mb;
    let b0 = field(i, 6u) + (o % mb) * nb;
    let a0 = field(i, 5u);
    var s = 0.0;
    if (a0 == 0xffffffffu) {
      for (var j2 = 0u; j2 < nb; j2++) { s += x[t * dIn + o1 * nb + j2] * prm[b0 + j2]; }
    } else {
      for (var j1 = 0u; j1 < na; j1++) {
        var inner = 0.0;
        for (var j2 = 0u; j2 < nb; j2++) { inner += x[t * dIn + j1 * nb + j2] * prm[b0 + j2]; }
        s += prm[a0 + o1 * na + j1] * inner;
      }
    }
    acc += coef(i) * s;
  }
  y[idx] += acc;
}`);

// Kernel 3: K[t, j1, o2] = Σ_o1 A[o1, j1]·dY[t, o1, o2];  U[t, o1, j2] = Σ_o2 dY[t, o1, o2]·B[o2, j2].
const backwardLeft = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> ku: array<f32>;
${common(r)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let dOut = word(2u);
  let per = word(4u);
  let t = idx / per;
  let e = idx % per;
  for (var i = 0u; i < R; i++) {
    let ma = field(i, 0u); let na = field(i, 1u); let mb = field(i, 2u); let nb = field(i, 3u);
    let kOff = field(i, 10u);
    if (kOff != 0xffffffffu && e >= kOff && e < kOff + na * mb) {
      let j1 = (e - kOff) / mb;
      let o2 = (e - kOff) % mb;
      let a0 = field(i, 5u);
      var s = 0.0;
      for (var o1 = 0u; o1 < ma; o1++) { s += prm[a0 + o1 * na + j1] * dy[t * dOut + o1 * mb + o2]; }
      ku[idx] = s;
      return;
    }
    let uOff = field(i, 11u);
    if (uOff != 0xffffffffu && e >= uOff && e < uOff + ma * nb) {
      let o1 = (e - uOff) / nb;
      let j2 = (e - uOff) % nb;
      let b0 = field(i, 6u);
      var s = 0.0;
      for (var o2 = 0u; o2 < mb; o2++) { s += dy[t * dOut + o1 * mb + o2] * prm[b0 + o2 * nb + j2]; }
      ku[idx] = s;
      return;
    }
  }
}`);

// Kernel 4: invocations [0, tokens·dIn) are dx elements, the rest gradient elements.
const backwardOut = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> ku: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> grd: array<f32>;
${common(r)}
${COEF}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat(gid, nwg);
  if (idx >= p.n) { return; }
  let dIn = word(1u);
  let dOut = word(2u);
  let per = word(4u);
  let nx = p.tokens * dIn;
  // K[t, j1, o2] is ku[t·per + kOff + j1·mb + o2], or dy[t·dOut + j1·mb + o2] for an identity A.
  if (idx < nx) {
    let t = idx / dIn;
    let j = idx % dIn;
    var acc = 0.0;
    for (var i = 0u; i < R; i++) {
      let mb = field(i, 2u); let nb = field(i, 3u);
      let j1 = j / nb;
      let j2 = j % nb;
      let b0 = field(i, 6u) + j2;
      let kOff = field(i, 10u);
      var s = 0.0;
      if (kOff == 0xffffffffu) {
        let k0 = t * dOut + j1 * mb;
        for (var o2 = 0u; o2 < mb; o2++) { s += dy[k0 + o2] * prm[b0 + o2 * nb]; }
      } else {
        let k0 = t * per + kOff + j1 * mb;
        for (var o2 = 0u; o2 < mb; o2++) { s += ku[k0 + o2] * prm[b0 + o2 * nb]; }
      }
      acc += coef(i) * s;
    }
    dx[idx] = acc;
    return;
  }
  let e = idx - nx;
  for (var i = 0u; i < R; i++) {
    let ma = field(i, 0u); let na = field(i, 1u); let mb = field(i, 2u); let nb = field(i, 3u);
    let gB = field(i, 12u);
    if (e >= gB && e < gB + mb * nb) {
      // dB[o2, j2] = cᵢ·Σ_t Σ_j1 K[t, j1, o2]·X[t, j1, j2]
      let o2 = (e - gB) / nb;
      let j2 = (e - gB) % nb;
      let kOff = field(i, 10u);
      var s = 0.0;
      if (kOff == 0xffffffffu) {
        for (var t = 0u; t < p.tokens; t++) {
          let k0 = t * dOut + o2;
          let x0 = t * dIn + j2;
          for (var j1 = 0u; j1 < na; j1++) { s += dy[k0 + j1 * mb] * x[x0 + j1 * nb]; }
        }
      } else {
        for (var t = 0u; t < p.tokens; t++) {
          let k0 = t * per + kOff + o2;
          let x0 = t * dIn + j2;
          for (var j1 = 0u; j1 < na; j1++) { s += ku[k0 + j1 * mb] * x[x0 + j1 * nb]; }
        }
      }
      let at = field(i, 8u) + e - gB;
      var prev = 0.0;
      if (p.beta != 0u) { prev = grd[at]; }
      grd[at] = prev + coef(i) * s;
      return;
    }
    let gA = field(i, 13u);
    if (gA != 0xffffffffu && e >= gA && e < gA + ma * na) {
      // dA[o1, j1] = cᵢ·Σ_t Σ_j2 U[t, o1, j2]·X[t, j1, j2]
      let o1 = (e - gA) / na;
      let j1 = (e - gA) % na;
      let u0 = field(i, 11u) + o1 * nb;
      var s = 0.0;
      for (var t = 0u; t < p.tokens; t++) {
        let k0 = t * per + u0;
        let x0 = t * dIn + j1 * nb;
        for (var j2 = 0u; j2 < nb; j2++) { s += ku[k0 + j2] * x[x0 + j2]; }
      }
      let at = field(i, 7u) + e - gA;
      var prev = 0.0;
      if (p.beta != 0u) { prev = grd[at]; }
      grd[at] = prev + coef(i) * s;
      return;
    }
  }
}`);

// Kernel 5: uᵢ = ⟨Bᵢ, dBᵢ⟩ (= αᵢ·∂L/∂αᵢ), dg_j = u_j − α_j·Σ uᵢ.
const gateGrad = memoWgsl((r: number) => /* wgsl */ `
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> grd: array<f32>;
${common(r)}
${COEF}
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> u: array<f32, ${r}>;
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
    var total = 0.0;
    for (var i = 0u; i < R; i++) { total += u[i]; }
    let dg = word(6u);
    for (var i = 0u; i < R; i++) { grd[dg + i] = u[i] - coef(i) / p.scale * total; }
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
  groups: [number, number?, number?],
): Promise<void> {
  const pipeline = await rt.pipelines.get(code, label);
  batch.dispatch(
    pipeline,
    [
      batch.uniform(packUniform([
        { u: fields.tokens },
        { u: fields.beta ?? 0 },
        { f: b.scale },
        { u: fields.n },
      ])),
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
  if (tokens * plan.dOut * plan.dIn * plan.r <= a.directMacs) {
    const n = tokens * plan.dOut;
    await record(
      rt,
      batch,
      forwardDirect(plan.r),
      "adapter/kron-fused-fwd-direct",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, gate, x.binding, y.binding],
      grid1d(rt, n, WG),
    );
    return;
  }
  if (per > 0) {
    if (!w || w.size < tokens * per) throw new RangeError("fusedKronForward: scratch");
    const n = tokens * per;
    await record(
      rt,
      batch,
      forwardLeft(plan.r),
      "adapter/kron-fused-fwd-left",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, x.binding, w.binding],
      grid1d(rt, n, WG),
    );
  }
  const n = tokens * plan.dOut;
  const scratch = w && per > 0 ? w.binding : x.binding; // unread without a W
  await record(
    rt,
    batch,
    forwardRight(plan.r),
    "adapter/kron-fused-fwd-right",
    b,
    {
      tokens,
      n,
    },
    [{ buffer: plan.params }, gate, x.binding, scratch, y.binding],
    grid1d(rt, n, WG),
  );
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
  if (per > 0) {
    if (!ku || ku.size < tokens * per) throw new RangeError("fusedKronBackward: scratch");
    const n = tokens * per;
    await record(
      rt,
      batch,
      backwardLeft(plan.r),
      "adapter/kron-fused-bwd-left",
      b,
      {
        tokens,
        n,
      },
      [{ buffer: plan.params }, dy.binding, ku.binding],
      grid1d(rt, n, WG),
    );
  }
  const n = tokens * plan.dIn + plan.gradElements;
  await record(
    rt,
    batch,
    backwardOut(plan.r),
    "adapter/kron-fused-bwd-out",
    b,
    { tokens, n, beta: a.accumulate ? 1 : 0 },
    [
      { buffer: plan.params },
      gate,
      x.binding,
      dy.binding,
      ku && per > 0 ? ku.binding : dy.binding,
      dx.binding,
      { buffer: plan.grads },
    ],
    grid1d(rt, n, WG),
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
    gateGrad(b.plan.r),
    "adapter/kron-fused-gate-grad",
    b,
    { tokens: 0, n: b.plan.r },
    [{ buffer: b.plan.params }, b.gate.binding, { buffer: b.plan.grads }],
    [1],
  );
}
