import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The process's one Prometheus registry and every metric estargz-store
 * exports. Other modules import these; this module imports none of them.
 * Names, labels and units are documented in the README's metrics reference.
 */
export const registry = new Registry();

const PREFIX = 'estargz_store_';

/** Seconds, from 100 µs to ~2 min: a 4 KiB cache hit to a slow prefetch. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];

export type FetchOperation = 'manifest' | 'footer' | 'toc' | 'on_demand' | 'prefetch' | 'background' | 'blob';

export const fetchDuration = new Histogram({
  name: `${PREFIX}fetch_duration_seconds`,
  help: 'Latency of registry fetches, by operation (manifest, footer, toc, on_demand, prefetch, background, blob).',
  labelNames: ['operation'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

export const registryRequests = new Counter({
  name: `${PREFIX}registry_requests_total`,
  help: 'HTTP requests sent to registries (each attempt: a retry counts again), by operation.',
  labelNames: ['operation'] as const,
  registers: [registry],
});

export const registryBytes = new Counter({
  name: `${PREFIX}registry_bytes_total`,
  help: 'Body bytes of successful registry answers (their Content-Length), by operation.',
  labelNames: ['operation'] as const,
  registers: [registry],
});

export const registryRetries = new Counter({
  name: `${PREFIX}registry_retries_total`,
  help: 'Registry requests sent again, by operation and reason (status, network, body, auth, missing_range).',
  labelNames: ['operation', 'reason'] as const,
  registers: [registry],
});

export const registryRangeSplits = new Counter({
  name: `${PREFIX}registry_range_splits_total`,
  help: 'Reads of several ranges that went out as several requests instead of one, by operation and reason (single_range_mode, refused, partial_answer).',
  labelNames: ['operation', 'reason'] as const,
  registers: [registry],
});

export const bytesServed = new Counter({
  name: `${PREFIX}bytes_served_total`,
  help: 'Bytes returned to readers: "diff" is verified file content, "blob" the raw compressed layer.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const cacheRequests = new Counter({
  name: `${PREFIX}cache_requests_total`,
  help: 'Verified-chunk cache lookups by tier (memory, disk) and result (hit, miss).',
  labelNames: ['tier', 'result'] as const,
  registers: [registry],
});

export const cacheBytes = new Gauge({
  name: `${PREFIX}cache_bytes`,
  help: 'Bytes held by the verified-chunk cache, by tier.',
  labelNames: ['tier'] as const,
  registers: [registry],
});

export const cacheEntries = new Gauge({
  name: `${PREFIX}cache_entries`,
  help: 'Chunks held by the verified-chunk cache, by tier.',
  labelNames: ['tier'] as const,
  registers: [registry],
});

export const verificationFailures = new Counter({
  name: `${PREFIX}verification_failures_total`,
  help: 'Chunks (or whole layers) whose bytes did not match their digest, by what failed (chunk, disk_cache, blob, diff_id).',
  labelNames: ['what'] as const,
  registers: [registry],
});

export const poolQueueDepth = new Gauge({
  name: `${PREFIX}pool_queue_depth`,
  help: 'Decode tasks waiting for a worker, by priority.',
  labelNames: ['priority'] as const,
  registers: [registry],
});

export const poolTaskDuration = new Histogram({
  name: `${PREFIX}pool_task_duration_seconds`,
  help: 'Time from submitting a decode task to its result (queueing included).',
  labelNames: ['priority'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

export const poolUtilization = new Gauge({
  name: `${PREFIX}pool_utilization_ratio`,
  help: 'Share of time the decode workers were busy since the pool started (piscina utilization).',
  registers: [registry],
});

export const layerSize = new Gauge({
  name: `${PREFIX}layer_size_bytes`,
  help: 'Compressed size of each open layer.',
  labelNames: ['layer'] as const,
  registers: [registry],
});

export const layerFetched = new Gauge({
  name: `${PREFIX}layer_fetched_bytes`,
  help: 'Distinct compressed bytes of each open layer fetched so far.',
  labelNames: ['layer'] as const,
  registers: [registry],
});

export const layerPrefetched = new Gauge({
  name: `${PREFIX}layer_prefetch_bytes`,
  help: 'Compressed bytes each open layer prefetched.',
  labelNames: ['layer'] as const,
  registers: [registry],
});

/** `incomplete`: a background fetch failed (a registry fault, bad bytes) and will be tried again; reads still fetch on demand. */
export const LAYER_STATES = ['lazy', 'prefetching', 'incomplete', 'complete', 'failed'] as const;
export type LayerStateName = (typeof LAYER_STATES)[number];

