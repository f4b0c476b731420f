/**
 * The part of a zod schema the public API promises. Our exported schemas are zod objects; typing
 * them this way keeps zod's internal types out of the documented surface.
 */
export interface Schema<T> {
  /** Parse or throw a zod error listing the failing fields. */
  parse(data: unknown): T;
  /** Parse without throwing. */
  safeParse(
    data: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
}

/**
 * `true` when A and B are assignable both ways, else `false`. A hand-written interface beside a
 * zod schema is checked with it at compile time, so the two cannot drift apart:
 * `const _check: Same<Config, z.output<typeof ConfigZod>> = true;` fails to type check as soon as
 * a field is added, removed, renamed, retyped or made optional on one side only.
 */
export type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

/** The part of a zod issue {@link issueText} reads. */
export interface IssueLike {
  /** Where: keys and indices from the root. */
  path: PropertyKey[];
  /** zod's text. */
  message: string;
  /** zod's issue code. */
  code?: string;
  /** For `unrecognized_keys`: the keys (the path is the object's, not the key's). */
  keys?: string[];
}

/**
 * The issues joined by `; `, each `field a.b.c: message` naming the full path: an unrecognized key is
 * named in the path (zod puts it in `keys`, the path stopping at its object), with the closest
 * name `known(objectPath)` lists when it looks like a typo.
 */
export function issueText(
  issues: readonly IssueLike[],
  known: (path: PropertyKey[]) => readonly string[] = () => [],
): string {
  const join = (path: PropertyKey[]) => `field ${path.map(String).join(".") || "(root)"}`;
  const lines: string[] = [];
  for (const i of issues) {
    if (i.code === "unrecognized_keys" && i.keys?.length) {
      for (const key of i.keys) {
        const hint = closestName(key, known(i.path));
        lines.push(
          `${join([...i.path, key])}: unrecognized key${hint ? ` (did you mean ${hint}?)` : ""}`,
        );
      }
    } else {
      lines.push(`${join(i.path)}: ${i.message}`);
    }
  }
  return lines.join("; ");
}

/** The name of `names` within a small edit distance of `word` (a typo), else undefined. */
export function closestName(word: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.min(2, Math.floor(word.length / 2)) + 1;
  for (const n of names) {
    const d = editDistance(word.toLowerCase(), n.toLowerCase());
    if (d < bestD) [best, bestD] = [n, d];
  }
  return best;
}

/** Optimal string alignment distance (a swap of neighbours counts once, as a typo does). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}
