import { readFile } from 'node:fs/promises';
import { parse as parseToml } from 'smol-toml';
import type { BackgroundFetchOptions } from '../engine/background-fetch.js';
import type { BlobReaderOptions } from '../engine/blob-reader.js';
import type { FetchTuning } from '../engine/chunk-loader.js';
import type { EngineOptions, LayerFetchSettings } from '../engine/engine.js';
import type { ResolverConfig } from '../registry/hosts.js';
import type { RetryPolicy } from '../registry/transport.js';

/**
 * The daemon's configuration: a TOML file with the Go stargz-store's key
 * names where the concept is the same, so its users' config carries over,
 * plus ours. Everything has a default; the effective config is printed by
 * `estargz-store config print`.
 */
export interface StoreConfig {
  /** Skip prefetch. */
  noprefetch: boolean;
  /** Skip background fetch. */
  no_background_fetch: boolean;
  /** Bytes to prefetch from layers without a landmark. */
  prefetch_size: number;
  /** A prefetch still running after this long is no longer waited for or reported as running (reads fetch on demand). */
  prefetch_timeout_sec: number;
  /** Background ranges fetched at once per layer. */
  max_concurrency: number;
  /**
   * Background fetch starts after this long without reads. Not 0 by default: behind the host
   * scheduler its requests wait behind readers', but started with the layer it still slowed the
   * first reads (CPU and decode workers on a small machine) and raised the store's peak memory
   * (bench/footprint.ts; README, background_fetch_idle_sec).
   */
  background_fetch_idle_sec: number;
  /** Background fetch bandwidth per layer (bytes/s, 0 = unlimited). */
  background_fetch_bytes_per_sec: number;
  /** A background fetch that stopped on a fault starts again after this long (doubling each time). */
  background_fetch_retry_sec: number;
  /**
   * Nice value of the store's main thread, the one that answers every FUSE
   * request (see src/daemon/main-thread-priority.ts); the worker threads
   * stay at the process's own value.
   */
  main_thread_nice: number;
  /**
   * After answering FUSE requests, the main thread keeps reading /dev/fuse
   * for up to this many µs while nothing else is ready, instead of sleeping
   * until the next request (src/fuse/session.ts, busyPollUs); 0 = off.
   */
  fuse_busy_poll_usec: number;
  blob: {
    /** Nearby chunks closer than this are fetched as one range. */
    chunk_size: number;
    max_retries: number;
    min_wait_msec: number;
    max_wait_msec: number;
    /** Bound on one fetch including its retries. */
    fetching_timeout_sec: number;
    /** Never send multi-range requests. */
    force_single_range_mode: boolean;
    /** An on-demand read also fetches the members after it in the blob, this many bytes at first… */
    read_ahead_bytes: number;
    /** …doubling while a reader keeps reading in blob order, up to this. */
    read_ahead_max_bytes: number;
  };
  resolver: ResolverConfig & { request_timeout_sec: number };
  /** Address of the /metrics and /healthz endpoint ("host:port"); empty = off. */
  metrics_address: string;
  cache: {
    /** Disk chunk cache directory; default `<root>/cache`. */
    dir: string;
    max_bytes: number;
    memory_bytes: number;
  };
  pool: {
    /** Decode workers at most; 0 = the machine's cores. */
    workers: number;
    /**
     * Decode workers kept while nothing is decoded (the others start on demand); at most `workers`.
     * Default 2: a large cold read decodes two chunks at once (its chunk and the next), and a
     * second worker started on demand made it wait ~55 ms for it (W2 0.098 s against 0.042 s);
     * started when a layer is resolved, its start took CPU from the resolution (W1 +10 ms). Each
     * worker is an isolate of ~12 MiB resident. 0: an idle store holds none; one starts in the
     * background when a layer is resolved (DecodePool.prestart), and a small chunk a reader waits
     * for meanwhile is decoded on the main thread (bench/results/footprint-breakdown.md).
     */
    idle_workers: number;
    decoder: 'zlib' | 'pako';
  };
  /** Serve layers without a TOC digest annotation (their TOC is not verified). */
  allow_unverified: boolean;
  /** Give up resolving a layer after this long. */
  resolve_timeout_sec: number;
  log_level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
}

