import { LRUCache } from 'lru-cache';
import type { StoreMetrics } from '../../metrics/store-metrics.js';

/** Verified plain chunks in memory, keyed by chunk digest, least recently used out first, bounded in bytes. */
export class MemoryChunkCache {
  private readonly lru: LRUCache<string, Buffer> | null;

  constructor(readonly maxBytes: number, private readonly metrics: StoreMetrics) {
    this.lru = maxBytes > 0
      ? new LRUCache<string, Buffer>({
        maxSize: maxBytes,
        sizeCalculation: (b) => Math.max(1, b.length),
        // A chunk larger than the whole cache is simply not kept.
        maxEntrySize: maxBytes,
        dispose: () => this.report(),
      })
      : null;
  }

  get(digest: string): Buffer | undefined {
    const hit = this.lru?.get(digest);
    this.metrics.cacheRequests.inc({ tier: 'memory', result: hit ? 'hit' : 'miss' });
    return hit;
  }

  has(digest: string): boolean {
    return this.lru?.has(digest) ?? false;
  }

  put(digest: string, bytes: Buffer): void {
    if (!this.lru) return;
    // A small view into a large buffer (a decode task's result) would keep the whole buffer alive: keep a copy.
    this.lru.set(digest, bytes.buffer.byteLength > 2 * bytes.length ? Buffer.from(bytes) : bytes);
    this.report();
  }

  get size(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  private report(): void {
    this.metrics.cacheBytes.set({ tier: 'memory' }, this.lru?.calculatedSize ?? 0);
    this.metrics.cacheEntries.set({ tier: 'memory' }, this.lru?.size ?? 0);
  }
}
