/**
 * When the store last served a request (any FUSE operation, any read), for
 * work that should wait for a quiet moment: the disk cache writes its queue
 * only once nothing has happened for a while, so that creating cache files
 * (about 1 ms each on a small VM's disk) never competes with a container
 * that is starting. One clock for the process (every layer shares the caches
 * and the CPU), owned by the engine and handed to the FUSE front end.
 */
export class ActivityClock {
  private last = 0;

  note(): void {
    this.last = performance.now();
  }

  /** Milliseconds since the last noted activity. */
  idleMs(): number {
    return performance.now() - this.last;
  }
}