export const DEFAULT_CONFIG: StoreConfig = {
  noprefetch: false,
  no_background_fetch: false,
  prefetch_size: 0,
  prefetch_timeout_sec: 10,
  max_concurrency: 2,
  background_fetch_idle_sec: 5,
  background_fetch_bytes_per_sec: 0,
  background_fetch_retry_sec: 30,
  main_thread_nice: -5,
  fuse_busy_poll_usec: 100,
  blob: { chunk_size: 32768, max_retries: 5, min_wait_msec: 30, max_wait_msec: 300000, fetching_timeout_sec: 300, force_single_range_mode: false, read_ahead_bytes: 1 << 20, read_ahead_max_bytes: 8 << 20 },
  resolver: { request_timeout_sec: 30, host: {} },
  metrics_address: '',
  cache: { dir: '', max_bytes: 10 * 2 ** 30, memory_bytes: 32 * 2 ** 20 },
  pool: { workers: 0, idle_workers: 2, decoder: 'zlib' },
  allow_unverified: false,
  resolve_timeout_sec: 30,
  log_level: 'info',
};

export const DEFAULT_CONFIG_PATH = '/etc/estargz-store/config.toml';

export class ConfigError extends Error {}

/** A whole number from min to max (both included). */
type Range = { range: readonly [min: number, max: number] };
type Kind = 'bool' | 'uint' | 'posint' | 'string' | { oneOf: readonly string[] } | Range;

const SCALARS: Record<string, Kind> = {
  noprefetch: 'bool',
  no_background_fetch: 'bool',
  prefetch_size: 'uint',
  prefetch_timeout_sec: 'posint',
  max_concurrency: 'posint',
  background_fetch_idle_sec: 'uint',
  background_fetch_bytes_per_sec: 'uint',
  background_fetch_retry_sec: 'posint',
  main_thread_nice: { range: [-20, 19] },
  fuse_busy_poll_usec: { range: [0, 1000] },
  'blob.chunk_size': 'uint',
  'blob.max_retries': 'uint',
  'blob.min_wait_msec': 'uint',
  'blob.max_wait_msec': 'uint',
  'blob.fetching_timeout_sec': 'posint',
  'blob.read_ahead_bytes': 'uint',
  'blob.read_ahead_max_bytes': 'uint',
  'blob.force_single_range_mode': 'bool',
  'resolver.request_timeout_sec': 'uint',
  metrics_address: 'string',
  'cache.dir': 'string',
  'cache.max_bytes': 'uint',
  'cache.memory_bytes': 'uint',
  'pool.workers': 'uint',
  'pool.idle_workers': 'uint',
  'pool.decoder': { oneOf: ['zlib', 'pako'] },
  allow_unverified: 'bool',
  resolve_timeout_sec: 'posint',
  log_level: { oneOf: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] },
};

/** Keys of the Go stargz-store that mean nothing here: accepted without a warning, so its config files load as they are. */
const IGNORED = new Set([
  'http_cache_type', 'filesystem_cache_type', 'resolve_result_entry_ttl_sec', 'resolve_result_entry', 'debug',
  'allow_no_verification', 'disable_verification', 'no_prometheus', 'metadata_store', 'log_file_access', 'prefetch_async_size',
  'blob.valid_interval', 'blob.check_always', 'blob.prefetch_chunk_size', 'directory_cache', 'fuse', 'kubeconfig_keychain',
]);
const SECTIONS = new Set(['blob', 'resolver', 'cache', 'pool']);
const MIRROR_KEYS = new Set(['host', 'insecure', 'request_timeout_sec', 'header']);

