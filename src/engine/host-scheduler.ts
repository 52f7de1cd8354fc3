import type { FetchOperation } from '../metrics/store-metrics.js';
import type { BlobFetcher } from './chunk-loader.js';

/** Who waits for a request: a reader, a prefetch, or nobody yet (background fetch). */
export type Lane = 'foreground' | 'prefetch' | 'background';

export interface HostSchedulerOptions {
  /** Blob requests in flight to the host at most, all layers and lanes together (the transport keeps 16 connections per origin). */
  maxRequests: number;
  /** Slots background work never takes: a reader's request always finds one free and waits behind no background range. */
  reservedForeground: number;
}

export const DEFAULT_HOST_SCHEDULER: HostSchedulerOptions = { maxRequests: 16, reservedForeground: 2 };

interface Waiter {
  lane: Lane;
  admit: () => void;
}

/** A finished request: its size and how long it took. */
interface Sample {
  bytes: number;
  ms: number;
}

/** Samples kept for the link estimate. */
const SAMPLES = 32;
/** Requests at least this large say something of bandwidth; the smallest durations say something of the round trip. */
const BANDWIDTH_SAMPLE_BYTES = 256 << 10;
/** A reader's fetch is cut into pieces that take about this long to arrive… */
const PIECE_MS = 100;
/** …and are never smaller than this (each piece costs a request). */
const MIN_PIECE_BYTES = 512 << 10;
/** The throughput meter forgets half of what it saw every this much busy time… */
const METER_SPAN_MS = 4000;
/** …and says nothing before this many bytes went by. */
const METER_MIN_BYTES = 1 << 20;

export function laneOf(op: FetchOperation | undefined): Lane {
  return op === 'background' ? 'background' : op === 'prefetch' ? 'prefetch' : 'foreground';
}

/**
 * One queue per registry host for every layer's blob requests, by priority:
 * readers first, then prefetch, then background fetch. Readers take any
 * free slot; background requests never take the last `reservedForeground`
 * slots and never start while a reader or a prefetch waits, so a read that
 * arrives during a background fetch is sent at once (one round trip, not a
 * background range, behind). Background fetch does not wait for the link
 * to be idle: it runs whenever a slot is free, with as many ranges in
 * flight as cover the link's bandwidth × round trip, both measured from
 * finished requests (the round trip from the quickest, the bandwidth from
 * the fastest large one). A reader's large fetch is cut into pieces on a
 * slow link (see `pieces`).
 */
export class HostScheduler {
  private readonly active: Record<Lane, number> = { foreground: 0, prefetch: 0, background: 0 };
  private readonly queue: Waiter[] = [];
  private readonly samples: Sample[] = [];
  private backgroundBytes = 8 << 20;
  private readonly meter = new ThroughputMeter();

  constructor(private readonly opts: HostSchedulerOptions) {}

  private get total(): number {
    return this.active.foreground + this.active.prefetch + this.active.background;
  }

  /** Requests in flight, by lane (for tests and logs). */
  inFlight(): Readonly<Record<Lane, number>> {
    return { ...this.active };
  }

  /** The link as finished requests show it: the round trip from the quickest, the bandwidth from the fastest large one; undefined until there are samples of both. */
  private link(): { rttMs: number; bytesPerMs: number } | undefined {
    if (this.samples.length < 2) return undefined;
    const rttMs = Math.min(...this.samples.map((s) => s.ms));
    const large = this.samples.filter((s) => s.bytes >= BANDWIDTH_SAMPLE_BYTES);
    if (!large.length) return undefined;
    return { rttMs, bytesPerMs: Math.max(...large.map((s) => s.bytes / Math.max(1, s.ms - rttMs))) };
  }

  /** Background ranges worth having in flight: bandwidth × round trip in ranges, plus one, within the slots background may take. */
  backgroundSlots(): number {
    const cap = Math.max(1, this.opts.maxRequests - this.opts.reservedForeground);
    const link = this.link();
    if (!link) return Math.min(2, cap);
    return Math.max(1, Math.min(cap, Math.ceil((link.bytesPerMs * link.rttMs) / this.backgroundBytes) + 1));
  }

