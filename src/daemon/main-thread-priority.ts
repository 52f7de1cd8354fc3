import { getPriority, setPriority } from 'node:os';
import type { Logger } from '../log/logger.js';
import { WORKER_BASE_NICE_ENV } from '../../workers/thread-priority.js';

/**
 * Gives the store's main thread, which answers every FUSE request, the
 * nice value `nice` (config `main_thread_nice`, -5 by default).
 *
 * Why: during a cold start the machine is CPU-bound (containers working,
 * the decode workers inflating and hashing, readers checking what they
 * read), and at equal priority the kernel lets a runnable main thread wait
 * a time slice behind them; that wait is added to every FUSE request in the
 * queue. Measured with the soak (64 readers over 4 layers, 2 cores): the
 * cold pass's event-loop delay p99 went from 30 ms to 14–21 ms at nice -5,
 * for the same throughput.
 *
 * On Linux a nice value is per thread: setpriority(PRIO_PROCESS, 0) changes
 * the calling thread only, and threads started later inherit it. So the
 * process's own value is left in the environment first (worker threads get
 * a copy of it when they start), and each worker moves itself back to it
 * (workers/thread-priority.ts): decode workers must not compete with the
 * thread that hands their output out.
 *
 * Raising a priority needs CAP_SYS_NICE (root has it); refused, the thread
 * stays where it was, with a warning. Elsewhere than Linux nothing is done
 * (the call would change the whole process).
 */
export function setMainThreadNice(nice: number, log: Logger): void {
  if (process.platform !== 'linux') return;
  let base: number;
  try {
    base = getPriority(0);
  } catch {
    return;
  }
  if (nice === base) return;
  process.env[WORKER_BASE_NICE_ENV] = String(base);
  try {
    setPriority(0, nice);
    log.info({ nice, workers: base }, 'main thread priority set');
  } catch (err) {
    delete process.env[WORKER_BASE_NICE_ENV];
    log.warn({ nice, current: base, err: (err as Error).message }, 'could not set the main thread\'s nice value (raising it needs CAP_SYS_NICE); FUSE replies may wait behind other CPU work');
  }
}