function describe(kind: Kind): string {
  if (typeof kind === 'object') {
    return 'range' in kind ? `a whole number from ${kind.range[0]} to ${kind.range[1]}` : `one of ${kind.oneOf.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return { bool: 'true or false', uint: 'a whole number ≥ 0', posint: 'a whole number ≥ 1', string: 'a string' }[kind];
}

function check(key: string, value: unknown, kind: Kind, where: string): unknown {
  const [min, max] = typeof kind === 'object' && 'range' in kind ? kind.range : [kind === 'posint' ? 1 : 0, Infinity];
  const ok = typeof kind === 'object' && 'oneOf' in kind
    ? typeof value === 'string' && kind.oneOf.includes(value)
    : kind === 'bool' ? typeof value === 'boolean'
      : kind === 'string' ? typeof value === 'string'
        : (typeof value === 'number' || typeof value === 'bigint') && Number.isSafeInteger(Number(value))
          && Number(value) >= min && Number(value) <= max;
  if (!ok) throw new ConfigError(`${where}: ${key} = ${JSON.stringify(typeof value === 'bigint' ? Number(value) : value)} is not valid; expected ${describe(kind)}`);
  return typeof value === 'bigint' ? Number(value) : value;
}

/**
 * Validates a parsed TOML document into a StoreConfig. Invalid values throw
 * ConfigError naming key, value and what is allowed; unknown keys are
 * returned as warnings.
 */
export function buildConfig(doc: Record<string, unknown>, where: string): { config: StoreConfig; warnings: string[] } {
  const config: StoreConfig = structuredClone(DEFAULT_CONFIG);
  const warnings: string[] = [];
  const set = (path: string, value: unknown): void => {
    const [a, b] = path.split('.') as [string, string | undefined];
    if (b === undefined) (config as unknown as Record<string, unknown>)[a] = value;
    else ((config as unknown as Record<string, Record<string, unknown>>)[a]!)[b] = value;
  };
  for (const [key, value] of Object.entries(doc)) {
    if (SECTIONS.has(key) && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      for (const [sub, v] of Object.entries(value as Record<string, unknown>)) {
        const path = `${key}.${sub}`;
        if (path === 'resolver.host') config.resolver.host = checkHosts(v, where);
        else if (SCALARS[path]) set(path, check(path, v, SCALARS[path]!, where));
        else if (!IGNORED.has(path)) warnings.push(`${where}: unknown key ${path} (ignored)`);
      }
    } else if (SCALARS[key]) {
      set(key, check(key, value, SCALARS[key]!, where));
    } else if (!IGNORED.has(key)) {
      warnings.push(`${where}: unknown key ${key} (ignored)`);
    }
  }
  return { config, warnings };
}

function checkHosts(value: unknown, where: string): NonNullable<ResolverConfig['host']> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${where}: resolver.host must be a table of registries`);
  const out: NonNullable<ResolverConfig['host']> = {};
  for (const [host, conf] of Object.entries(value as Record<string, unknown>)) {
    const mirrors = (conf as { mirrors?: unknown })?.mirrors;
    if (!Array.isArray(mirrors)) throw new ConfigError(`${where}: resolver.host."${host}" needs a [[resolver.host."${host}".mirrors]] list`);
    out[host] = {
      mirrors: mirrors.map((m: Record<string, unknown>, i) => {
        const at = `resolver.host."${host}".mirrors[${i}]`;
        for (const k of Object.keys(m)) if (!MIRROR_KEYS.has(k)) throw new ConfigError(`${where}: ${at}: unknown key ${k}; expected host, insecure, request_timeout_sec, header`);
        if (typeof m.host !== 'string' || m.host === '') throw new ConfigError(`${where}: ${at}.host must be a non-empty string`);
        if (m.insecure !== undefined && typeof m.insecure !== 'boolean') throw new ConfigError(`${where}: ${at}.insecure = ${JSON.stringify(m.insecure)} is not valid; expected true or false`);
        const timeout = m.request_timeout_sec === undefined ? undefined : Number(m.request_timeout_sec);
        if (timeout !== undefined && !Number.isInteger(timeout)) throw new ConfigError(`${where}: ${at}.request_timeout_sec must be a whole number`);
        if (m.header !== undefined) {
          const ok = typeof m.header === 'object' && m.header !== null && !Array.isArray(m.header)
            && Object.values(m.header).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string')));
          if (!ok) throw new ConfigError(`${where}: ${at}.header must be a table of strings or lists of strings`);
        }
        return {
          host: m.host,
          ...(m.insecure !== undefined && { insecure: m.insecure as boolean }),
          ...(timeout !== undefined && { request_timeout_sec: timeout }),
          ...(m.header !== undefined && { header: m.header as Record<string, string | string[]> }),
        };
      }),
    };
  }
  return out;
}