  /**
   * How a reader's large fetch is cut (see ChunkLoader): pieces that arrive
   * within PIECE_MS each at the host's throughput (at least MIN_PIECE_BYTES),
   * fetched in blob order with `window` in flight. A range decodes only once
   * its last byte came: one 8 MiB range on a 50 Mbit/s link gives the reader
   * nothing for 1.3 s and then everything at once, where 1 MiB pieces in
   * order feed it as the bytes arrive. Three pieces in flight keep a link
   * busy whose round trip is below PIECE_MS even when two end together (the
   * link shares its bandwidth among them); a longer round trip, seen on
   * small requests, takes more. Unknown throughput: no cut; a fast link cuts
   * only fetches larger than its 100 ms.
   *
   * The throughput is bytes over the time any request was in flight, not a
   * request's own rate: requests in flight together share the link, so one
   * request's duration says little of it.
   */
  pieces(): { bytes: number; window: number } {
    const bytesPerMs = this.meter.bytesPerMs();
    if (bytesPerMs === undefined) return { bytes: Infinity, window: 1 };
    const bytes = Math.max(MIN_PIECE_BYTES, Math.round(bytesPerMs * PIECE_MS));
    const small = this.samples.filter((s) => s.bytes < BANDWIDTH_SAMPLE_BYTES);
    const rttMs = small.length ? Math.min(...small.map((s) => s.ms)) : 0;
    return { bytes, window: Math.max(3, Math.ceil((bytesPerMs * rttMs) / bytes) + 2) };
  }

  /** Runs `fn` (one blob request of `bytes`) when its lane may; the slot is held until it settles. */
  async run<T>(lane: Lane, bytes: number, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(lane, signal);
    if (lane === 'background') this.backgroundBytes = Math.max(1, Math.round(0.8 * this.backgroundBytes + 0.2 * bytes));
    const started = performance.now();
    this.meter.busy(started);
    let ok = false;
    try {
      const out = await fn();
      ok = true;
      this.samples.push({ bytes, ms: performance.now() - started });
      if (this.samples.length > SAMPLES) this.samples.shift();
      return out;
    } finally {
      this.active[lane]--;
      this.meter.finished(performance.now(), ok ? bytes : 0, this.total === 0);
      this.dispatch();
    }
  }

  private acquire(lane: Lane, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (!this.queue.length && this.admits(lane)) {
      this.active[lane]++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        lane,
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(w);
      this.dispatch();
    });
  }

  private admits(lane: Lane): boolean {
    if (lane === 'foreground') return this.total < this.opts.maxRequests;
    // A lane never starts while a higher one waits.
    const higher: readonly Lane[] = lane === 'prefetch' ? ['foreground'] : ['foreground', 'prefetch'];
    const higherWaits = this.queue.some((w) => higher.includes(w.lane));
    if (lane === 'prefetch') return !higherWaits && this.total < this.opts.maxRequests;
    return !higherWaits
      && this.total < this.opts.maxRequests - this.opts.reservedForeground
      && this.active.background < this.backgroundSlots();
  }

  /** Admits waiters, highest lane first, each lane in arrival order. */
  private dispatch(): void {
    for (const lane of ['foreground', 'prefetch', 'background'] as const) {
      for (let i = 0; i < this.queue.length;) {
        const w = this.queue[i]!;
        if (w.lane !== lane) {
          i++;
          continue;
        }
        // Taken off the queue first: admits() looks at who else waits.
        this.queue.splice(i, 1);
        if (this.admits(lane)) {
          this.active[lane]++;
          w.admit();
        } else {
          this.queue.splice(i, 0, w);
          break;
        }
      }
    }
  }
}

/**
 * Bytes a host delivered over the time it had requests in flight, the
 * older half forgotten every METER_SPAN_MS of busy time. An estimate only
 * once METER_MIN_BYTES went by: a few small answers are mostly round trips.
 */
class ThroughputMeter {
  private bytes = 0;
  private ms = 0;
  /** Since when the host has had requests in flight, not yet counted; undefined while idle. */
  private busySince: number | undefined;

  busy(now: number): void {
    this.busySince ??= now;
  }

  finished(now: number, bytes: number, idle: boolean): void {
    this.bytes += bytes;
    if (this.busySince !== undefined) {
      this.ms += now - this.busySince;
      this.busySince = idle ? undefined : now;
    }
    if (this.ms > METER_SPAN_MS) {
      this.bytes /= 2;
      this.ms /= 2;
    }
  }

  bytesPerMs(): number | undefined {
    return this.bytes >= METER_MIN_BYTES && this.ms > 0 ? this.bytes / this.ms : undefined;
  }
}

/** A blob's requests through its host's scheduler, each in the lane of its operation. */
export function scheduledFetcher(inner: BlobFetcher, scheduler: HostScheduler): BlobFetcher {
  const bytes = (ranges: readonly { length: number }[]): number => ranges.reduce((n, r) => n + r.length, 0);
  return {
    get size() {
      return inner.size;
    },
    readRanges: (ranges, signal, operation) => scheduler.run(laneOf(operation), bytes(ranges), () => inner.readRanges(ranges, signal, operation), signal),
    ...(inner.readOwned && {
      readOwned: (ranges, opts) => scheduler.run(laneOf(opts.operation), bytes(ranges), () => inner.readOwned!(ranges, opts), opts.signal),
    }),
  };
}