export const layerState = new Gauge({
  name: `${PREFIX}layer_state`,
  help: '1 for the state each open layer is in (lazy, prefetching, incomplete, complete, failed), 0 for the others.',
  labelNames: ['layer', 'state'] as const,
  registers: [registry],
});

export const backgroundFetchFailures = new Counter({
  name: `${PREFIX}background_fetch_failures_total`,
  help: 'Background fetch runs that stopped short, by why (fetch: the registry kept failing; verify: a range kept failing its chunk digests; inflate: the blob does not inflate; blob: blob digest mismatch; diff_id: diff_id mismatch). Each is tried again later.',
  labelNames: ['reason'] as const,
  registers: [registry],
});

export const unexpectedErrors = new Counter({
  name: `${PREFIX}unexpected_errors_total`,
  help: 'Errors that reached the last-resort handler (an unhandled rejection or exception) or a FUSE handler that threw something other than an errno: each is a bug, logged with its stack; the store keeps serving.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const fuseOpDuration = new Histogram({
  name: `${PREFIX}fuse_op_duration_seconds`,
  help: 'Time to answer a FUSE request, by operation (getattr, lookup-triggered resolution included; read, readdir, …).',
  labelNames: ['op'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

export const fuseOpErrors = new Counter({
  name: `${PREFIX}fuse_op_errors_total`,
  help: 'FUSE requests answered with an error, by operation and errno name (ENOENT is not counted).',
  labelNames: ['op', 'errno'] as const,
  registers: [registry],
});

/** Event-loop delay: anything synchronous on the main thread stalls every FUSE reader. */
const DELAY_RESOLUTION_MS = 10;
const loopDelay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
loopDelay.enable();
/** The monitor records the time between its timer's ticks: the delay is what exceeds the tick (an idle loop reads 0, not 10 ms). */
const delaySeconds = (ns: number): number => Math.max(0, ns / 1e6 - DELAY_RESOLUTION_MS) / 1000;
export const eventLoopDelay = new Gauge({
  name: `${PREFIX}event_loop_delay_seconds`,
  help: 'Main-thread event-loop delay over the last scrape interval, by quantile (0.5, 0.99, 1 = max).',
  labelNames: ['quantile'] as const,
  registers: [registry],
  collect() {
    this.set({ quantile: '0.5' }, delaySeconds(loopDelay.percentile(50)));
    this.set({ quantile: '0.99' }, delaySeconds(loopDelay.percentile(99)));
    this.set({ quantile: '1' }, delaySeconds(loopDelay.max));
    loopDelay.reset();
  },
});

/** Tick of the lag sampler: fine enough to see a 20 ms stall, cheap enough to run always (100 wake-ups a second). */
const LAG_TICK_MS = DELAY_RESOLUTION_MS;

/**
 * Event-loop lag as a cumulative histogram: unlike the gauge above, no scrape
 * resets it, so any window (a soak's phase, `rate()` over 5 min) can be
 * turned into a share of ticks under 20 ms or a p99, by any number of scrapers.
 */
export const eventLoopLag = new Histogram({
  name: `${PREFIX}event_loop_lag_seconds`,
  help: 'How late a 10 ms main-thread timer fired, one observation per tick: the wait a FUSE request arriving then would have had.',
  buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5],
  registers: [registry],
});

/** Observes the lateness of every tick of an unref'd interval timer; started once with the process metrics. */
function startLagSampler(): void {
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    eventLoopLag.observe(Math.max(0, now - last - LAG_TICK_MS) / 1000);
    last = now;
  }, LAG_TICK_MS).unref();
}

/** Process metrics (CPU, RSS, fds, GC) and the lag sampler, once: the registry itself says whether they are on. */
export function enableProcessMetrics(): void {
  if (registry.getSingleMetric(`${PREFIX}process_cpu_seconds_total`)) return;
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  startLagSampler();
}

/** Per-layer series are kept for at most this many layers, so label cardinality stays bounded. */
export const MAX_LAYER_SERIES = 256;
const layerLabels = new Set<string>();

/** Starts the per-layer series of a layer; false when the bound is reached (the layer is then not exported). */
export function trackLayer(layer: string): boolean {
  if (layerLabels.has(layer)) return true;
  if (layerLabels.size >= MAX_LAYER_SERIES) return false;
  layerLabels.add(layer);
  return true;
}

export function setLayerState(layer: string, state: LayerStateName): void {
  if (!layerLabels.has(layer)) return;
  for (const s of LAYER_STATES) layerState.set({ layer, state: s }, s === state ? 1 : 0);
}

/** Drops a released layer's series. */
export function untrackLayer(layer: string): void {
  if (!layerLabels.delete(layer)) return;
  for (const g of [layerSize, layerFetched, layerPrefetched]) g.remove({ layer });
  for (const s of LAYER_STATES) layerState.remove({ layer, state: s });
}
