import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type { FetchOperation } from '../metrics/store-metrics.js';
import type { Telemetry } from '../metrics/telemetry.js';
import type { BlobFetcher, ChunkLoader, ChunkWant } from './chunk-loader.js';
import { EngineError } from './errors.js';
import type { ZstdRebuildPlan } from '../../workers/layer-digest.js';
import { LayerDigest } from './layer-digest.js';
import type { HeldSpans } from './held-spans.js';

export interface BackgroundFetchOptions {
  /** A run starts, and (without a host scheduler) pauses, until no foreground read happened for this long. */
  idleMs: number;
  /** Bandwidth; 0 = unlimited. */
  bytesPerSec: number;
  /** Ranges fetched ahead of the one being processed. */
  concurrency: number;
  /** Size of each range. */
  spanBytes: number;
  /** Tries per range before the run stops (a reset, a short or shifted body, bytes that fail their digests). */
  spanAttempts: number;
  /** Wait before the first retry of a range, doubling each time. */
  spanRetryWaitMs: number;
  /** Wait before a stopped run starts again, doubling each time up to `maxRunRetryWaitMs`. */
  runRetryWaitMs: number;
  maxRunRetryWaitMs: number;
  /** Runs that fail the whole-layer check (blob digest, diff_id) before the layer is declared failed. */
  maxWholeFailures: number;
  /** Runs of any outcome before the fetch stops trying (the layer stays incomplete); Infinity in the store. */
  maxRuns: number;
  /** Compressed bytes of readers' fetches held in memory for the whole-layer check, per layer; past it they spill to the cache directory (see HeldSpans). */
  heldMemoryBytes: number;
}

/** What the daemon's config sets (`background_fetch_idle_sec`, `background_fetch_bytes_per_sec`, `max_concurrency`, `background_fetch_retry_sec`): no default here, the config table has them. */
export type BackgroundSettings = Pick<BackgroundFetchOptions, 'idleMs' | 'bytesPerSec' | 'concurrency' | 'runRetryWaitMs'>;

/** Defaults of the options no config key sets. */
export const DEFAULT_BACKGROUND_FETCH: Omit<BackgroundFetchOptions, keyof BackgroundSettings> = {
  spanBytes: 8 << 20,
  spanAttempts: 4,
  spanRetryWaitMs: 250,
  maxRunRetryWaitMs: 10 * 60_000,
  maxWholeFailures: 3,
  maxRuns: Infinity,
  heldMemoryBytes: 32 << 20,
};

/** What a background fetch needs of its layer: not the layer itself. */
export interface BackgroundFetchDeps {
  /** Label for logs and metrics. */
  layer: string;
  log: Telemetry['log'];
  metrics: Telemetry['metrics'];
  blobDigest: string;
  /** The config's diff_id, checked once the whole layer went by. */
  diffID: string | undefined;
  /** zstd:chunked: how the diff_id's tar is rebuilt (never by decoding the blob as a stream); absent: the blob is gunzipped. */
  rebuild?: () => ZstdRebuildPlan;
  fetcher: BlobFetcher;
  loader: ChunkLoader;
  /** Every chunk, in blob order. */
  chunks: () => readonly ChunkWant[];
  /** When the layer last served a foreground read (Date.now() units). */
  lastForeground: () => number;
  onFetched: (offset: number, end: number, op: FetchOperation) => void;
  /** Compressed bytes readers already fetched: taken instead of fetched again (see HeldSpans). */
  held?: HeldSpans;
  /** Ranges worth having in flight on the link (bandwidth × round trip); the window is the larger of this (at most MAX_WINDOW) and `concurrency`. */
  parallelism?: () => number;
  /** A passed check remembered from an earlier run: with every chunk still cached, no fetch at all. */
  remembered?: () => Promise<boolean>;
  /** Remembers a passed check (in the disk cache) for the next run. */
  remember?: () => Promise<void>;
}

export type BackgroundState = 'waiting' | 'fetching' | 'incomplete' | 'complete' | 'failed';

