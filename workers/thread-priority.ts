import { getPriority, setPriority } from 'node:os';
import { isMainThread } from 'node:worker_threads';

/**
 * How much nicer than the main thread the store's CPU-bound worker threads run (the decoders, the
 * whole-layer digest). Every FUSE request is answered on the main thread,
 * and during a cold pass the machine is CPU-bound: decoders inflating and
 * hashing, readers checking bytes, the registry serving. At equal priority
 * the scheduler lets a runnable main thread wait behind those for a time
 * slice or two, and that wait is the event-loop delay FUSE readers see (the
 * soak's cold pass: p99 29 ms with everything at nice 0). At nice 10 a
 * worker has about a tenth of the main thread's weight, so the main thread
 * runs as soon as it is runnable, and the workers still get every cycle it
 * leaves (nothing else is taken from them).
 */
export const WORKER_NICE = 10;

/**
 * Lowers the calling worker thread's priority by `by` below what it
 * inherited from the thread that started it (a store run under `nice` keeps
 * its workers below itself, never above). Only on Linux,
 * where the nice value is per thread (setpriority(PRIO_PROCESS, 0) changes
 * the calling thread alone); elsewhere it would lower the whole process.
 * Never on the main thread. A refusal (no permission, a sandbox) leaves the
 * thread at its priority: only latency is at stake.
 */
export function lowerThreadPriority(by = WORKER_NICE): void {
  if (isMainThread || process.platform !== 'linux') return;
  try {
    setPriority(0, Math.min(19, getPriority(0) + by));
  } catch {
    // not permitted here: the thread keeps its priority
  }
}
