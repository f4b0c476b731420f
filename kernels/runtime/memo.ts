/**
 * Memoised WGSL generators: kernels are recorded hundreds of times per step, and building a
 * shader's source string each time (then hashing it to find the compiled pipeline) costs more
 * than recording the dispatch. Arguments are keyed by JSON, so they must be plain data.
 */
export function memoWgsl<A extends unknown[]>(
  generate: (...args: A) => string,
): (...args: A) => string {
  const cache = new Map<string, string>();
  return (...args: A) => {
    const key = JSON.stringify(args);
    let code = cache.get(key);
    if (code === undefined) {
      code = generate(...args);
      cache.set(key, code);
    }
    return code;
  };
}