/** Why a run stopped: the metric's reason label and a message naming the layer and the range. */
class RunStopped extends Error {
  constructor(readonly reason: 'fetch' | 'verify' | 'inflate' | 'blob' | 'diff_id', message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Held and fetched pieces are put together this many bytes at a time, a turn of the event loop between. */
const COPY_SLICE_BYTES = 1 << 20;

/** Ranges in flight per layer at most, however large the link's bandwidth × round trip: each is a span's worth of memory. */
const MAX_WINDOW = 8;

interface Range {
  offset: number;
  end: number;
}

/** A fetched range's bytes, and whether they are this fetch's alone. */
interface Fetched {
  data: Buffer;
  exclusive: boolean;
}

/**
 * Fetches a whole layer in the background, verifies every chunk on the way
 * into the caches, and checks the whole blob against its digest and the
 * uncompressed tar against its diff_id (which the reference store never
 * checks). Every fault is a fault of a range: fetched again a bounded number
 * of times with back-off; a run that still fails stops, leaves the layer
 * serving verified chunks on demand, and starts over later. Only a blob that
 * keeps failing its whole-layer check is declared failed.
 */
export class BackgroundFetch {
  private stateName: BackgroundState = 'waiting';
  private lastReason: string | undefined;
  private runs = 0;
  private wholeFailures = 0;
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  /** Idle time counts from the start too: a layer just resolved is about to be read. */
  private startedAt = 0;

  constructor(
    private readonly deps: BackgroundFetchDeps,
    private readonly opts: BackgroundFetchOptions,
    private readonly onState: (state: BackgroundState, reason?: string) => void,
  ) {}

  get state(): BackgroundState {
    return this.stateName;
  }

  /** Why the last run stopped, or why the layer failed. */
  get reason(): string | undefined {
    return this.lastReason;
  }

  start(): void {
    if (this.running) return;
    this.startedAt = Date.now();
    // Every failure is handled inside; this catch only keeps a bug from becoming an unhandled rejection.
    this.running ??= this.loop().catch((err: unknown) => {
      if (!this.abort.signal.aborted) this.deps.log.error({ layer: this.deps.layer, err: (err as Error).stack }, 'background fetch ended unexpectedly');
    });
  }

  /** Resolves when the fetch has finished, for good or for failure (or at once if it never started). */
  done(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  async close(): Promise<void> {
    this.abort.abort(new EngineError('CLOSED', `layer ${this.deps.layer} closed`, { layer: this.deps.layer }));
    await this.running;
  }

  private setState(state: BackgroundState, reason?: string): void {
    this.stateName = state;
    if (reason !== undefined) this.lastReason = reason;
    this.onState(state, reason);
  }

  private async loop(): Promise<void> {
    try {
      await this.runAll();
    } finally {
      // The check is over (or the layer closed): nothing needs readers' compressed bytes any more.
      await this.deps.held?.close();
    }
  }

  private async runAll(): Promise<void> {
    if ((await this.deps.remembered?.()) && this.allCached()) {
      this.setState('complete');
      this.deps.log.info({ layer: this.deps.layer }, 'layer complete: its whole-layer check passed on an earlier run and every chunk is in the disk cache');
      return;
    }
    for (;;) {
      this.runs++;
      try {
        await this.waitIdle();
        this.setState('fetching');
        await this.runOnce();
        await this.deps.remember?.();
        this.setState('complete');
        this.deps.log.info({ layer: this.deps.layer, bytes: this.deps.fetcher.size, runs: this.runs }, 'layer complete: blob digest and diffID verified');
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const stopped = err instanceof RunStopped ? err : new RunStopped('fetch', (err as Error).message, { cause: err });
        this.deps.metrics.backgroundFetchFailures.inc({ reason: stopped.reason });
        // A registry that keeps failing is waited out, however long; a blob whose every chunk verified
        // but whose whole does not match (its gzip framing, or a lying manifest) is given a few runs.
        const whole = stopped.reason === 'blob' || stopped.reason === 'diff_id' || stopped.reason === 'inflate';
        if (whole) {
          if (stopped.reason !== 'inflate') this.deps.metrics.verificationFailures.inc({ what: stopped.reason });
          if (++this.wholeFailures >= this.opts.maxWholeFailures) {
            this.setState('failed', stopped.message);
            this.deps.log.error({ layer: this.deps.layer, runs: this.runs, reason: stopped.reason, err: stopped.message }, 'layer failed its whole-layer check on every run; reads still fetch and verify chunks on demand');
            return;
          }
        }
        if (this.runs >= this.opts.maxRuns) {
          this.setState('incomplete', stopped.message);
          this.deps.log.warn({ layer: this.deps.layer, runs: this.runs, reason: stopped.reason, err: stopped.message }, 'background fetch stopped for good after its last run; reads still fetch on demand');
          return;
        }
        const waitMs = Math.min(this.opts.maxRunRetryWaitMs, this.opts.runRetryWaitMs * 2 ** (this.runs - 1));
        this.setState('incomplete', stopped.message);
        this.deps.log.warn({ layer: this.deps.layer, run: this.runs, reason: stopped.reason, retryInMs: waitMs, err: stopped.message }, 'background fetch stopped; reads still fetch on demand; trying again later');
        try {
          await sleep(waitMs, undefined, { signal: this.abort.signal });
        } catch {
          return; // closed
        }
      }
    }
  }

  /** Whether every chunk is cached (a zstd:chunked zeros chunk needs no bytes). */
  private allCached(): boolean {
    return this.deps.chunks().every((w) => w.chunk.codec === 'zeros' || this.deps.loader.isCached(w.chunk.digest));
  }

  private async waitIdle(): Promise<void> {
    for (;;) {
      this.abort.signal.throwIfAborted();
      const idleFor = Date.now() - Math.max(this.startedAt, this.deps.lastForeground());
      if (idleFor >= this.opts.idleMs) return;
      await sleep(this.opts.idleMs - idleFor, undefined, { signal: this.abort.signal });
    }
  }

  /** The whole blob in ranges of about `spanBytes`, cut only where a member starts. */
  private spans(): Range[] {
    const size = this.deps.fetcher.size;
    const cuts = [...new Set(this.deps.chunks().map((w) => w.chunk.blobOffset)), size].sort((a, b) => a - b);
    const spans: Range[] = [];
    let i = 0;
    for (let offset = 0; offset < size;) {
      while (cuts[i]! <= offset) i++;
      const target = offset + this.opts.spanBytes;
      let j = i;
      while (j + 1 < cuts.length && cuts[j + 1]! <= target) j++;
      // The last cut within the target, or the next cut when one member is larger than a span.
      const end = cuts[j]! <= target ? cuts[j]! : cuts[i]!;
      spans.push({ offset, end });
      offset = end;
    }
    return spans;
  }

  /**
   * One range; `exclusive`: the buffer is this fetch's alone (see
   * BlobFetcher.readOwned), so it can be handed on without a copy. The first
   * try takes what readers already fetched (`held`) and fetches only the
   * gaps; a retry fetches the whole range (the held bytes may be what failed).
   */
  private async fetchSpan(s: Range, useHeld = true): Promise<Fetched> {
    // Behind a host scheduler each request yields to readers' requests, so the run need not pause while readers are busy.
    if (!this.deps.parallelism) await this.waitIdle();
    const started = performance.now();
    const taken = useHeld && this.deps.held ? await this.deps.held.take(s.offset, s.end) : undefined;
    const ranges = (taken ? taken.gaps : [s]).map((r) => ({ offset: r.offset, length: r.end - r.offset }));
    const opts = { signal: this.abort.signal, operation: 'background' as const };
    // The registry client counts the requests (its traffic hook) as 'background' ones.
    const got = ranges.length === 0 ? [] : this.deps.fetcher.readOwned
      ? await this.deps.fetcher.readOwned(ranges, opts)
      : (await this.deps.fetcher.readRanges(ranges, opts.signal, opts.operation)).map((data) => ({ data, exclusive: false }));
    for (const r of ranges) this.deps.onFetched(r.offset, r.offset + r.length, 'background');
    if (this.opts.bytesPerSec > 0) {
      const fetchedBytes = ranges.reduce((n, r) => n + r.length, 0);
      const budgetMs = (fetchedBytes / this.opts.bytesPerSec) * 1000;
      const spent = performance.now() - started;
      if (budgetMs > spent) await sleep(budgetMs - spent, undefined, { signal: this.abort.signal });
    }
    if (!taken?.pieces.length) return got[0]!;
    // Held pieces and fetched gaps, put together in blob order, a slice at a time (a long memcpy stalls FUSE replies).
    const out = Buffer.allocUnsafeSlow(s.end - s.offset);
    const parts = [...taken.pieces, ...got.map((g, i) => ({ offset: ranges[i]!.offset, data: g.data }))];
    let copied = 0;
    for (const p of parts) {
      for (let at = 0; at < p.data.length; at += COPY_SLICE_BYTES) {
        if (copied >= COPY_SLICE_BYTES) {
          await nextTurn();
          copied = 0;
        }
        const n = Math.min(COPY_SLICE_BYTES, p.data.length - at);
        p.data.copy(out, p.offset - s.offset + at, at, at + n);
        copied += n;
      }
    }
    return { data: out, exclusive: true };
  }

  /**
   * One range, verified: its chunks go through the loader (decoded and
   * checked against their digests); a range whose fetch fails or whose chunks
   * fail is fetched again, with back-off, up to `spanAttempts` times.
   */
  private async verifiedSpan(s: Range, first: Promise<Fetched>, inSpan: readonly ChunkWant[]): Promise<Fetched> {
    let pending = first;
    for (let attempt = 1; ; attempt++) {
      let reason: 'fetch' | 'verify';
      let message: string;
      let cause: unknown;
      try {
        const got = await pending;
        const failed = await this.deps.loader.ingest(s.offset, got.data, inSpan, 'background');
        if (failed === 0) return got;
        reason = 'verify';
        message = `${failed} chunk(s) in blob range [${s.offset}, ${s.end}) failed verification`;
      } catch (err) {
        if (this.abort.signal.aborted) throw err;
        reason = 'fetch';
        message = `fetching blob range [${s.offset}, ${s.end}): ${(err as Error).message}`;
        cause = err;
      }
      if (attempt >= this.opts.spanAttempts) {
        throw new RunStopped(reason, `layer ${this.deps.layer}: ${message} (${attempt} attempts)`, { cause });
      }
      const waitMs = this.opts.spanRetryWaitMs * 2 ** (attempt - 1);
      this.deps.log.warn({ layer: this.deps.layer, offset: s.offset, end: s.end, attempt, waitMs, reason, err: message }, 'background range failed; fetching it again');
      await sleep(waitMs, undefined, { signal: this.abort.signal });
      pending = this.fetchSpan(s, false);
    }
  }

  private async runOnce(): Promise<void> {
    const spans = this.spans();
    const chunks = this.deps.chunks();
    // Blob sha256, gunzip (or the zstd:chunked tar rebuild) and diff_id sha256 run in a worker: on the main thread they stalled FUSE replies.
    const hash = new LayerDigest(this.deps.rebuild?.());
    // A run after a stopped one starts from the blob's start again: readers' bytes from there on are wanted again.
    this.deps.held?.rewind();
    try {
      const window: Promise<Fetched>[] = [];
      let next = 0;
      const fill = (): void => {
        const size = Math.max(1, this.opts.concurrency, Math.min(MAX_WINDOW, this.deps.parallelism?.() ?? 0));
        while (window.length < size && next < spans.length) {
          const p = this.fetchSpan(spans[next++]!);
          p.catch(() => {}); // awaited in order below; a failure there is retried, not lost
          window.push(p);
        }
      };
      fill();
      let c = 0;
      for (const s of spans) {
        const first = window.shift()!;
        fill();
        const inSpan: ChunkWant[] = [];
        while (c < chunks.length && chunks[c]!.chunk.blobOffset < s.end) {
          if (chunks[c]!.chunk.blobEnd <= s.end) inSpan.push(chunks[c]!);
          c++;
        }
        const got = await this.verifiedSpan(s, first, inSpan);
        // ingest() is done with the bytes: one that is this fetch's alone goes to the digest worker without a copy.
        await hash.push(got.data, got.exclusive);
        this.deps.held?.release(s.end);
      }
      const digests = await hash.finish();
      this.checkWhole(digests.blob, digests.diff);
    } finally {
      await hash.close();
    }
  }

  private checkWhole(blob: string, diff: string | Error): void {
    const { layer, blobDigest, diffID } = this.deps;
    if (blob !== blobDigest) {
      throw new RunStopped('blob', `layer ${layer}: the blob hashes to ${blob}, the manifest says ${blobDigest}`);
    }
    if (diff instanceof Error) {
      throw new RunStopped('inflate', `layer ${layer}: the blob matches its digest but its tar cannot be had: ${diff.message}`);
    }
    if (diffID && diff !== diffID) {
      throw new RunStopped('diff_id', `layer ${layer}: the uncompressed layer hashes to ${diff}, the image config says ${diffID}`);
    }
  }
}
