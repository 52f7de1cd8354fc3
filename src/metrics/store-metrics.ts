import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'estargz_store_';

/** Seconds, from 100 µs to ~2 min: a 4 KiB cache hit to a slow prefetch. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];

export type FetchOperation = 'manifest' | 'footer' | 'toc' | 'on_demand' | 'prefetch' | 'background' | 'blob';

/** `incomplete`: a background fetch failed (a registry fault, bad bytes) and will be tried again; reads still fetch on demand. */
export const LAYER_STATES = ['lazy', 'prefetching', 'incomplete', 'complete', 'failed'] as const;
export type LayerStateName = (typeof LAYER_STATES)[number];

/** Per-layer series are kept for at most this many layers, so label cardinality stays bounded. */
export const MAX_LAYER_SERIES = 256;

/** Event-loop delay: anything synchronous on the main thread stalls every FUSE reader. */
const DELAY_RESOLUTION_MS = 10;
/** The monitor records the time between its timer's ticks: the delay is what exceeds the tick (an idle loop reads 0, not 10 ms). */
const delaySeconds = (ns: number): number => Math.max(0, ns / 1e6 - DELAY_RESOLUTION_MS) / 1000;
/** Tick of the lag sampler: fine enough to see a 20 ms stall, cheap enough to run always (100 wake-ups a second). */
const LAG_TICK_MS = DELAY_RESOLUTION_MS;

/**
 * Every metric estargz-store exports, in one Prometheus registry. The
 * daemon creates one for the process and hands it (inside its Telemetry)
 * to every room that counts something; tests create their own, so no two
 * stores or tests share a counter. Names, labels and units are documented
 * in the README's metrics reference.
 */
export class StoreMetrics {
  readonly registry = new Registry();

