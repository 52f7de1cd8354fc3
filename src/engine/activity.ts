/**
 * When the store last served a request (any FUSE operation, any read), for
 * work that should wait for a quiet moment: the disk cache writes its queue
 * only once nothing has happened for a while, because a chunk once written
 * is read back from disk and hashed again where a queued one is served from
 * memory (see WRITE_DELAY_MS in cache/disk-cache.ts). One clock for the
 * process (every layer shares the caches and the CPU), owned by the engine
 * and handed to the FUSE front end.
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
