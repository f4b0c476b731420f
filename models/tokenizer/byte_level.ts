/**
 * GPT-2's byte ↔ printable-character map, which byte-level BPE (GPT-2, LLaMA-3) is built on:
 * every byte is a visible character in the vocabulary ("Ġ" for a space).
 */

/** The map from each byte (0–255) to its vocabulary character. */
export function bytesToUnicode(): Map<number, string> {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [b, String.fromCodePoint(cs[i])]));
}