  readonly fetchDuration = new Histogram({
    name: `${PREFIX}fetch_duration_seconds`,
    help: 'Latency of registry fetches, by operation (manifest, footer, toc, on_demand, prefetch, background, blob).',
    labelNames: ['operation'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly registryRequests = new Counter({
    name: `${PREFIX}registry_requests_total`,
    help: 'HTTP requests sent to registries (each attempt: a retry counts again), by operation.',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });

  readonly registryBytes = new Counter({
    name: `${PREFIX}registry_bytes_total`,
    help: 'Body bytes of successful registry answers (their Content-Length), by operation.',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });

  readonly registryRetries = new Counter({
    name: `${PREFIX}registry_retries_total`,
    help: 'Registry requests sent again, by operation and reason (status, network, body, auth, missing_range).',
    labelNames: ['operation', 'reason'] as const,
    registers: [this.registry],
  });

  readonly registryRangeSplits = new Counter({
    name: `${PREFIX}registry_range_splits_total`,
    help: 'Reads of several ranges that went out as several requests instead of one, by operation and reason (single_range_mode, refused, partial_answer).',
    labelNames: ['operation', 'reason'] as const,
    registers: [this.registry],
  });

  readonly bytesServed = new Counter({
    name: `${PREFIX}bytes_served_total`,
    help: 'Bytes returned to readers: "diff" is verified file content, "blob" the raw compressed layer.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly cacheRequests = new Counter({
    name: `${PREFIX}cache_requests_total`,
    help: 'Verified-chunk cache lookups by tier (memory, disk) and result (hit, miss).',
    labelNames: ['tier', 'result'] as const,
    registers: [this.registry],
  });

  readonly cacheBytes = new Gauge({
    name: `${PREFIX}cache_bytes`,
    help: 'Bytes held by the verified-chunk cache, by tier.',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  });

  readonly cacheEntries = new Gauge({
    name: `${PREFIX}cache_entries`,
    help: 'Chunks held by the verified-chunk cache, by tier.',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  });

  readonly verificationFailures = new Counter({
    name: `${PREFIX}verification_failures_total`,
    help: 'Chunks (or whole layers) whose bytes did not match their digest, by what failed (chunk, disk_cache, blob, diff_id).',
    labelNames: ['what'] as const,
    registers: [this.registry],
  });

  readonly poolQueueDepth = new Gauge({
    name: `${PREFIX}pool_queue_depth`,
    help: 'Decode tasks waiting for a worker, by priority.',
    labelNames: ['priority'] as const,
    registers: [this.registry],
  });

  readonly poolTaskDuration = new Histogram({
    name: `${PREFIX}pool_task_duration_seconds`,
    help: 'Time from submitting a decode task to its result (queueing included).',
    labelNames: ['priority'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly poolUtilization = new Gauge({
    name: `${PREFIX}pool_utilization_ratio`,
    help: 'Share of time the decode workers were busy since the pool started (piscina utilization).',
    registers: [this.registry],
  });

  readonly layerSize = new Gauge({
    name: `${PREFIX}layer_size_bytes`,
    help: 'Compressed size of each open layer.',
    labelNames: ['layer'] as const,
    registers: [this.registry],
  });

  readonly layerFetched = new Gauge({
    name: `${PREFIX}layer_fetched_bytes`,
    help: 'Distinct compressed bytes of each open layer fetched so far.',
    labelNames: ['layer'] as const,
    registers: [this.registry],
  });

  readonly layerPrefetched = new Gauge({
    name: `${PREFIX}layer_prefetch_bytes`,
    help: 'Compressed bytes each open layer prefetched.',
    labelNames: ['layer'] as const,
    registers: [this.registry],
  });

  readonly layerState = new Gauge({
    name: `${PREFIX}layer_state`,
    help: '1 for the state each open layer is in (lazy, prefetching, incomplete, complete, failed), 0 for the others.',
    labelNames: ['layer', 'state'] as const,
    registers: [this.registry],
  });

  readonly backgroundFetchFailures = new Counter({
    name: `${PREFIX}background_fetch_failures_total`,
    help: 'Background fetch runs that stopped short, by why (fetch: the registry kept failing; verify: a range kept failing its chunk digests; inflate: the blob does not inflate; blob: blob digest mismatch; diff_id: diff_id mismatch). Each is tried again later.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly unexpectedErrors = new Counter({
    name: `${PREFIX}unexpected_errors_total`,
    help: 'Errors that reached the last-resort handler (an unhandled rejection or exception) or a FUSE handler that threw something other than an errno: each is a bug, logged with its stack; the store keeps serving.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly fuseOpDuration = new Histogram({
    name: `${PREFIX}fuse_op_duration_seconds`,
    help: 'Time to answer a FUSE request, by operation (getattr, lookup-triggered resolution included; read, readdir, …).',
    labelNames: ['op'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly fuseOpErrors = new Counter({
    name: `${PREFIX}fuse_op_errors_total`,
    help: 'FUSE requests answered with an error, by operation and errno name (ENOENT is not counted).',
    labelNames: ['op', 'errno'] as const,
    registers: [this.registry],
  });

  /**
   * Event-loop lag as a cumulative histogram: unlike the delay gauge, no
   * scrape resets it, so any window (a soak's phase, `rate()` over 5 min) can
   * be turned into a share of ticks under 20 ms or a p99, by any number of scrapers.
   */
  readonly eventLoopLag = new Histogram({
    name: `${PREFIX}event_loop_lag_seconds`,
    help: 'How late a 10 ms main-thread timer fired, one observation per tick: the wait a FUSE request arriving then would have had.',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5],
    registers: [this.registry],
  });

  /** The event-loop monitor, started with the process metrics (enableProcessMetrics). */
  private loopDelay: IntervalHistogram | undefined;

  readonly eventLoopDelay = new Gauge({
    name: `${PREFIX}event_loop_delay_seconds`,
    help: 'Main-thread event-loop delay over the last scrape interval, by quantile (0.5, 0.99, 1 = max).',
    labelNames: ['quantile'] as const,
    registers: [this.registry],
    collect: () => this.collectLoopDelay(),
  });

  private collectLoopDelay(): void {
    const d = this.loopDelay;
    if (!d) return;
    this.eventLoopDelay.set({ quantile: '0.5' }, delaySeconds(d.percentile(50)));
    this.eventLoopDelay.set({ quantile: '0.99' }, delaySeconds(d.percentile(99)));
    this.eventLoopDelay.set({ quantile: '1' }, delaySeconds(d.max));
    d.reset();
  }

  /** Layers with per-layer series (at most MAX_LAYER_SERIES). */
  private readonly layerLabels = new Set<string>();

  /** Process metrics (CPU, RSS, fds, GC), the event-loop monitor and the lag sampler, once: a store's /metrics server turns them on. */
  enableProcessMetrics(): void {
    if (this.loopDelay) return;
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    this.loopDelay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
    this.loopDelay.enable();
    let last = performance.now();
    // Observes the lateness of every tick of an unref'd interval timer.
    setInterval(() => {
      const now = performance.now();
      this.eventLoopLag.observe(Math.max(0, now - last - LAG_TICK_MS) / 1000);
      last = now;
    }, LAG_TICK_MS).unref();
  }

  /** Starts the per-layer series of a layer; false when the bound is reached (the layer is then not exported). */
  trackLayer(layer: string): boolean {
    if (this.layerLabels.has(layer)) return true;
    if (this.layerLabels.size >= MAX_LAYER_SERIES) return false;
    this.layerLabels.add(layer);
    return true;
  }

  setLayerState(layer: string, state: LayerStateName): void {
    if (!this.layerLabels.has(layer)) return;
    for (const s of LAYER_STATES) this.layerState.set({ layer, state: s }, s === state ? 1 : 0);
  }

  /** Drops a released layer's series. */
  untrackLayer(layer: string): void {
    if (!this.layerLabels.delete(layer)) return;
    for (const g of [this.layerSize, this.layerFetched, this.layerPrefetched]) g.remove({ layer });
    for (const s of LAYER_STATES) this.layerState.remove({ layer, state: s });
  }
}
