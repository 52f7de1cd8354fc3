/**
 * When the store last served a request (any FUSE operation, any read), for
 * work that should wait for a quiet moment: the disk cache writes its queue
 * only once nothing has happened for a while, so that creating cache files
 * (about 1 ms each on a small VM's disk) never competes with a container
 * that is starting. Process-wide: every layer shares the caches and the CPU.
 */
let last = 0;

export function noteActivity(): void {
  last = performance.now();
}

/** Milliseconds since the last noted activity. */
export function idleMs(): number {
  return performance.now() - last;
}
