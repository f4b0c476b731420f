/**
 * Propose MoKA component shapes for a parameter budget. Rank flexibility: rank(A⊗B) =
 * rank(A)·rank(B) ≤ min(ma, na)·min(mb, nb), so components of different shapes reach different
 * ranks at different costs. The heuristic: split the budget evenly over r components and pick, for
 * each, a distinct shape of highest attainable rank that fits its share (ties: the one that uses
 * more of the share, so matched budgets are matched as closely as the divisors allow).
 */

/** One proposal: A's shape and what it costs and can reach. */
export interface MokaShapeProposal {
  /** A is ma × na. */
  a: [number, number];
  /** B is mb × nb. */
  b: [number, number];
  /** ma·na + mb·nb. */
  params: number;
  /** Upper bound of rank(A ⊗ B). */
  maxRank: number;
}

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= n; d++) if (n % d === 0) out.push(d);
  return out;
}

/** Every (ma, na) with ma | dOut and na | dIn, with its cost and rank bound. */
export function mokaShapeCandidates(dIn: number, dOut: number): MokaShapeProposal[] {
  const out: MokaShapeProposal[] = [];
  for (const ma of divisors(dOut)) {
    for (const na of divisors(dIn)) {
      const mb = dOut / ma;
      const nb = dIn / na;
      out.push({
        a: [ma, na],
        b: [mb, nb],
        params: ma * na + mb * nb,
        maxRank: Math.min(ma, na) * Math.min(mb, nb),
      });
    }
  }
  return out;
}

/**
 * `components` distinct shapes whose factors total at most `budget` parameters (gate logits not
 * counted). Throws when even the cheapest shapes do not fit.
 */
export function proposeMokaShapes(
  dIn: number,
  dOut: number,
  budget: number,
  components: number,
): MokaShapeProposal[] {
  const share = Math.floor(budget / components);
  const fits = mokaShapeCandidates(dIn, dOut)
    .filter((c) => c.params <= share)
    .sort((x, y) => y.maxRank - x.maxRank || y.params - x.params || x.a[0] - y.a[0]);
  if (fits.length < components) {
    throw new RangeError(
      `proposeMokaShapes: only ${fits.length} shapes of a ${dOut}×${dIn} layer fit ` +
        `${share} parameters each; raise the budget (${budget}) or use fewer components`,
    );
  }
  return fits.slice(0, components);
}
