import { getPriority, setPriority } from 'node:os';
import { isMainThread } from 'node:worker_threads';

/**
 * How much nicer than the main thread the store's background CPU work runs
 * (background fetch's decodes, the whole-layer digest). Every FUSE request
 * is answered on the main thread, and during a cold pass the machine is
 * CPU-bound: decoders inflating and hashing, readers checking bytes, the
 * registry serving. At equal priority the scheduler lets a runnable main
 * thread wait behind those for a time slice or two, and that wait is the
 * event-loop delay FUSE readers see. At nice 10 a thread has about a tenth
 * of a nice-0 thread's weight: work no reader waits for yields to the main
 * thread (and to foreground decodes, and to the host's other work), and
 * still gets every cycle nobody else wants. Foreground decodes stay at the
 * main thread's priority: a reader waits for them, and niced they lost to
 * every other busy process on a loaded host (the soak's cold pass took
 * twice as long on a host at load 30).
 */
export const BACKGROUND_NICE = 10;

/**
 * Where the store's main thread leaves the process's own nice value before
 * it raises its own priority (src/daemon/main-thread-priority.ts): worker
 * threads inherit the main thread's value, and go back to this one.
 */
export const WORKER_BASE_NICE_ENV = 'ESTARGZ_WORKER_BASE_NICE';

/**
 * The nice value a worker thread works from: the process's own, as the main
 * thread left it in the environment, else the one the thread started with
 * (inherited from the thread that started it).
 */
export function startingNice(): number {
  const base = isMainThread ? undefined : process.env[WORKER_BASE_NICE_ENV];
  if (base !== undefined && /^-?\d+$/.test(base)) return Number(base);
  try {
    return getPriority(0);
  } catch {
    return 0;
  }
}

/** A worker thread that does not switch priorities per task moves to its starting value once (see startingNice). */
export function settleThreadNice(): void {
  setThreadNice(0);
}

/**
 * Only on Linux is the nice value per thread (setpriority(PRIO_PROCESS, 0)
 * changes the calling thread alone; elsewhere it would change the whole
 * process), and never on the main thread.
 */
const PER_THREAD = !isMainThread && process.platform === 'linux';

/**
 * Sets the calling worker thread's nice value to `by` above the one it
 * started with. A refusal (going back up needs CAP_SYS_NICE or RLIMIT_NICE;
 * a sandbox may refuse any change) leaves the thread as it is: only latency
 * is at stake. Returns whether the thread is now at that value.
 */
export function setThreadNice(by: number, base: number = startingNice()): boolean {
  if (!PER_THREAD) return false;
  try {
    setPriority(0, Math.min(19, base + by));
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether this worker thread may move between its starting priority and a
 * lower one for each task: it can go back up only with the privilege to
 * (root on the host, CAP_SYS_NICE or RLIMIT_NICE). Probed with one step
 * down and back; when the way back is refused the thread stays one step
 * down, which is harmless. Without it, the thread keeps its priority for
 * every task (a foreground decode must never be stuck at the background's).
 */
export function probeNiceSwitching(base: number): boolean {
  if (!PER_THREAD || base >= 19) return false;
  return setThreadNice(1, base) && setThreadNice(0, base);
}
