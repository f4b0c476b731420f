/**
 * Causal multi-head attention with grouped KV heads, float64 reference, one sequence.
 * q [T, heads·hs], k/v [T, kvHeads·hs]; query head h reads KV head ⌊h / (heads/kvHeads)⌋.
 *   att[h, t, s] = softmax_s≤t(q_t·k_s / √hs);  out_t = Σ_s att·v_s
 */

/** Shapes of one attention call. */
export interface AttentionShape {
  /** Sequence length. */
  tokens: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
  /** Head size. */
  headSize: number;
}

/** Forward; returns the output and the attention probabilities [heads, T, T] for the backward. */
export function attentionForward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  s: AttentionShape,
): { out: Float64Array; att: Float64Array } {
  const { tokens: T, heads, kvHeads, headSize: hs } = s;
  const group = heads / kvHeads;
  const qw = heads * hs;
  const kw = kvHeads * hs;
  const out = new Float64Array(T * qw);
  const att = new Float64Array(heads * T * T);
  const scale = 1 / Math.sqrt(hs);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      let mx = -Infinity;
      for (let u = 0; u <= t; u++) {
        let dot = 0;
        for (let i = 0; i < hs; i++) dot += q[t * qw + h * hs + i] * k[u * kw + kh * hs + i];
        att[row + u] = dot * scale;
        mx = Math.max(mx, att[row + u]);
      }
      let sum = 0;
      for (let u = 0; u <= t; u++) sum += att[row + u] = Math.exp(att[row + u] - mx);
      for (let u = 0; u <= t; u++) att[row + u] /= sum;
      for (let u = 0; u <= t; u++) {
        const p = att[row + u];
        for (let i = 0; i < hs; i++) out[t * qw + h * hs + i] += p * v[u * kw + kh * hs + i];
      }
    }
  }
  return { out, att };
}

/** Backward: dq, dk, dv from dout and the forward's probabilities. */
export function attentionBackward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  att: Float64Array,
  dout: Float64Array,
  s: AttentionShape,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { tokens: T, heads, kvHeads, headSize: hs } = s;
  const group = heads / kvHeads;
  const qw = heads * hs;
  const kw = kvHeads * hs;
  const scale = 1 / Math.sqrt(hs);
  const dq = new Float64Array(T * qw);
  const dk = new Float64Array(T * kw);
  const dv = new Float64Array(T * kw);
  const dp = new Float64Array(T);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      let dotSum = 0;
      for (let u = 0; u <= t; u++) {
        let d = 0;
        for (let i = 0; i < hs; i++) d += dout[t * qw + h * hs + i] * v[u * kw + kh * hs + i];
        dp[u] = d;
        dotSum += d * att[row + u];
        const p = att[row + u];
        for (let i = 0; i < hs; i++) dv[u * kw + kh * hs + i] += p * dout[t * qw + h * hs + i];
      }
      for (let u = 0; u <= t; u++) {
        const ds = att[row + u] * (dp[u] - dotSum) * scale; // softmax backward, then the 1/√hs
        for (let i = 0; i < hs; i++) {
          dq[t * qw + h * hs + i] += ds * k[u * kw + kh * hs + i];
          dk[u * kw + kh * hs + i] += ds * q[t * qw + h * hs + i];
        }
      }
    }
  }
  return { dq, dk, dv };
}
