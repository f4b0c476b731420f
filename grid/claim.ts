/**
 * Several processes on one output folder: a run is claimed by creating its lock file (an atomic
 * create-if-absent), so two processes never train the same run, and every file is written to a
 * temp name of its own (pid + random) and renamed into place, so writers never share a temp file
 * and readers never see half a file.
 */

/** Who holds a run: written into the lock file. */
export interface RunClaim {
  /** Process id of the holder. */
  pid: number;
  /** Host name of the holder ("unknown" without the permission to read it). */
  hostname: string;
  /** When the claim was made (ISO 8601). */
  started: string;
}

/** The lock file of a run folder. */
export const CLAIM_FILE = "run.lock";

/** The result of {@link claimRun}. */
export type ClaimResult =
  | {
    /** This process holds the run until `release()`. */
    claimed: true;
    /** The stale claim (of a process gone from this host) that was taken over, if any. */
    tookOver?: RunClaim;
    /** Remove the lock (only if it is still this process's). */
    release(): Promise<void>;
  }
  | {
    /** Another process holds the run. */
    claimed: false;
    /** The holder, as its lock file says (null: unreadable, being written). */
    heldBy: RunClaim | null;
    /** The lock file's path. */
    lock: string;
  };

/** This host's name, or "unknown". */
export function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown"; // no --allow-sys
  }
}

/**
 * Whether process `pid` of this host is alive: a SIGCONT (harmless to a running process) fails
 * with ESRCH only when there is no such process. Deno refuses /proc to anything short of
 * --allow-all, so the signal is the check; without --allow-run every pid counts as alive (a claim
 * is then never taken over automatically).
 */
export function processAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}

/** A temp path next to `path`, unique to this process and call. */
export function tempPath(path: string): string {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `${path}.${Deno.pid}-${random[0].toString(36)}${random[1].toString(36)}.tmp`;
}

/** Whether a file name is one of {@link tempPath}'s or a lock: never a result to copy. */
export function isScratchFile(name: string): boolean {
  return name === CLAIM_FILE || name.endsWith(`${CLAIM_FILE}.takeover`) ||
    /\.\d+-[0-9a-z]+\.tmp$/.test(name);
}

/** Write `data` to a temp file of this process, then rename it to `path` (atomic on one disk). */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempPath(path);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Create `path` only if it does not exist, holding `text`; false when it exists. */
async function createNew(path: string, text: string): Promise<boolean> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { createNew: true, write: true });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw e;
  }
  try {
    const bytes = new TextEncoder().encode(text);
    for (let n = 0; n < bytes.length;) n += await f.write(bytes.subarray(n));
  } finally {
    f.close();
  }
  return true;
}

/** A lock file's text and claim (null: unreadable or half written); null when there is none. */
async function readClaim(path: string): Promise<{ text: string; claim: RunClaim | null } | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const v = JSON.parse(text);
    const ok = Number.isInteger(v?.pid) && typeof v?.hostname === "string" &&
      typeof v?.started === "string";
    return { text, claim: ok ? v as RunClaim : null };
  } catch {
    return { text, claim: null };
  }
}

/** When this process started (ms since the epoch). */
const PROCESS_STARTED = Date.now() - performance.now();

/**
 * A claim left by a process of this host that no longer runs. A claim with this process's own pid
 * made before it started is a previous incarnation's: a restarted container (a Kubernetes pod
 * retried on the same host name) gets the same small pid again.
 */
function isStale(claim: RunClaim | null): boolean {
  if (claim === null || claim.hostname !== hostName() || claim.hostname === "unknown") return false;
  if (claim.pid === Deno.pid) return Date.parse(claim.started) < PROCESS_STARTED;
  return !processAlive(claim.pid);
}

/**
 * Claim the run folder `dir` (created if missing) for this process: create `dir/run.lock` holding
 * pid, host and start time, atomically (create-if-absent). A lock of a process gone from this host
 * is stale and taken over (reported in `tookOver`); a lock of a live process, of another host or
 * unreadable means the run is another process's (`claimed: false`). Taking over goes through a
 * second create-if-absent file, so two processes finding the same stale lock cannot both win.
 */
export async function claimRun(dir: string): Promise<ClaimResult> {
  await Deno.mkdir(dir, { recursive: true });
  const lock = `${dir}/${CLAIM_FILE}`;
  const mine: RunClaim = { pid: Deno.pid, hostname: hostName(), started: new Date().toISOString() };
  const text = JSON.stringify(mine) + "\n";
  const held = (): ClaimResult => ({
    claimed: true,
    release: async () => {
      // Only our own lock: after a takeover by mistake, another's must stay.
      if ((await readClaim(lock))?.text === text) await Deno.remove(lock).catch(() => {});
    },
  });
  if (await createNew(lock, text)) return held();
  const found = await readClaim(lock);
  if (found === null) {
    // Released between our two steps: one more try, as any other claimant.
    if (await createNew(lock, text)) return held();
    return { claimed: false, heldBy: (await readClaim(lock))?.claim ?? null, lock };
  }
  if (!isStale(found.claim)) return { claimed: false, heldBy: found.claim, lock };
  const takeover = `${lock}.takeover`;
  if (!await createNew(takeover, text)) {
    // Another process is taking this lock over right now; a takeover file whose process is gone
    // is removed, and the run left for a later pass.
    const other = await readClaim(takeover);
    if (other && isStale(other.claim)) await Deno.remove(takeover).catch(() => {});
    return { claimed: false, heldBy: other?.claim ?? null, lock };
  }
  try {
    const again = await readClaim(lock);
    if (again !== null && again.text !== found.text) {
      return { claimed: false, heldBy: again.claim, lock }; // taken over by another meanwhile
    }
    await Deno.remove(lock).catch(() => {});
    if (!await createNew(lock, text)) {
      return { claimed: false, heldBy: (await readClaim(lock))?.claim ?? null, lock };
    }
    return { ...held(), tookOver: found.claim! } as ClaimResult;
  } finally {
    await Deno.remove(takeover).catch(() => {});
  }
}

/** "pid 123 on host since 2024-…" for messages. */
export function describeClaim(claim: RunClaim | null): string {
  return claim
    ? `pid ${claim.pid} on ${claim.hostname} since ${claim.started}`
    : "a process whose lock is unreadable";
}
