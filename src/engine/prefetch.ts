import type { PrefetchHint } from '../estargz/layer-index.js';
import type { Logger } from '../log/logger.js';
import type { ChunkLoader, ChunkWant } from './chunk-loader.js';

/** The config's prefetch settings (`noprefetch`, `prefetch_size`, `prefetch_timeout_sec`). */
export interface PrefetchOptions {
  /** Skip prefetch altogether (config `noprefetch`). */
  noPrefetch: boolean;
  /** Bytes to prefetch when the blob has no landmark (config `prefetch_size`). */
  prefetchSize: number;
  /** A prefetch still running after this long is no longer waited for (config `prefetch_timeout_sec`). */
  prefetchTimeoutMs: number;
}

/** What a prefetch needs of its layer: not the layer itself. */
export interface PrefetchDeps {
  /** Label for logs. */
  layer: string;
  log: Logger;
  /** The index's prefetch landmark, and where the chunk data ends (prefetch stays before it). */
  hint: PrefetchHint;
  payloadEnd: number;
  loader: Pick<ChunkLoader, 'load'>;
  /** Every chunk of the layer in blob order. */
  chunks: () => readonly ChunkWant[];
  /** Told when there is something to prefetch, before it is asked for… */
  onStart: () => void;
  /** …and when it is done, or no longer waited for. */
  onEnd: () => void;
}

/**
 * Prefetch: the chunks in the blob's first bytes (up to the landmark the
 * converter put after the files a container reads first, or
 * `prefetch_size`), fetched and decoded into the caches as one run before
 * reads ask for them. Runs once per layer; a run that takes too long is left
 * to finish on its own while reads go on fetching on demand.
 */
export class Prefetch {
  private run: Promise<void> | undefined;

  constructor(private readonly deps: PrefetchDeps, private readonly opts: PrefetchOptions) {}

  /** The prefetch range's end: the landmark's, none, or `prefetch_size` bytes. */
  end(): number {
    if (this.opts.noPrefetch) return 0;
    const hint = this.deps.hint;
    if (hint.kind === 'landmark') return hint.end;
    if (hint.kind === 'none') return 0;
    return Math.min(this.opts.prefetchSize, this.deps.payloadEnd);
  }

  /** Fetches and decodes every chunk in the prefetch range (once; later calls share the run). */
  start(): Promise<void> {
    this.run ??= this.runOnce();
    return this.run;
  }

  private async runOnce(): Promise<void> {
    const end = this.end();
    if (end <= 0) return;
    const wants = this.deps.chunks().filter((w) => w.chunk.blobOffset < end);
    if (!wants.length) return;
    this.deps.onStart();
    const started = performance.now();
    const all = Promise.allSettled(this.deps.loader.load(wants, 'prefetch'));
    const timedOut = Symbol('timeout');
    let timer: NodeJS.Timeout | undefined;
    const results = await Promise.race([all, new Promise<typeof timedOut>((r) => { timer = setTimeout(() => r(timedOut), this.opts.prefetchTimeoutMs); })]);
    clearTimeout(timer);
    if (results === timedOut) {
      this.deps.log.warn({ layer: this.deps.layer, bytes: end, ms: this.opts.prefetchTimeoutMs }, 'prefetch is taking too long; no longer waiting for it (reads fetch on demand)');
    } else {
      const failed = results.filter((r) => r.status === 'rejected');
      this.deps.log.info({ layer: this.deps.layer, bytes: end, chunks: wants.length, failed: failed.length, ms: Math.round(performance.now() - started) }, 'prefetch done');
    }
    this.deps.onEnd();
  }
}
