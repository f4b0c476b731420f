/** Progress lines for long tool work, and the size arguments tools take. */
import { UsageError } from "./cli.ts";

/** "1.5 GiB"-style text of a byte count. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
}

/** A size option: a byte count, or a number with KiB/MiB/GiB (KB/MB/GB mean the same). */
export function byteSize(name: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(|B|KiB|KB|MiB|MB|GiB|GB)$/i.exec(value.trim());
  if (!m) throw new UsageError(`--${name}=${value}: expected a size such as 512MiB or 2GiB`);
  const unit = m[2].toLowerCase().replace("ib", "").replace("b", "");
  const scale = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[unit]!;
  const bytes = Math.round(Number(m[1]) * scale);
  if (bytes < 1) throw new UsageError(`--${name}=${value}: must be at least one byte`);
  return bytes;
}

/**
 * A printer of "done/total, rate, ETA" lines on stderr, at most one per `everyMs` (default 2 s);
 * `done()` prints the last one.
 */
export function progressPrinter(
  label: string,
  everyMs = 2000,
): ((done: number, total: number) => void) & { done(): void } {
  const started = performance.now();
  let last = 0;
  let state = { done: 0, total: 0 };
  const print = () => {
    const secs = (performance.now() - started) / 1000;
    const rate = state.done / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (state.total - state.done) / rate : 0;
    console.error(
      `[${label}] ${formatBytes(state.done)} / ${formatBytes(state.total)} · ` +
        `${formatBytes(rate)}/s · ETA ${Math.round(eta)} s`,
    );
  };
  const update = (done: number, total: number) => {
    state = { done, total };
    const now = performance.now();
    if (now - last >= everyMs) {
      last = now;
      print();
    }
  };
  return Object.assign(update, { done: print });
}
