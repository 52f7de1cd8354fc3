import { join } from 'node:path';
import type { Server } from 'node:http';
import { Engine } from '../engine/engine.js';
import { LayerManager } from '../layers/manager.js';
import { LayerResolver } from '../layers/resolver.js';
import { mountAnswers, mountStore, type MountedStore } from '../fs/mount.js';
import { StoreFs } from '../fs/store-fs.js';
import { logger } from '../log/logger.js';
import { trafficMetrics } from '../metrics/traffic.js';
import { RegistryClient } from '../registry/client.js';
import { engineOptions, retryPolicy, type StoreConfig } from './config.js';
import { SOCKET_NAME, startControlServer } from './control.js';
import { startMetricsServer } from './metrics-server.js';
import { notifyReady } from './sd-notify.js';
import { warmUp } from './warm-up.js';
import { mkdir } from 'node:fs/promises';

export interface DaemonOptions {
  config: StoreConfig;
  /** State directory (disk cache, control socket). */
  root: string;
  mountpoint: string;
}

export interface Daemon {
  client: RegistryClient;
  engine: Engine;
  resolver: LayerManager;
  /** The tree the mount serves (its node-id table is what a successor imports). */
  fs: StoreFs;
  mounted: MountedStore;
  metrics: Server | undefined;
  stop(): Promise<void>;
}

/** Wires the registry client, the engine, the resolver and the FUSE tree, and mounts. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { config } = opts;
  // The state directory holds the control socket and the cache: owner only.
  await mkdir(opts.root, { recursive: true, mode: 0o700 });
  const client = new RegistryClient({
    resolver: config.resolver,
    retry: retryPolicy(config),
    // The one place registry requests, retries and range splits are counted for /metrics.
    traffic: trafficMetrics(),
  });
  const engine = await Engine.create(engineOptions(config, { cacheDir: config.cache.dir || join(opts.root, 'cache') }));
  const resolver = new LayerManager(new LayerResolver(client, engine, {
    timeoutMs: config.resolve_timeout_sec * 1000,
    allowUnverified: config.allow_unverified,
    manifestTtlMs: 120_000,
    singleRangeOnly: config.blob.force_single_range_mode,
  }), { failureTtlMs: 5000 });
  const fs = new StoreFs(resolver);
  // Before the mount, so nothing it runs on the main thread delays a FUSE request.
  await warmUp(engine);
  let mounted: MountedStore;
  try {
    mounted = await mountStore(fs, { mountpoint: opts.mountpoint, activity: engine.activity });
  } catch (err) {
    await engine.close();
    await client.close();
    throw err;
  }
  let control;
  let metrics;
  try {
    control = await startControlServer(join(opts.root, SOCKET_NAME), {
      credentials: client.runtimeCredentials,
      status: async () => resolver.status(),
      // A lookup that failed for want of these credentials must not be answered from memory.
      credentialsAdded: (repo) => {
        const layers = resolver.forgetFailures(repo.registry, repo.repository);
        if (layers > 0) logger.info({ registry: repo.registry, repository: repo.repository, layers }, 'new credentials: failed layer lookups of this repository will be tried again');
      },
    });
    metrics = config.metrics_address ? await startMetricsServer(config.metrics_address, () => mountAnswers(mounted.mountpoint)) : undefined;
  } catch (err) {
    await mounted.unmount();
    await engine.close();
    await client.close();
    throw err;
  }
  await notifyReady(`serving ${mounted.mountpoint}`);
  let stopping: Promise<void> | undefined;
  return {
    client, engine, resolver, fs, mounted, metrics,
    stop: () => {
      stopping ??= (async () => {
        logger.info({ mountpoint: mounted.mountpoint }, 'stopping');
        await mounted.unmount();
        metrics?.close();
        control.close();
        await resolver.close();
        await engine.close();
        await client.close();
      })();
      return stopping;
    },
  };
}
