/**
 * The files a workload read, in the order of their first read, per layer:
 * the store calls `note` on every read of a file under a layer's `diff`
 * (StoreFs.onRead), and overlayfs reads a file from the top-most layer that
 * has it, so each file lands in the layer that provides it.
 */
export class ReadRecorder {
  /** Per layer digest, paths in the order of their first read (a Set keeps insertion order). */
  private readonly layers = new Map<string, Set<string>>();
  private stopped = false;

  /** Cheap on repeated reads: FUSE calls it on every read request. */
  note(digest: string, path: string): void {
    if (this.stopped) return;
    let paths = this.layers.get(digest);
    if (!paths) {
      paths = new Set();
      this.layers.set(digest, paths);
    }
    paths.add(path);
  }

  /** Reads after this (the clean-up's) are not the workload's. */
  stop(): void {
    this.stopped = true;
  }

  /** The recording of a layer, in first-read order. */
  paths(digest: string): string[] {
    return [...(this.layers.get(digest) ?? [])];
  }

  /** Files recorded in all layers. */
  get size(): number {
    let n = 0;
    for (const p of this.layers.values()) n += p.size;
    return n;
  }
}
