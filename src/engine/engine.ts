import type { Decoder } from '../estargz/chunk.js';
import { ActivityClock } from './activity.js';
import { DEFAULT_BACKGROUND_FETCH, type BackgroundFetchOptions } from './background-fetch.js';
import { DEFAULT_BLOB_READER, type BlobReaderOptions } from './blob-reader.js';
import { DiskChunkCache } from './cache/disk-cache.js';
import { MemoryChunkCache } from './cache/memory-cache.js';
import { ChunkLoader, DEFAULT_TUNING, type FetchTuning } from './chunk-loader.js';
import { DecodePool } from './decode-pool.js';
import { EngineLayer, type LayerFetchOptions, type LayerParams } from './layer.js';

export interface EngineOptions {
  /** Directory of the disk chunk cache; none = memory only. */
  cacheDir?: string;
  /** Disk cache bound (config `[cache] max_bytes`). */
  diskCacheBytes?: number;
  /** Memory cache bound (config `[cache] memory_bytes`). */
  memoryCacheBytes?: number;
  /** Decode workers (config `[pool] workers`); 0 decodes on the main thread. */
  poolThreads?: number;
  decoder?: Decoder;
  tuning?: Partial<FetchTuning>;
  fetch?: Partial<Omit<LayerFetchOptions, 'blobReader' | 'background'>> & { blobReader?: Partial<BlobReaderOptions>; background?: Partial<BackgroundFetchOptions> };
}

export const DEFAULT_FETCH: Omit<LayerFetchOptions, 'blobReader' | 'background'> = {
  noPrefetch: false,
  prefetchSize: 0,
  prefetchTimeoutMs: 10_000,
  noBackgroundFetch: false,
};

/**
 * The chunk engine: one decode pool and one pair of verified-chunk caches
 * for the process, shared by every layer (the caches are keyed by chunk
 * digest, so identical chunks of different layers are fetched once).
 */
export class Engine {
  private constructor(
    /** When the store last served anything: the FUSE front end notes every request on it. */
    readonly activity: ActivityClock,
    readonly pool: DecodePool,
    readonly memory: MemoryChunkCache,
    readonly disk: DiskChunkCache | null,
    private readonly tuning: FetchTuning,
    private readonly fetch: LayerFetchOptions,
  ) {}

  static async create(opts: EngineOptions = {}): Promise<Engine> {
    const activity = new ActivityClock();
    const disk = opts.cacheDir ? await DiskChunkCache.open(opts.cacheDir, opts.diskCacheBytes ?? 10 * 2 ** 30, activity) : null;
    return new Engine(
      activity,
      new DecodePool({ ...(opts.poolThreads !== undefined && { threads: opts.poolThreads }), ...(opts.decoder && { decoder: opts.decoder }) }),
      new MemoryChunkCache(opts.memoryCacheBytes ?? 256 << 20),
      disk,
      { ...DEFAULT_TUNING, ...opts.tuning },
      {
        ...DEFAULT_FETCH,
        ...opts.fetch,
        blobReader: { ...DEFAULT_BLOB_READER, ...opts.fetch?.blobReader },
        background: { ...DEFAULT_BACKGROUND_FETCH, ...opts.fetch?.background },
      },
    );
  }

  /** Serves a resolved layer. Prefetch and background fetch are started by the caller (`prefetch()`, `startBackgroundFetch()`). */
  openLayer(params: LayerParams): EngineLayer {
    let layer: EngineLayer | undefined;
    const loader = new ChunkLoader({
      fetcher: params.fetcher,
      pool: this.pool,
      memory: this.memory,
      disk: this.disk,
      tuning: this.tuning,
      layer: params.id,
      onFetched: (offset, end, op) => layer?.noteFetched(offset, end, op),
    });
    layer = new EngineLayer(params, loader, this.fetch);
    return layer;
  }

  /** Writes the disk cache's queued chunks out (for a few seconds at most), then stops the decode workers. */
  async close(): Promise<void> {
    await this.disk?.flush();
    await this.pool.close();
  }
}