/**
 * Loads the config file. A missing default file is fine (defaults apply); a
 * missing explicit one is an error.
 */
export async function loadConfig(path: string | undefined): Promise<{ config: StoreConfig; warnings: string[]; source: string }> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && path === undefined) return { config: structuredClone(DEFAULT_CONFIG), warnings: [], source: '(defaults)' };
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`${file} is not valid TOML: ${(err as Error).message}`);
  }
  return { ...buildConfig(doc, file), source: file };
}

/** Compressed bytes of readers' fetches a layer holds in memory for its whole-layer check (the rest spills to disk). */
export const STORE_HELD_MEMORY_BYTES = 8 << 20;

/** Overrides of what `engineOptions` derives from a config (tests, benchmarks), merged field by field. */
export interface EngineOverrides {
  cacheDir?: string;
  diskCacheBytes?: number;
  memoryCacheBytes?: number;
  poolThreads?: number;
  poolIdleThreads?: number;
  decoder?: EngineOptions['decoder'];
  tuning?: Partial<FetchTuning>;
  fetch?: Partial<LayerFetchSettings> & { blobReader?: Partial<BlobReaderOptions>; background?: Partial<BackgroundFetchOptions> };
  hostScheduler?: EngineOptions['hostScheduler'];
}

/**
 * The engine's options from a config: the one place config values (and so
 * their defaults, DEFAULT_CONFIG) reach the engine. Names say what each
 * value does there: `[blob] chunk_size` (in the Go store, the fetch unit) is
 * the gap below which nearby chunks are fetched as one range here.
 */
export function engineOptions(config: StoreConfig = DEFAULT_CONFIG, overrides: EngineOverrides = {}): EngineOptions {
  const poolThreads = overrides.poolThreads ?? (config.pool.workers > 0 ? config.pool.workers : undefined);
  return {
    ...(overrides.cacheDir !== undefined && { cacheDir: overrides.cacheDir }),
    diskCacheBytes: overrides.diskCacheBytes ?? config.cache.max_bytes,
    memoryCacheBytes: overrides.memoryCacheBytes ?? config.cache.memory_bytes,
    ...(poolThreads !== undefined && { poolThreads }),
    poolIdleThreads: overrides.poolIdleThreads ?? config.pool.idle_workers,
    decoder: overrides.decoder ?? config.pool.decoder,
    ...(overrides.hostScheduler && { hostScheduler: overrides.hostScheduler }),
    tuning: {
      mergeGapBytes: config.blob.chunk_size,
      fetchTimeoutMs: config.blob.fetching_timeout_sec * 1000,
      readAheadBytes: config.blob.read_ahead_bytes,
      readAheadMaxBytes: config.blob.read_ahead_max_bytes,
      ...overrides.tuning,
    },
    fetch: {
      noPrefetch: config.noprefetch,
      prefetchSize: config.prefetch_size,
      prefetchTimeoutMs: config.prefetch_timeout_sec * 1000,
      noBackgroundFetch: config.no_background_fetch,
      ...overrides.fetch,
      background: {
        idleMs: config.background_fetch_idle_sec * 1000,
        bytesPerSec: config.background_fetch_bytes_per_sec,
        concurrency: config.max_concurrency,
        runRetryWaitMs: config.background_fetch_retry_sec * 1000,
        // Readers' compressed bytes kept for the whole-layer check, per layer: past this they go to
        // the spill file in the cache directory. 32 MiB a layer was the largest single item of the
        // store's resident set after reading a layer (bench/footprint.ts), and a pull reads several.
        heldMemoryBytes: STORE_HELD_MEMORY_BYTES,
        ...overrides.fetch?.background,
      },
    },
  };
}

/** The registry client's retry policy from a config (`[blob] max_retries`, `min_wait_msec`, `max_wait_msec`). */
export function retryPolicy(config: StoreConfig = DEFAULT_CONFIG): RetryPolicy {
  return { maxRetries: config.blob.max_retries, minWaitMs: config.blob.min_wait_msec, maxWaitMs: config.blob.max_wait_msec };
}
