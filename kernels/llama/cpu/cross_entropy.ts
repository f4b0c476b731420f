/**
 * Cross-entropy over target tokens only (prompt positions masked with −1), float64 reference.
 * loss = mean over unmasked rows of −log softmax(logits)[target]; dlogits = (p − onehot)/count.
 */

/** Loss and the gradient of the logits [rows, vocab]. */
export function crossEntropy(
  logits: Float64Array,
  targets: ArrayLike<number>,
  vocab: number,
): { loss: number; dlogits: Float64Array; count: number } {
  const rows = targets.length;
  const dlogits = new Float64Array(rows * vocab);
  let count = 0;
  for (let r = 0; r < rows; r++) if (targets[r] >= 0) count++;
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const tgt = targets[r];
    if (tgt < 0) continue;
    if (tgt >= vocab) {
      throw new RangeError(`crossEntropy: target ${tgt} at row ${r} ≥ vocab ${vocab}`);
    }
    let mx = -Infinity;
    for (let j = 0; j < vocab; j++) mx = Math.max(mx, logits[r * vocab + j]);
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(logits[r * vocab + j] - mx);
    loss += Math.log(sum) + mx - logits[r * vocab + tgt];
    for (let j = 0; j < vocab; j++) {
      dlogits[r * vocab + j] = (Math.exp(logits[r * vocab + j] - mx) / sum - (j === tgt ? 1 : 0)) /
        count;
    }
  }
  return { loss: count ? loss / count : 0, dlogits, count };
}
