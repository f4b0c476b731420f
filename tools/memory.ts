/**
 * Host memory per stage: the peak resident set of each stage of a run (loading, a forward, a
 * training step, ...) and the part of it that the GPU buffer pool does not explain.
 *
 * On a CPU adapter (llvmpipe) the pool's buffers live in host memory, so a stage's peak RSS is the
 * pool plus everything else: the runtime and its libraries, the JS heap, host arrays being read or
 * uploaded, the driver's staging copies of `writeBuffer` data. `unexplained` is that everything
 * else at its worst moment, the figure a memory regression outside the pool moves. Where the pool
 * lives on a device of its own, nothing of the RSS is the pool's (`poolInHost: false`).
 *
 * The peak comes from Linux's VmHWM where this process may read `/proc/self/status` and reset the
 * high-water mark between stages (writing "5" to `/proc/self/clear_refs`; Deno allows both only
 * with `--allow-all`); otherwise from the resident set (`Deno.memoryUsage().rss`, no permission
 * needed) sampled on an interval and whenever {@link MemorySampler.sample} is called (e.g. from a
 * progress callback), which can miss a peak shorter than the interval.
 *
 *   const mem = new MemorySampler({ pool: rt.pool });
 *   await mem.stage("load", () => GpuLlama.load(rt, source, { progress: () => mem.sample() }));
 *   console.log(mem.fields()); // { peak_rss_bytes_load, unexplained_rss_bytes_load }
 */

/** What the sampler reads of a buffer pool (`BufferPool` has it). */
export interface PoolLike {
  /** Bytes of the pool's live buffers (in use and free). */
  readonly stats: { allocatedBytes: number };
}

/** One stage's memory. */
export interface StageMemory {
  /** The stage's name. */
  stage: string;
  /** Resident set when the stage began. */
  startRssBytes: number;
  /** Highest resident set during the stage. */
  peakRssBytes: number;
  /** Most bytes the pool held during the stage. */
  peakPoolBytes: number;
  /**
   * The most resident memory the pool does not explain: max over samples of RSS − pool bytes,
   * and peak RSS − peak pool bytes (both lower bounds of what lies outside the pool at the peak).
   * With `poolInHost: false`, the peak RSS itself.
   */
  unexplainedRssBytes: number;
  /** Samples taken. */
  samples: number;
  /** `hwm`: Linux's high-water mark reset at the stage's start; `sampled`: interval samples. */
  method: "hwm" | "sampled";
}

/** Options of {@link MemorySampler}. */
export interface MemorySamplerOptions {
  /** The GPU buffer pool (`rt.pool`); without one, nothing is subtracted. */
  pool?: PoolLike;
  /** Whether the pool's buffers are host memory (default true: CPU adapters). */
  poolInHost?: boolean;
  /** Sampling interval in milliseconds (default 25). */
  intervalMs?: number;
}

/** The current resident set in bytes (no permission needed). */
export function currentRss(): number {
  return Deno.memoryUsage().rss;
}

/** VmRSS and VmHWM from `/proc/self/status` in bytes, or null where it cannot be read. */
export function procMemory(): { rss: number; hwm: number } | null {
  try {
    const s = Deno.readTextFileSync("/proc/self/status");
    const rss = /VmRSS:\s+(\d+) kB/.exec(s);
    const hwm = /VmHWM:\s+(\d+) kB/.exec(s);
    if (!rss || !hwm) return null;
    return { rss: Number(rss[1]) * 1024, hwm: Number(hwm[1]) * 1024 };
  } catch {
    return null;
  }
}

/** Reset Linux's high-water mark (VmHWM) to the current RSS; false where that is not allowed. */
export function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/** Measures stages one after another; see the module comment. */
export class MemorySampler {
  readonly #pool: PoolLike | undefined;
  readonly #poolInHost: boolean;
  readonly #intervalMs: number;
  readonly #stages: StageMemory[] = [];
  #current: StageMemory | null = null;

  /** A sampler reading `options.pool`. */
  constructor(options: MemorySamplerOptions = {}) {
    this.#pool = options.pool;
    this.#poolInHost = options.poolInHost ?? true;
    this.#intervalMs = options.intervalMs ?? 25;
  }

  /** The stages measured so far, in order. */
  get stages(): readonly StageMemory[] {
    return this.#stages;
  }

  /** Take a sample now (into the stage being measured; a no-op between stages). */
  sample(): void {
    const s = this.#current;
    if (!s) return;
    const rss = currentRss();
    const pool = this.#pool?.stats.allocatedBytes ?? 0;
    s.samples++;
    s.peakRssBytes = Math.max(s.peakRssBytes, rss);
    s.peakPoolBytes = Math.max(s.peakPoolBytes, pool);
    s.unexplainedRssBytes = Math.max(s.unexplainedRssBytes, this.#unexplained(rss, pool));
  }

  #unexplained(rss: number, pool: number): number {
    return this.#poolInHost ? Math.max(0, rss - pool) : rss;
  }

  /**
   * Run `fn` as stage `name` and record its memory (also when it throws). Stages do not nest:
   * a stage started inside another is refused.
   */
  async stage<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    if (this.#current) {
      throw new Error(`MemorySampler: stage "${name}" inside stage "${this.#current.stage}"`);
    }
    const hwm = resetPeakRss() && procMemory() !== null;
    const start = currentRss();
    const s: StageMemory = {
      stage: name,
      startRssBytes: start,
      peakRssBytes: start,
      peakPoolBytes: 0,
      unexplainedRssBytes: 0,
      samples: 0,
      method: hwm ? "hwm" : "sampled",
    };
    this.#current = s;
    this.sample();
    const timer = setInterval(() => this.sample(), this.#intervalMs);
    Deno.unrefTimer(timer);
    try {
      return await fn();
    } finally {
      clearInterval(timer);
      this.sample();
      if (hwm) {
        const peak = procMemory()?.hwm ?? 0;
        s.peakRssBytes = Math.max(s.peakRssBytes, peak);
        s.unexplainedRssBytes = Math.max(
          s.unexplainedRssBytes,
          this.#unexplained(s.peakRssBytes, s.peakPoolBytes),
        );
      }
      this.#current = null;
      this.#stages.push(s);
    }
  }

  /** `peak_rss_bytes_<stage>` and `unexplained_rss_bytes_<stage>` of every stage measured. */
  fields(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.#stages) {
      out[`peak_rss_bytes_${s.stage}`] = s.peakRssBytes;
      out[`unexplained_rss_bytes_${s.stage}`] = s.unexplainedRssBytes;
    }
    return out;
  }
}
