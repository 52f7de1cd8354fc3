import { join } from 'node:path';
import type { Decoder } from '../estargz/chunk.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { ActivityClock } from './activity.js';
import { DEFAULT_BACKGROUND_FETCH, type BackgroundFetchOptions, type BackgroundSettings } from './background-fetch.js';
import { DEFAULT_BLOB_READER, type BlobReaderOptions } from './blob-reader.js';
import { DiskChunkCache } from './cache/disk-cache.js';
import { LayerVerdicts } from './cache/verdicts.js';
import { MemoryChunkCache } from './cache/memory-cache.js';
import { ChunkLoader, DEFAULT_TUNING, type FetchSettings, type FetchTuning } from './chunk-loader.js';
import { DecodePool } from './decode-pool.js';
import { EngineLayer, type LayerFetchOptions, type LayerParams } from './layer.js';
import { DEFAULT_HOST_SCHEDULER, HostScheduler, scheduledFetcher, type HostSchedulerOptions } from './host-scheduler.js';

/**
 * What the engine is given. Everything the daemon's config sets is required
 * here, with no default of the engine's own: the config table
 * (src/daemon/config.ts, `engineOptions`) is the one source of those
 * defaults. Only what no config key sets has a default below.
 */
export interface EngineOptions {
  /** Directory of the disk chunk cache; none = memory only. */
  cacheDir?: string;
  /** Disk cache bound (config `[cache] max_bytes`). */
  diskCacheBytes: number;
  /** Memory cache bound (config `[cache] memory_bytes`). */
  memoryCacheBytes: number;
  /** Decode workers (config `[pool] workers`, where 0 means this default: the machine's cores); 0 here decodes on the main thread. */
  poolThreads?: number;
  /** Decode workers kept while idle (DecodePool's default: 1). */
  poolIdleThreads?: number;
  /** Config `[pool] decoder`. */
  decoder: Decoder;
  tuning: FetchSettings & Partial<FetchTuning>;
  /** Per registry host: blob requests in flight and the slots kept for readers (see HostScheduler). */
  hostScheduler?: Partial<HostSchedulerOptions>;
  fetch: LayerFetchSettings & { blobReader?: Partial<BlobReaderOptions>; background: BackgroundSettings & Partial<BackgroundFetchOptions> };
}

/** The layer options the config sets (`noprefetch`, `prefetch_size`, `prefetch_timeout_sec`, `no_background_fetch`). */
export type LayerFetchSettings = Omit<LayerFetchOptions, 'blobReader' | 'background'>;

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
    /** Passed whole-layer checks, remembered with the disk cache (none without one). */
    private readonly verdicts: LayerVerdicts | null,
    private readonly schedulerOptions: HostSchedulerOptions,
    private readonly telemetry: Telemetry,
  ) {}

  /** One scheduler per registry host, shared by every layer served from it. */
  private readonly schedulers = new Map<string, HostScheduler>();

  private schedulerFor(host: string): HostScheduler {
    let s = this.schedulers.get(host);
    if (!s) {
      s = new HostScheduler(this.schedulerOptions);
      this.schedulers.set(host, s);
    }
    return s;
  }

  /** `telemetry`: the process's logger and metrics, handed to every part. */
  static async create(opts: EngineOptions, telemetry: Telemetry): Promise<Engine> {
    const activity = new ActivityClock();
    const disk = opts.cacheDir ? await DiskChunkCache.open(opts.cacheDir, opts.diskCacheBytes, telemetry, activity) : null;
    return new Engine(
      activity,
      new DecodePool(telemetry, { ...(opts.poolThreads !== undefined && { threads: opts.poolThreads }), ...(opts.poolIdleThreads !== undefined && { idleThreads: opts.poolIdleThreads }), decoder: opts.decoder }),
      new MemoryChunkCache(opts.memoryCacheBytes, telemetry.metrics),
      disk,
      { ...DEFAULT_TUNING, ...opts.tuning },
      {
        ...opts.fetch,
        blobReader: { ...DEFAULT_BLOB_READER, ...opts.fetch.blobReader },
        background: { ...DEFAULT_BACKGROUND_FETCH, ...opts.fetch.background },
      },
      disk?.enabled ? new LayerVerdicts(disk.dir, telemetry.log) : null,
      { ...DEFAULT_HOST_SCHEDULER, ...opts.hostScheduler },
      telemetry,
    );
  }

  /** Serves a resolved layer. Prefetch and background fetch are started by the caller (`prefetch()`, `startBackgroundFetch()`). */
  openLayer(unscheduled: LayerParams): EngineLayer {
    // A RemoteBlob names its registry host; any other fetcher (tests' in-memory blobs) shares one queue.
    const host = (unscheduled.fetcher as { repo?: { registry?: string } }).repo?.registry ?? '';
    const scheduler = this.schedulerFor(host);
    const params: LayerParams = { ...unscheduled, fetcher: scheduledFetcher(unscheduled.fetcher, scheduler) };
    let layer: EngineLayer | undefined;
    const loader = new ChunkLoader({
      log: this.telemetry.log,
      metrics: this.telemetry.metrics,
      fetcher: params.fetcher,
      pool: this.pool,
      memory: this.memory,
      disk: this.disk,
      tuning: this.tuning,
      layer: params.id,
      onFetched: (offset, end, op) => layer?.noteFetched(offset, end, op),
      hold: (offset, data, op) => layer?.hold(offset, data, op) ?? false,
      pieces: () => scheduler.pieces(),
    });
    layer = new EngineLayer(params, loader, this.fetch, {
      telemetry: this.telemetry,
      backgroundSlots: () => scheduler.backgroundSlots(),
      verdicts: this.verdicts,
      // The disk cache's tmp/ is emptied when the cache opens: a spill file a crash left behind goes then.
      ...(this.disk?.enabled && { spillDir: join(this.disk.dir, 'tmp') }),
    });
    return layer;
  }

  /** Writes the disk cache's queued chunks out (for a few seconds at most) and closes its files, then stops the decode workers. */
  async close(): Promise<void> {
    await this.disk?.close();
    await this.pool.close();
  }
}
