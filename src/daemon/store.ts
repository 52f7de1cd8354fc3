import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { Engine } from '../engine/engine.js';
import { LayerManager } from '../layers/manager.js';
import { LayerResolver } from '../layers/resolver.js';
import { StoreFs } from '../fs/store-fs.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { trafficMetrics } from '../metrics/traffic.js';
import { RegistryClient } from '../registry/client.js';
import { engineOptions, retryPolicy, type StoreConfig } from './config.js';
import { warmUp } from './warm-up.js';

export interface StoreOptions {
  config: StoreConfig;
  /** State directory (disk cache, sockets). */
  root: string;
  telemetry: Telemetry;
}

/** What one store process serves a mount with: the registry client, the engine, the resolver and the FUSE tree. */
export interface Store {
  client: RegistryClient;
  engine: Engine;
  resolver: LayerManager;
  fs: StoreFs;
  close(): Promise<void>;
}

/** Wires the registry client, the engine, the resolver and the tree, and warms the code a first pull runs. */
export async function buildStore(opts: StoreOptions): Promise<Store> {
  const { config, telemetry } = opts;
  const { log } = telemetry;
  // The state directory holds the sockets and the cache: owner only.
  await mkdir(opts.root, { recursive: true, mode: 0o700 });
  const client = new RegistryClient({
    log,
    resolver: config.resolver,
    retry: retryPolicy(config),
    // The one place registry requests, retries and range splits are counted for /metrics.
    traffic: trafficMetrics(telemetry.metrics),
  });
  const engine = await Engine.create(engineOptions(config, { cacheDir: config.cache.dir || join(opts.root, 'cache') }), telemetry);
  const opener = new LayerResolver(client, engine, log, {
    timeoutMs: config.resolve_timeout_sec * 1000,
    allowUnverified: config.allow_unverified,
    manifestTtlMs: 120_000,
    singleRangeOnly: config.blob.force_single_range_mode,
  });
  // A layer being resolved is the first sign of a pull, its reads follow: a decode worker starts
  // now, in the background, so the first large read finds one (an idle store keeps none, see
  // `pool.idle_workers`; small reads meanwhile are decoded on this thread).
  const resolver = new LayerManager({ open: (key) => { engine.pool.prestart(); return opener.open(key); } }, { failureTtlMs: 5000 });
  const fs = new StoreFs(resolver, { log });
  // Before serving, so nothing it runs on the main thread delays a FUSE request.
  await warmUp(engine, log);
  return {
    client, engine, resolver, fs,
    close: async () => {
      await resolver.close();
      await engine.close();
      await client.close();
    },
  };
}
