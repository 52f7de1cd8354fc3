import { join } from 'node:path';
import type { Server } from 'node:http';
import { Engine } from '../engine/engine.js';
import { LayerResolver } from '../engine/resolver.js';
import { mountStore, type MountedStore } from '../fs/mount.js';
import { StoreFs } from '../fs/store-fs.js';
import { logger } from '../log/logger.js';
import { RegistryClient } from '../registry/client.js';
import type { StoreConfig } from './config.js';
import { startMetricsServer } from './metrics-server.js';

export interface DaemonOptions {
  config: StoreConfig;
  /** State directory (disk cache, control socket). */
  root: string;
  mountpoint: string;
}

export interface Daemon {
  client: RegistryClient;
  engine: Engine;
  resolver: LayerResolver;
  mounted: MountedStore;
  metrics: Server | undefined;
  stop(): Promise<void>;
}

/** Wires the registry client, the engine, the resolver and the FUSE tree, and mounts. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { config } = opts;
  const client = new RegistryClient({
    resolver: config.resolver,
    retry: { maxRetries: config.blob.max_retries, minWaitMs: config.blob.min_wait_msec, maxWaitMs: config.blob.max_wait_msec },
  });
  const engine = await Engine.create({
    cacheDir: config.cache.dir || join(opts.root, 'cache'),
    diskCacheBytes: config.cache.max_bytes,
    memoryCacheBytes: config.cache.memory_bytes,
    ...(config.pool.workers > 0 && { poolThreads: config.pool.workers }),
    decoder: config.pool.decoder,
    tuning: { mergeGapBytes: config.blob.chunk_size },
    fetch: {
      noPrefetch: config.noprefetch,
      prefetchSize: config.prefetch_size,
      noBackgroundFetch: config.no_background_fetch,
      backgroundIdleMs: config.background_fetch_idle_sec * 1000,
      backgroundBytesPerSec: config.background_fetch_bytes_per_sec,
      backgroundConcurrency: config.max_concurrency,
    },
  });
  const resolver = new LayerResolver(client, engine, {
    timeoutMs: config.resolve_timeout_sec * 1000,
    allowUnverified: config.allow_unverified,
    failureTtlMs: 5000,
    manifestTtlMs: 120_000,
    singleRangeOnly: config.blob.force_single_range_mode,
  });
  const fs = new StoreFs(resolver);
  let mounted: MountedStore;
  try {
    mounted = await mountStore(fs, { mountpoint: opts.mountpoint });
  } catch (err) {
    await engine.close();
    await client.close();
    throw err;
  }
  const metrics = config.metrics_address ? await startMetricsServer(config.metrics_address, () => true) : undefined;
  let stopping: Promise<void> | undefined;
  return {
    client, engine, resolver, mounted, metrics,
    stop: () => {
      stopping ??= (async () => {
        logger.info({ mountpoint: mounted.mountpoint }, 'stopping');
        await mounted.unmount();
        metrics?.close();
        await resolver.close();
        await engine.close();
        await client.close();
      })();
      return stopping;
    },
  };
}
